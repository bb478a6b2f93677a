r"""Bit-exact Python simulator of the FantastIC4 C runtime (``runtime/f4_runtime.c``), with
operation counts and a 45 nm energy estimate.

Function names mirror the C runtime (``prepare`` / ``f4_prepare``, ``dense_layer_cer`` /
``f4_dense_layer_cer``, ``run`` / ``f4_run``, ...). The row-major layouts (dense4, bitmap, cer)
compute per output row ``r`` of a layer (FORMAT.md section 5), with int8 activations ``x`` and
int32 accumulators:

.. math::

    S_k = \sum_{j:\,\mathrm{code}_{rj}=k} x_j \quad (k = 1..K-1), \qquad
    \mathrm{acc}_r = \tilde b_r + \sum_{k:\,S_k \neq 0} c_k S_k, \qquad
    y_r = \mathrm{clamp}(\mathrm{MBQM}(\mathrm{acc}_r, q, s) + z_{out})

where :math:`\tilde b_r = b_r - z_{in}\sum_j w_{rj}` is the folded bias, so
:math:`\mathrm{acc}_r = b_r + \sum_j w_{rj}(x_j - z_{in})` exactly as TFLM's ``FULLY_CONNECTED``:
activations sharing a codebook value are summed first (one addition per non-zero weight) and each
partial sum is multiplied by its value once (at most 15 multiplications per row, fewer when a
value is absent from the row or its partial sum is 0). These three layouts run the same datapath;
they differ in the bytes read to find the non-zeros.

The column-major layout (csc) is driven by the activations instead: with :math:`d_j = x_j - z_{in}`,

.. math::

    \mathrm{acc}_r = b_r + \sum_{j:\,d_j \neq 0}\ \sum_{k:\,k \in \mathrm{col}_j} (c_k d_j)\,
    [\mathrm{code}_{rj} = k]

(the TFLite bias :math:`b_r`, one multiplication per active column and present value, one addition
per non-zero weight of an active column; columns with :math:`d_j = 0` cost nothing but a skip).

Energy figures (45 nm, 0.9 V; M. Horowitz, "Computing's energy problem (and what we can do about
it)", ISSCC 2014, the per-operation table): integer add 8 bit 0.03 pJ, 32 bit 0.1 pJ; integer
multiply 8 bit 0.2 pJ, 32 bit 3.1 pJ; 64-bit read from an 8 KB SRAM 10 pJ (1.25 pJ per byte).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Tuple, Union

import numpy as np

from firmware_export import intmath
from firmware_export.fantastic4.format import LAYOUTS, F4Blob, F4Layer, csc_column_bytes, csci_column_stats, read_blob
from firmware_export.fantastic4.network import IntegerMLP

__all__ = [
    "ENERGY_PJ",
    "OpCounts",
    "prepare",
    "required_scratch",
    "accumulate_partial_sums",
    "accumulate_partial_sums_reference",
    "combine_partial_sums",
    "requantize",
    "dense_layer_dense4",
    "dense_layer_bitmap",
    "dense_layer_cer",
    "init_accumulators",
    "accumulate_columns",
    "dense_layer_csc",
    "dense_layer_csci",
    "DENSE_LAYER",
    "run",
    "run_with_counts",
    "dense_int8_counts",
    "dense_int8_energy_pj",
]

#: pJ per operation / per byte, Horowitz ISSCC 2014 (45 nm). See the module docstring.
ENERGY_PJ: Dict[str, float] = {
    "add8": 0.03,
    "add32": 0.1,
    "mul8": 0.2,
    "mul32": 3.1,
    "sram_byte": 10.0 / 8,  # 64-bit read from an 8 KB SRAM: 10 pJ
}


@dataclasses.dataclass
class OpCounts:
    """Operations and memory traffic of one inference (averaged over the batch).

    Row layouts (dense4, bitmap, cer): ``accumulate_adds``: additions into partial sums (one per
    non-zero weight); ``multiplies``: partial sum x codebook value; ``product_adds``: adding those
    products to the accumulator; bytes read: the whole weights section, folded biases, codebook,
    activations (one int8 per non-zero weight).

    CSC: ``accumulate_adds``: ``acc[r] += c_k * d_j``, one per non-zero weight of an active column
    (``d_j != 0``); ``multiplies``: ``c_k * d_j``, one per (active column, value present in it);
    ``product_adds`` 0; bytes read: the ``column_size`` field of every column plus the groups of
    the active columns, the TFLite biases, codebook, every input once; ``accumulator_bytes``: the
    int32 ``acc`` array in the scratch (written from the bias, read+written per addition, read
    for requantization; 0 for the row layouts, whose 16 partial sums stay in registers/stack).

    All: ``requantizations``: one per output (a 32x32-bit high multiply + rounding shift); bytes
    written: output activations.
    """

    accumulate_adds: float = 0.0
    multiplies: float = 0.0
    product_adds: float = 0.0
    requantizations: float = 0.0
    weight_bytes: float = 0.0
    bias_bytes: float = 0.0
    codebook_bytes: float = 0.0
    activation_bytes_read: float = 0.0
    activation_bytes_written: float = 0.0
    accumulator_bytes: float = 0.0

    def __add__(self, other: "OpCounts") -> "OpCounts":
        return OpCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    @property
    def bytes_read(self) -> float:
        return self.weight_bytes + self.bias_bytes + self.codebook_bytes + self.activation_bytes_read

    def energy_pj(self) -> Dict[str, float]:
        """Energy estimate (pJ): int32 adds and int32 multiplies (upper bound: the codebook value
        is 8 bit), requantization = one 32-bit multiply + three 32-bit adds, every byte read or
        written (including ``accumulator_bytes``) at the 8 KB SRAM cost."""
        e = ENERGY_PJ
        arith = (
            (self.accumulate_adds + self.product_adds) * e["add32"]
            + self.multiplies * e["mul32"]
            + self.requantizations * (e["mul32"] + 3 * e["add32"])
        )
        memory = (self.bytes_read + self.activation_bytes_written + self.accumulator_bytes) * e["sram_byte"]
        return {"arithmetic": arith, "memory": memory, "total": arith + memory}

    def as_dict(self) -> Dict[str, float]:
        d = dataclasses.asdict(self)
        d["energy_pj"] = self.energy_pj()
        return d


# ---------------------------------------------------------------------------------------------
# the datapath (mirrors runtime/f4_runtime.c)


def prepare(blob: Union[bytes, F4Blob]) -> F4Blob:
    """``f4_prepare``: validate the blob (raises ``FormatError``)."""
    return blob if isinstance(blob, F4Blob) else read_blob(blob)


def required_scratch(blob: Union[bytes, F4Blob]) -> int:
    """``f4_required_scratch``: bytes for the two ping-pong halves of intermediate activations,
    plus the 4-aligned int32 accumulators of the widest CSC layer (FORMAT.md section 8)."""
    return prepare(blob).required_scratch()


def accumulate_partial_sums_reference(layer: F4Layer, x: np.ndarray) -> np.ndarray:
    """The specification of :func:`accumulate_partial_sums`, in int64 (slow: NumPy has no BLAS
    for integers)."""
    x = np.asarray(x, np.int64)
    s = np.zeros((x.shape[0], layer.n_values, layer.out_features), np.int64)
    for k in range(1, layer.n_values):
        s[:, k, :] = x @ (layer.codes == k).T.astype(np.int64)
    return s


def accumulate_partial_sums(layer: F4Layer, x: np.ndarray) -> np.ndarray:
    """``S[b, k, r]`` = sum of ``x[b, j]`` over the columns j of row r with code k (k = 0 is left
    0: zero weights are skipped). int64 holding int32 values. In C this is the inner loop of each
    ``f4_dense_layer_*`` (the layouts differ only in how they find the non-zeros).

    Computed with float32 BLAS products, exactly: every partial sum of the products is an integer
    of magnitude at most ``128 * in_features <= 128 * 65535 < 2^24``, which float32 represents
    exactly, so the order of the additions does not matter (equal to
    :func:`accumulate_partial_sums_reference`, tested)."""
    xf = np.asarray(x, np.float32)
    s = np.zeros((xf.shape[0], layer.n_values, layer.out_features), np.int64)
    codes_t = np.ascontiguousarray(layer.codes.T)
    for k in range(1, layer.n_values):
        s[:, k, :] = (xf @ (codes_t == k).astype(np.float32)).astype(np.int64)
    return s


def combine_partial_sums(layer: F4Layer, s: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``f4_combine_partial_sums``: ``acc = folded_bias + sum_{k: S_k != 0} codebook[k] * S_k``.

    Returns (acc int64 ``[batch, out]`` holding int32 values, multiplies per row ``[batch, out]``).
    """
    cb = layer.codebook[: layer.n_values].astype(np.int64)
    acc = layer.folded_bias()[None, :] + np.einsum("bkr,k->br", s, cb)
    assert np.all(np.abs(acc) <= intmath.INT32_MAX), "int32 accumulator overflow (ruled out by F4_ERR_BIAS)"
    mults = np.count_nonzero(s[:, 1:, :], axis=1)
    return acc, mults


