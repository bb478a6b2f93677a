r"""Per-layer choice of the FantastIC4 weight layout from its cost on the target: bytes (exact,
``format.layout_sizes`` plus the bias section) and Cortex-M instructions per inference (a linear
model of operation counts, fitted to instruction counts measured on the Arm ISA).

Features of one layer, from its codes and its inputs (the export's golden / calibration inputs
run through the integer network; means per inference):

=================  ===============================================================================
``one``            1 (the kernel's fixed cost)
``inputs``         ``in_features`` (the column loops visit every input)
``outputs``        ``out_features`` (bias copy / partial sums and requantization per output)
``active``         inputs different from the input zero point
``col_adds``       non-zero weights in active columns (one addition each, CSC and CSCI)
``col_groups``     (active column, value present in it) pairs (one multiply each, CSC)
``col_chunks``     chunks of at most 15 rows in active columns (one multiply each, CSCI)
``nonzeros``       non-zero weights (one addition each in the row layouts)
``row_groups``     (row, value present in it) pairs (CER)
``code_bytes``     nibble-pair bytes with a non-zero code (DENSE4 handles them one by one)
``weights``        ``in_features * out_features`` (DENSE4 and BITMAP scan every position)
=================  ===============================================================================

The instructions of layout L are :math:`\sum_f c_{L,f} \cdot \mathrm{feature}_f` with the
coefficients :data:`COEFFICIENTS`, fitted by least squares to the instructions of single-layer
blobs counted exactly on Cortex-M4 (``arm-none-eabi-gcc -O2``, unicorn block counts; the
measurement and the fit are ``bench/cortex_m.py --fit``; docs/fantastic4.md has the table).

Objectives (:func:`choose_layouts`), per layer, among the layouts whose bias section passes the
overflow check (ties: lower layout id):

* ``size``: the fewest bytes (the former ``smallest``);
* ``speed``: the fewest estimated instructions;
* ``balanced`` (default): the least ``instructions / I + bytes / B``, where ``I`` and ``B`` are the
  network's instructions and bytes when every layer takes its fastest layout: one percent of the
  network's instructions is worth one percent of its bytes.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from firmware_export.fantastic4 import format as f4format
from firmware_export.fantastic4.network import IntegerDense, IntegerMLP, reference_dense

__all__ = [
    "OBJECTIVES",
    "FEATURES",
    "COEFFICIENTS",
    "COST_TARGET",
    "model_name",
    "layer_features",
    "network_features",
    "predict",
    "fit_coefficients",
    "layer_costs",
    "choose_layouts",
]

OBJECTIVES = ("balanced", "speed", "size")

_CSC = ("one", "inputs", "outputs", "active", "col_adds", "col_groups")
_CSCI = ("one", "inputs", "outputs", "active", "col_adds", "col_chunks")
#: the features each model uses (the table in the module docstring). One model per kernel: the
#: layout, and for the column layouts the code path the runtime takes: ``csc`` (out_features <= 256,
#: one-byte gaps) / ``csc_wide``; ``csci`` (1-byte rows and column lengths: the Thumb-2 assembly
#: loop), ``csci_c8`` (1-byte rows, longer columns: the C loop), ``csci_c16`` (2-byte rows)
FEATURES: Dict[str, Tuple[str, ...]] = {
    "dense4": ("one", "outputs", "weights", "code_bytes", "nonzeros"),
    "bitmap": ("one", "outputs", "weights", "nonzeros"),
    "cer": ("one", "outputs", "nonzeros", "row_groups"),
    "csc": _CSC,
    "csc_wide": _CSC,
    "csci": _CSCI,
    "csci_c8": _CSCI,
    "csci_c16": _CSCI,
}


def model_name(layer: IntegerDense, layout: str) -> str:
    """The cost model (kernel code path) of ``layout`` for ``layer``."""
    if layout == "csc":
        return "csc" if layer.out_features <= 256 else "csc_wide"
    if layout != "csci":
        return layout
    if f4format.csci_row_bytes(layer.out_features) == 2:
        return "csci_c16"
    _, body = f4format.csci_column_stats(layer.codes())
    return "csci" if int(body.max(initial=0)) <= 0xFF else "csci_c8"

#: what the coefficients were fitted on
COST_TARGET = "Cortex-M4, arm-none-eabi-gcc 12.2 -O2, instructions counted in unicorn (bench/cortex_m.py --fit)"

#: instructions per unit of each feature (bench/cortex_m.py --fit; see docs/fantastic4.md)
COEFFICIENTS: Dict[str, Dict[str, float]] = {
    "dense4": {"one": 507.261, "outputs": 114.133, "weights": 7.517, "code_bytes": 7.729, "nonzeros": 0.124},
    "bitmap": {"one": 832.229, "outputs": 106.254, "weights": 2.383, "nonzeros": 18.395},
    "cer": {"one": 150.048, "outputs": 32.734, "nonzeros": 11.019, "row_groups": 22.024},
    "csc": {"one": 115.911, "inputs": 9.597, "outputs": 22.24, "active": 3.342, "col_adds": 8.004, "col_groups": 22.93},
    "csc_wide": {"one": 2679.3, "inputs": 5.873, "outputs": 16.869, "active": -16.728, "col_adds": 11.975, "col_groups": 22.186},
    "csci": {"one": 253.618, "inputs": 8.004, "outputs": 21.238, "active": 0.995, "col_adds": 4, "col_chunks": 6},
    "csci_c8": {"one": 0.085, "inputs": 16.951, "outputs": 21.872, "active": 13.965, "col_adds": 4.021, "col_chunks": 12.766},
    "csci_c16": {"one": 3878.33, "inputs": 12.871, "outputs": 14.368, "active": 11.998, "col_adds": 5.998, "col_chunks": 17.029},
}


def layer_features(layer: IntegerDense, x: np.ndarray) -> Dict[str, float]:
    """The features of ``layer`` for int8 inputs ``x`` ``[batch, in]`` (means per inference)."""
    codes = layer.codes()
    x = np.asarray(x).reshape(len(x), -1)
    active = (x != layer.input_zero_point).astype(np.float64)
    nz_col = np.count_nonzero(codes, axis=0)
    groups_col = np.zeros(codes.shape[1])
    chunks_col = np.zeros(codes.shape[1])
    row_groups = 0
    for k in range(1, len(layer.codebook())):
        hit = codes == k
        per_col = hit.sum(axis=0)
        groups_col += per_col > 0
        chunks_col += -(-per_col // f4format.CSCI_CHUNK)
        row_groups += int(np.count_nonzero(hit.any(axis=1)))
    flat = codes.reshape(-1)
    if len(flat) % 2:
        flat = np.concatenate([flat, [0]])
    n = max(1, len(x))
    return {
        "one": 1.0,
        "inputs": float(layer.in_features),
        "outputs": float(layer.out_features),
        "active": float(active.sum()) / n,
        "col_adds": float((active @ nz_col).sum()) / n,
        "col_groups": float((active @ groups_col).sum()) / n,
        "col_chunks": float((active @ chunks_col).sum()) / n,
        "nonzeros": float(np.count_nonzero(codes)),
        "row_groups": float(row_groups),
        "code_bytes": float(np.count_nonzero(flat[0::2] | flat[1::2])),
        "weights": float(codes.size),
    }


def network_features(net: IntegerMLP, x: np.ndarray) -> List[Dict[str, float]]:
    """:func:`layer_features` of every layer, each on the integer outputs of the layers before
    (the slow reference forward pass from the network's int8 inputs ``x``)."""
    feats = []
    h = np.asarray(x, np.int8).reshape(len(x), -1)
    for layer in net.layers:
        feats.append(layer_features(layer, h))
        h = reference_dense(layer, h)
    return feats


def predict(features: Mapping[str, float], model: str,
            coefficients: Mapping[str, Mapping[str, float]] = COEFFICIENTS) -> float:
    """Estimated instructions per inference of one layer with cost model ``model``
    (:func:`model_name`)."""
    return float(sum(c * features[f] for f, c in coefficients[model].items()))


def fit_coefficients(samples: Sequence[Tuple[str, Mapping[str, float], float]]) -> Dict[str, Dict[str, float]]:
    """Least-squares coefficients per model from (model, features, measured instructions)."""
    out: Dict[str, Dict[str, float]] = {}
    for layout, names in FEATURES.items():
        rows = [(f, y) for l, f, y in samples if l == layout]
        if len(rows) < len(names):
            raise ValueError(f"fit_coefficients: {len(rows)} samples for model {layout!r}, need >= {len(names)}")
        a = np.array([[f[n] for n in names] for f, _ in rows], np.float64)
        b = np.array([y for _, y in rows], np.float64)
        coef, *_ = np.linalg.lstsq(a, b, rcond=None)
        out[layout] = {n: float(round(c, 3)) for n, c in zip(names, coef)}
    return out


@dataclasses.dataclass
class LayoutCost:
    layout: str
    bytes: int  # weights section + bias section
    instructions: float  # estimated per inference
    fits: bool  # the bias section passes the overflow check


def layer_costs(layer: IntegerDense, features: Mapping[str, float]) -> List[LayoutCost]:
    """Every layout's bytes (exact) and estimated instructions for one layer."""
    sizes = f4format.layout_sizes(layer.codes())
    return [LayoutCost(name, int(sizes[name]) + 4 * layer.out_features, predict(features, model_name(layer, name)),
                       f4format.bias_fits(layer, name)) for name in f4format.LAYOUT_IDS]


def choose_layouts(net: IntegerMLP, x: np.ndarray, objective: str = "balanced") -> Tuple[List[str], List[Dict[str, object]]]:
    """Per layer, the layout ``objective`` prefers (module docstring). Returns (layout names,
    per-layer table: every layout's bytes and estimated instructions and the choice).

    Raises:
        ValueError: an unknown objective.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    costs = [layer_costs(layer, f) for layer, f in zip(net.layers, network_features(net, x))]
    candidates = [[c for c in cl if c.fits] or cl for cl in costs]
    fastest = [min(cl, key=lambda c: (c.instructions, f4format.LAYOUT_IDS[c.layout])) for cl in candidates]
    i_ref = max(1.0, sum(c.instructions for c in fastest))
    b_ref = max(1, sum(c.bytes for c in fastest))
    key = {
        "size": lambda c: (c.bytes, f4format.LAYOUT_IDS[c.layout]),
        "speed": lambda c: (c.instructions, f4format.LAYOUT_IDS[c.layout]),
        "balanced": lambda c: (c.instructions / i_ref + c.bytes / b_ref, f4format.LAYOUT_IDS[c.layout]),
    }[objective]
    names, table = [], []
    for layer, cl, cand in zip(net.layers, costs, candidates):
        best = min(cand, key=key)
        names.append(best.layout)
        table.append({"layer": layer.name, "chosen": best.layout,
                      "bytes": {c.layout: c.bytes for c in cl},
                      "instructions_estimate": {c.layout: round(c.instructions, 1) for c in cl}})
    return names, table
