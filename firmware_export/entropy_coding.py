r"""Context-adaptive binary arithmetic coding of quantized weight integers (stored size).

The executable formats (TFLM INT4, FantastIC4) keep weights addressable; this module measures
what the weights cost when only *stored* (like the authors' DeepCABAC / NNCodec bitstream,
Wiedemann et al., "DeepCABAC", IEEE JSTSP 2020), and round-trips exactly.

Binarization of each integer weight :math:`k` (row-major over the ``[out, in]`` matrix, i.e.
TFLite's FULLY_CONNECTED layout; conv kernels as ``[out, H*W*in]``), as in DeepCABAC:

* ``sig``: :math:`k \ne 0`, context = number of non-zero neighbours among the left weight (same
  row) and the upper weight (same column, previous row): 3 contexts;
* ``sign``: :math:`k < 0`, context = sign of the left weight (0, +, -): 3 contexts;
* ``gt_i`` for :math:`i = 1..14`: :math:`|k| > i`, one context per i (stops at the first 0);
* remainder :math:`|k| - 15` for :math:`|k| \ge 15`: Exp-Golomb order 0 in bypass bits.

Each context holds an adaptive probability (11-bit, adaptation shift 5) driving a binary range
coder with carry propagation (the LZMA range coder's arithmetic). Contexts are reset per layer.
A layer's stream is preceded by nothing but what the model already knows (its shape), so the
byte count is the stored size of the weights.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import numpy as np

from ecqx_tf.stats import value_entropy

__all__ = ["encode_layer", "decode_layer", "encode_layers", "coded_bytes", "as_matrix", "kernel_rows", "model_coded_bytes"]

_PROB_BITS = 11
_PROB_INIT = 1 << (_PROB_BITS - 1)
_MOVE = 5
_TOP = 1 << 24
_MASK32 = (1 << 32) - 1
_GT_MAX = 14  # gt_1 .. gt_14 context-coded; |k| >= 15 -> Exp-Golomb remainder


class _Encoder:
    def __init__(self) -> None:
        self.low = 0
        self.range = _MASK32
        self.cache = 0
        self.cache_size = 1
        self.out = bytearray()

    def _shift_low(self) -> None:
        if self.low < 0xFF000000 or self.low > _MASK32:
            carry = self.low >> 32
            temp = self.cache
            while True:
                self.out.append((temp + carry) & 0xFF)
                temp = 0xFF
                self.cache_size -= 1
                if self.cache_size == 0:
                    break
            self.cache = (self.low >> 24) & 0xFF
        self.cache_size += 1
        self.low = (self.low & 0x00FFFFFF) << 8

    def bit(self, probs: List[int], ctx: int, b: int) -> None:
        p = probs[ctx]
        bound = (self.range >> _PROB_BITS) * p
        if b == 0:
            self.range = bound
            probs[ctx] = p + (((1 << _PROB_BITS) - p) >> _MOVE)
        else:
            self.low += bound
            self.range -= bound
            probs[ctx] = p - (p >> _MOVE)
        while self.range < _TOP:
            self.range = (self.range << 8) & _MASK32
            self._shift_low()

    def bypass(self, b: int) -> None:
        self.range >>= 1
        if b:
            self.low += self.range
        while self.range < _TOP:
            self.range = (self.range << 8) & _MASK32
            self._shift_low()

    def finish(self) -> bytes:
        for _ in range(5):
            self._shift_low()
        return bytes(self.out)


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 5
        if len(data) < 5:
            raise ValueError(f"coded stream too short: {len(data)} bytes (at least 5)")
        self.code = int.from_bytes(data[1:5], "big")
        self.range = _MASK32

    def _next(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def bit(self, probs: List[int], ctx: int) -> int:
        p = probs[ctx]
        bound = (self.range >> _PROB_BITS) * p
        if self.code < bound:
            self.range = bound
            probs[ctx] = p + (((1 << _PROB_BITS) - p) >> _MOVE)
            b = 0
        else:
            self.code -= bound
            self.range -= bound
            probs[ctx] = p - (p >> _MOVE)
            b = 1
        while self.range < _TOP:
            self.range = (self.range << 8) & _MASK32
            self.code = ((self.code << 8) | self._next()) & _MASK32
        return b

    def bypass(self) -> int:
        self.range >>= 1
        b = 0
        if self.code >= self.range:
            self.code -= self.range
            b = 1
        while self.range < _TOP:
            self.range = (self.range << 8) & _MASK32
            self.code = ((self.code << 8) | self._next()) & _MASK32
        return b


class _Contexts:
    def __init__(self) -> None:
        self.sig = [_PROB_INIT] * 3
        self.sign = [_PROB_INIT] * 3
        self.gt = [_PROB_INIT] * _GT_MAX


def as_matrix(ints: np.ndarray) -> np.ndarray:
    """A 2-D ``[rows, cols]`` int64 view of a layer's integers (1-D -> one row)."""
    a = np.asarray(ints)
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"a layer needs at least one weight, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"weights must be integers (grid levels), got dtype {a.dtype}")
    return a.reshape(1, -1).astype(np.int64) if a.ndim == 1 else a.reshape(a.shape[0], -1).astype(np.int64)