def requantize(layer: F4Layer, acc: np.ndarray) -> np.ndarray:
    """``f4_requantize``: ``clamp(MultiplyByQuantizedMultiplier(acc) + output_zero_point)``."""
    y = intmath.multiply_by_quantized_multiplier(acc, layer.output_multiplier, layer.output_shift)
    return np.clip(y + layer.output_zero_point, layer.activation_min, layer.activation_max).astype(np.int8)


def _dense_layer(layer: F4Layer, x: np.ndarray) -> Tuple[np.ndarray, OpCounts, np.ndarray]:
    if x.ndim != 2 or x.shape[1] != layer.in_features:
        raise ValueError(f"input must be int8 [batch, {layer.in_features}], got shape {x.shape}")
    s = accumulate_partial_sums(layer, x)
    acc, mults = combine_partial_sums(layer, s)
    y = requantize(layer, acc)
    m = float(mults.sum()) / max(1, x.shape[0])
    counts = OpCounts(
        accumulate_adds=float(layer.nnz),
        multiplies=m,
        product_adds=m,
        requantizations=float(layer.out_features),
        weight_bytes=float(layer.weights_size),
        bias_bytes=float(layer.bias_size),
        codebook_bytes=float(layer.n_values),
        activation_bytes_read=float(layer.nnz),
        activation_bytes_written=float(layer.out_features),
    )
    return y, counts, mults


def dense_layer_dense4(layer: F4Layer, x: np.ndarray) -> Tuple[np.ndarray, OpCounts, np.ndarray]:
    """``f4_dense_layer_dense4``: walks every code nibble, skips code 0."""
    return _dense_layer(layer, x)


def dense_layer_bitmap(layer: F4Layer, x: np.ndarray) -> Tuple[np.ndarray, OpCounts, np.ndarray]:
    """``f4_dense_layer_bitmap``: walks the mask bits, one code nibble per set bit."""
    return _dense_layer(layer, x)


def dense_layer_cer(layer: F4Layer, x: np.ndarray) -> Tuple[np.ndarray, OpCounts, np.ndarray]:
    """``f4_dense_layer_cer``: per row, per present value, the listed columns."""
    return _dense_layer(layer, x)


def init_accumulators(layer: F4Layer, batch: int) -> np.ndarray:
    """``f4_init_accumulators``: ``acc[r]`` = the bias section (the TFLite bias for CSC), int64
    ``[batch, out]`` holding int32 values."""
    return np.repeat(layer.bias_section.astype(np.int64)[None, :], batch, axis=0)


def accumulate_columns(layer: F4Layer, x: np.ndarray, acc: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``f4_accumulate_columns``: for every column j with ``d = x[j] - input_zero_point != 0``, for
    every value k present in the column, ``v = codebook[k] * d`` and ``acc[r] += v`` for the rows
    listed. Returns (acc, additions per sample ``[batch]``, multiplies per column ``[batch, in]``).

    Every partial value of ``acc`` is ``bias + sum over a subset of columns of w * d`` with
    ``|w * d| <= acc_per_input``, so none leaves int32 (``F4_ERR_BIAS``); the final value is checked
    here as in the other layouts.
    """
    d = np.asarray(x, np.int64) - layer.input_zero_point
    active = d != 0
    # float64 BLAS, exactly: |d * w| <= 255 * 128 and in_features <= 65535, so every partial sum is
    # an integer below 2^31 < 2^53
    acc = acc + (d.astype(np.float64) @ layer.weights().astype(np.float64).T).astype(np.int64)
    assert np.all(np.abs(acc) <= intmath.INT32_MAX), "int32 accumulator overflow (ruled out by F4_ERR_BIAS)"
    nnz_col = np.count_nonzero(layer.codes, axis=0)
    values_col = np.zeros(layer.in_features, np.int64)
    for k in range(1, layer.n_values):
        values_col += np.any(layer.codes == k, axis=0)
    return acc, active @ nnz_col, active * values_col[None, :]


def dense_layer_csc(layer: F4Layer, x: np.ndarray) -> Tuple[np.ndarray, OpCounts, np.ndarray]:
    """``f4_dense_layer_csc``: acc from the bias, the active columns scattered into it, then
    ``requantize`` (the third result is the multiplies per input column, ``[batch, in]``)."""
    if x.ndim != 2 or x.shape[1] != layer.in_features:
        raise ValueError(f"input must be int8 [batch, {layer.in_features}], got shape {x.shape}")
    acc, adds, mults = accumulate_columns(layer, x, init_accumulators(layer, x.shape[0]))
    y = requantize(layer, acc)
    batch = max(1, x.shape[0])
    head, body = csc_column_bytes(layer.codes)
    active = np.asarray(x, np.int64) != layer.input_zero_point
    a = float(adds.sum()) / batch
    counts = OpCounts(
        accumulate_adds=a,
        multiplies=float(mults.sum()) / batch,
        product_adds=0.0,
        requantizations=float(layer.out_features),
        weight_bytes=float(head.sum()) + float((active @ body).sum()) / batch,
        bias_bytes=float(layer.bias_size),
        codebook_bytes=float(layer.n_values),
        activation_bytes_read=float(layer.in_features),
        activation_bytes_written=float(layer.out_features),
        accumulator_bytes=8.0 * layer.out_features + 8.0 * a,
    )
    return y, counts, mults


def dense_layer_csci(layer: F4Layer, x: np.ndarray) -> Tuple[np.ndarray, OpCounts, np.ndarray]:
    """``f4_dense_layer_csci``: the CSC datapath (``init_accumulators``, ``accumulate_columns``,
    ``requantize``) on the indexed layout: an active column's chunks are found through the column
    offset table, each chunk multiplies once (a value with more than 15 rows in a column has several
    chunks) and adds to the rows it lists. The third result is the multiplies per input column."""
    if x.ndim != 2 or x.shape[1] != layer.in_features:
        raise ValueError(f"input must be int8 [batch, {layer.in_features}], got shape {x.shape}")
    acc, adds, _ = accumulate_columns(layer, x, init_accumulators(layer, x.shape[0]))
    y = requantize(layer, acc)
    batch = max(1, x.shape[0])
    chunks, body = csci_column_stats(layer.codes)
    active = np.asarray(x, np.int64) != layer.input_zero_point
    mults = active * chunks[None, :]
    # the header and every column length are read (1, 2 or 4 bytes each: the narrowest that holds
    # the longest column, FORMAT.md)
    longest = int(body.max(initial=0))
    length_bytes = 1 if longest <= 0xFF else 2 if longest <= 0xFFFF else 4
    a = float(adds.sum()) / batch
    counts = OpCounts(
        accumulate_adds=a,
        multiplies=float(mults.sum()) / batch,
        product_adds=0.0,
        requantizations=float(layer.out_features),
        weight_bytes=float(4 + length_bytes * layer.in_features) + float((active @ body).sum()) / batch,
        bias_bytes=float(layer.bias_size),
        codebook_bytes=float(layer.n_values),
        activation_bytes_read=float(layer.in_features),
        activation_bytes_written=float(layer.out_features),
        accumulator_bytes=8.0 * layer.out_features + 8.0 * a,
    )
    return y, counts, mults


#: layout id -> layer function (the C runtime's ``f4_layouts`` table).
DENSE_LAYER: Dict[int, Callable[[F4Layer, np.ndarray], Tuple[np.ndarray, OpCounts, np.ndarray]]] = {
    0: dense_layer_dense4,
    1: dense_layer_bitmap,
    2: dense_layer_cer,
    3: dense_layer_csc,
    4: dense_layer_csci,
}
assert set(DENSE_LAYER) == set(LAYOUTS)


def run_with_counts(blob: Union[bytes, F4Blob], x: np.ndarray) -> Tuple[np.ndarray, List[OpCounts], List[np.ndarray]]:
    """``f4_run`` on a batch: (int8 outputs ``[batch, out]``, per-layer counts per inference,
    per-layer multiplies per output row ``[batch, out]`` (row layouts) or per input column
    ``[batch, in]`` (csc))."""
    parsed = prepare(blob)
    y = np.asarray(x)
    if y.dtype != np.int8:
        raise TypeError(f"input must be int8, got {y.dtype}")
    y = y.reshape(len(y), -1)
    counts, mults = [], []
    for layer in parsed.layers:
        y, c, m = DENSE_LAYER[layer.layout](layer, y)
        counts.append(c)
        mults.append(m)
    return y, counts, mults


def run(blob: Union[bytes, F4Blob], x: np.ndarray) -> np.ndarray:
    """``f4_run``: int8 ``[batch, in]`` -> int8 ``[batch, out]``."""
    return run_with_counts(blob, x)[0]


def dense_int8_counts(net: IntegerMLP) -> OpCounts:
    """The same counts for TFLM's dense reference kernel on int8 weights (per inference): one
    multiply and one add per weight (the input offset add is not counted), every weight byte read
    once and the input vector re-read for every row. Multiplies are 8 x 8 bit, so they are
    reported in ``multiplies`` but costed by :func:`dense_int8_energy_pj`."""
    c = OpCounts()
    for l in net.layers:
        n = l.in_features * l.out_features
        c = c + OpCounts(
            accumulate_adds=float(n), multiplies=float(n), product_adds=0.0,
            requantizations=float(l.out_features), weight_bytes=float(n), bias_bytes=4.0 * l.out_features,
            codebook_bytes=0.0, activation_bytes_read=float(n), activation_bytes_written=float(l.out_features),
        )
    return c


def dense_int8_energy_pj(net: IntegerMLP) -> Dict[str, float]:
    """Energy of :func:`dense_int8_counts` with 8-bit multiplies (0.2 pJ) and int32 adds."""
    c = dense_int8_counts(net)
    e = ENERGY_PJ
    arith = c.accumulate_adds * e["add32"] + c.multiplies * e["mul8"] + c.requantizations * (e["mul32"] + 3 * e["add32"])
    memory = (c.bytes_read + c.activation_bytes_written) * e["sram_byte"]
    return {"arithmetic": arith, "memory": memory, "total": arith + memory}