def _sign_ctx(left: int) -> int:
    return 0 if left == 0 else (1 if left > 0 else 2)


def _eg0_encode(enc: _Encoder, v: int) -> None:
    v += 1
    n = v.bit_length() - 1
    for _ in range(n):
        enc.bypass(1)
    enc.bypass(0)
    for i in range(n - 1, -1, -1):
        enc.bypass((v >> i) & 1)


def _eg0_decode(dec: _Decoder) -> int:
    n = 0
    while dec.bypass():
        n += 1
        if n > 40:
            raise ValueError("corrupt coded stream (Exp-Golomb prefix too long)")
    v = 1
    for _ in range(n):
        v = (v << 1) | dec.bypass()
    return v - 1


def encode_layer(ints: np.ndarray) -> bytes:
    """Code one layer's integers (``[out, in]``-shaped, or anything reshaped by :func:`as_matrix`)."""
    m = as_matrix(ints)
    rows, cols = m.shape
    enc, ctx = _Encoder(), _Contexts()
    prev_row = [0] * cols
    for r in range(rows):
        row = m[r].tolist()
        left = 0
        for c, k in enumerate(row):
            up = prev_row[c]
            sc = (left != 0) + (up != 0)
            if k == 0:
                enc.bit(ctx.sig, sc, 0)
            else:
                enc.bit(ctx.sig, sc, 1)
                enc.bit(ctx.sign, _sign_ctx(left), 1 if k < 0 else 0)
                a = -k if k < 0 else k
                i = 1
                while i <= _GT_MAX:
                    g = 1 if a > i else 0
                    enc.bit(ctx.gt, i - 1, g)
                    if not g:
                        break
                    i += 1
                if a > _GT_MAX:
                    _eg0_encode(enc, a - _GT_MAX - 1)
            left = k
        prev_row = row
    return enc.finish()


def decode_layer(data: bytes, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`encode_layer` for a layer of matrix shape ``(rows, cols)`` -> int64."""
    rows, cols = int(shape[0]), int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
    if len(shape) == 1:
        rows, cols = 1, int(shape[0])
    dec, ctx = _Decoder(data), _Contexts()
    out = np.zeros((rows, cols), dtype=np.int64)
    prev_row = [0] * cols
    for r in range(rows):
        row = [0] * cols
        left = 0
        for c in range(cols):
            sc = (left != 0) + (prev_row[c] != 0)
            k = 0
            if dec.bit(ctx.sig, sc):
                neg = dec.bit(ctx.sign, _sign_ctx(left))
                a = 1
                while a <= _GT_MAX and dec.bit(ctx.gt, a - 1):
                    a += 1
                if a > _GT_MAX:
                    a = _GT_MAX + 1 + _eg0_decode(dec)
                k = -a if neg else a
            row[c] = k
            left = k
        out[r] = row
        prev_row = row
    return out


def encode_layers(layers: Iterable[np.ndarray]) -> List[bytes]:
    return [encode_layer(l) for l in layers]


def coded_bytes(layers: Iterable[np.ndarray]) -> Tuple[int, List[int]]:
    """(total bytes, bytes per layer) of the coded integers."""
    sizes = [len(b) for b in encode_layers(layers)]
    return int(sum(sizes)), sizes


def kernel_rows(ints: np.ndarray) -> np.ndarray:
    """A Keras kernel's integers as ``[out, ...]`` rows (TFLite's filter order: output axis first)."""
    a = np.asarray(ints)
    return np.moveaxis(a, -1, 0).reshape(a.shape[-1], -1)


def model_coded_bytes(quant) -> dict:
    """Stored size of every ``QuantizedKernel`` of a model: CABAC-style coder, lzma (preset 9e of
    the int8 stream) and the zeroth-order entropy bound, in bytes, plus the per-layer coded sizes."""
    import lzma

    mats = [kernel_rows(q.integers()) for q in quant.values()]
    total, sizes = coded_bytes(mats)
    stream = np.concatenate([m.ravel() for m in mats]).astype(np.int8).tobytes()
    bound = 0.0
    for m in mats:
        bound += value_entropy(m) * m.size / 8
    return {"cabac": total, "cabac_layers": sizes, "lzma": len(lzma.compress(stream, preset=9 | lzma.PRESET_EXTREME)),
            "entropy_bound": bound}
