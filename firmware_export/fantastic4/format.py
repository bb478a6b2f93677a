"""Writer and reader of the FantastIC4 blob (byte-level spec: ``FORMAT.md`` next to this file).

Functions and fields are named after the spec. ``write_blob(net, layouts)`` packs an
:class:`~firmware_export.fantastic4.network.IntegerMLP`; ``read_blob(blob)`` validates every field
(raising :class:`FormatError`, a ``ValueError`` that names the field and carries the same status
name the C runtime returns) and gives back the decoded layers; ``blob_to_network`` recovers the
network exactly. ``HEADER_FIELDS``, ``LAYER_FIELDS``, ``LAYOUTS`` and ``STATUS`` are the tables
that drive packing, unpacking, dispatch and error messages.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from firmware_export.fantastic4.network import MAX_VALUES, IntegerDense, IntegerMLP

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER_SIZE",
    "ENTRY_SIZE",
    "MAX_LAYERS",
    "STATUS",
    "HEADER_FIELDS",
    "LAYER_FIELDS",
    "LAYOUTS",
    "FormatError",
    "F4Layer",
    "F4Blob",
    "write_blob",
    "read_blob",
    "blob_to_network",
    "layout_sizes",
    "csc_column_bytes",
    "acc_per_input",
    "bias_section",
    "bias_limit",
    "scratch_layout",
    "bias_fits",
    "ACC_ALIGN",
    "encode_vu8",
    "crc32",
    "encode_csci",
    "csci_column_stats",
    "csci_row_bytes",
    "CSCI_CHUNK",
]

MAGIC = b"F4NN"
VERSION = 1
HEADER_SIZE = 24
ENTRY_SIZE = 56
MAX_LAYERS = 16
INT32_MAX = 2**31 - 1
#: |x| <= 128 and |w| <= 128: the largest contribution of one weight to an accumulator that adds
#: raw int8 activations (the layouts with a folded bias: dense4, bitmap, cer).
ACC_PER_INPUT = 128 * 128

#: (value, name, meaning), identical to ``enum f4_status`` in runtime/f4_runtime.h.
STATUS: Tuple[Tuple[int, str, str], ...] = (
    (0, "F4_OK", "ok"),
    (1, "F4_ERR_ARGUMENT", "NULL pointer or inconsistent argument"),
    (2, "F4_ERR_SIZE", "blob shorter than header/table, or total_size != blob size"),
    (3, "F4_ERR_MAGIC", "bad magic"),
    (4, "F4_ERR_VERSION", "unsupported version"),
    (5, "F4_ERR_HEADER", "header_size, entry_size or a reserved header field"),
    (6, "F4_ERR_CRC", "crc32 mismatch"),
    (7, "F4_ERR_LAYER_COUNT", "n_layers out of range"),
    (8, "F4_ERR_LAYOUT", "unknown layout"),
    (9, "F4_ERR_CODEBOOK", "n_values or codebook"),
    (10, "F4_ERR_QUANT", "activation clamp, multiplier, shift or reserved entry field"),
    (11, "F4_ERR_SHAPE", "in_features, out_features or nnz"),
    (12, "F4_ERR_SECTION", "bias/weights offset or size"),
    (13, "F4_ERR_WEIGHTS", "weights section content"),
    (14, "F4_ERR_BIAS", "bias section outside the overflow-safe range"),
    (15, "F4_ERR_CHAIN", "layer input does not match the previous layer's output"),
    (16, "F4_ERR_SCRATCH", "scratch buffer too small"),
)
STATUS_VALUE: Dict[str, int] = {name: v for v, name, _ in STATUS}


class FormatError(ValueError):
    """A malformed blob. ``status`` is the C runtime's status name for the same defect."""

    def __init__(self, status: str, message: str):
        assert status in STATUS_VALUE, status
        super().__init__(f"{status}: {message}")
        self.status = status


# ---------------------------------------------------------------------------------------------
# field tables (FORMAT.md sections 1 and 2)

#: header: (field, struct code)
HEADER_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("magic", "4s"),
    ("version", "B"),
    ("header_size", "B"),
    ("entry_size", "B"),
    ("reserved0", "B"),
    ("n_layers", "H"),
    ("reserved1", "H"),
    ("total_size", "I"),
    ("crc32", "I"),
    ("reserved2", "I"),
)
#: layer table entry: (field, struct code)
LAYER_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("layout", "B"),
    ("n_values", "B"),
    ("input_zero_point", "b"),
    ("output_zero_point", "b"),
    ("activation_min", "b"),
    ("activation_max", "b"),
    ("output_shift", "b"),
    ("reserved", "B"),
    ("in_features", "H"),
    ("out_features", "H"),
    ("output_multiplier", "i"),
    ("nnz", "I"),
    ("bias_offset", "I"),
    ("bias_size", "I"),
    ("weights_offset", "I"),
    ("weights_size", "I"),
    ("reserved_u32", "I"),
    ("codebook", "16s"),
)
_HEADER = struct.Struct("<" + "".join(c for _, c in HEADER_FIELDS))
_ENTRY = struct.Struct("<" + "".join(c for _, c in LAYER_FIELDS))
assert _HEADER.size == HEADER_SIZE and _ENTRY.size == ENTRY_SIZE
CRC_OFFSET = 16


def crc32(blob: bytes) -> int:
    """``crc32`` field: CRC-32 of the blob with bytes 16..19 read as zero."""
    return zlib.crc32(bytes(blob[:CRC_OFFSET]) + b"\0\0\0\0" + bytes(blob[CRC_OFFSET + 4 :])) & 0xFFFFFFFF


def pack_header(**fields) -> bytes:
    return _HEADER.pack(*(fields[name] for name, _ in HEADER_FIELDS))


def unpack_header(blob: bytes) -> Dict[str, object]:
    return dict(zip((n for n, _ in HEADER_FIELDS), _HEADER.unpack_from(blob, 0)))


def pack_layer_entry(**fields) -> bytes:
    return _ENTRY.pack(*(fields[name] for name, _ in LAYER_FIELDS))


def unpack_layer_entry(blob: bytes, offset: int) -> Dict[str, object]:
    return dict(zip((n for n, _ in LAYER_FIELDS), _ENTRY.unpack_from(blob, offset)))


# ---------------------------------------------------------------------------------------------
# weight layouts (FORMAT.md section 4)


def _pack_nibbles(codes: np.ndarray) -> bytes:
    c = np.asarray(codes, np.uint8).ravel()
    if len(c) % 2:
        c = np.concatenate([c, np.zeros(1, np.uint8)])
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8).tobytes()


def _unpack_nibbles(data: bytes, n: int) -> Tuple[np.ndarray, int]:
    """(first n nibbles, the unused last nibble or 0)."""
    b = np.frombuffer(data, np.uint8)
    nib = np.stack([b & 0xF, b >> 4], axis=1).ravel()
    return nib[:n], int(nib[n]) if len(nib) > n else 0


def encode_vu8(value: int) -> bytes:
    """vu8: ``value // 255`` bytes 0xFF, then ``value % 255``."""
    if value < 0:
        raise ValueError(f"vu8 value must be >= 0, got {value}")
    return b"\xff" * (value // 255) + bytes([value % 255])


def _decode_vu8(data: bytes, pos: int, limit: int, what: str) -> Tuple[int, int]:
    value = 0
    while True:
        if pos >= len(data):
            raise FormatError("F4_ERR_WEIGHTS", f"{what}: vu8 runs past the end of the weights section")
        b = data[pos]
        pos += 1
        value += b
        if value > limit:
            raise FormatError("F4_ERR_WEIGHTS", f"{what}: value {value} exceeds {limit}")
        if b != 0xFF:
            return value, pos


def encode_dense4(codes: np.ndarray) -> bytes:
    return _pack_nibbles(codes)


def decode_dense4(data: bytes, out_f: int, in_f: int, n_values: int, nnz: int, where: str) -> np.ndarray:
    n = out_f * in_f
    codes, pad = _unpack_nibbles(data, n)
    if pad:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} codes: unused last nibble is {pad}, must be 0")
    if codes.max(initial=0) >= n_values:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} codes: code {int(codes.max())} >= n_values {n_values}")
    if int(np.count_nonzero(codes)) != nnz:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} codes: {int(np.count_nonzero(codes))} non-zero codes, nnz says {nnz}")
    return codes.reshape(out_f, in_f)


def encode_bitmap(codes: np.ndarray) -> bytes:
    flat = np.asarray(codes, np.uint8).ravel()
    mask = np.packbits(flat != 0, bitorder="little").tobytes()
    return mask + _pack_nibbles(flat[flat != 0])


def decode_bitmap(data: bytes, out_f: int, in_f: int, n_values: int, nnz: int, where: str) -> np.ndarray:
    n = out_f * in_f
    mask_size = (n + 7) // 8
    bits = np.unpackbits(np.frombuffer(data[:mask_size], np.uint8), bitorder="little")
    if bits[n:].any():
        raise FormatError("F4_ERR_WEIGHTS", f"{where} mask: unused bits of the last byte must be 0")
    bits = bits[:n].astype(bool)
    if int(bits.sum()) != nnz:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} mask: popcount {int(bits.sum())} != nnz {nnz}")
    nz, pad = _unpack_nibbles(data[mask_size:], nnz)
    if pad:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} codes: unused last nibble is {pad}, must be 0")
    if nnz and (nz.min() == 0 or nz.max() >= n_values):
        raise FormatError("F4_ERR_WEIGHTS", f"{where} codes: codes of non-zero weights must be in 1..{n_values - 1}")
    codes = np.zeros(n, np.uint8)
    codes[bits] = nz
    return codes.reshape(out_f, in_f)


def _encode_groups(line: np.ndarray) -> bytes:
    """``value_mask`` and, per present code k ascending, ``count`` and the index gaps (vu8) of
    one CER row or CSC column (FORMAT.md section 4)."""
    present = [int(k) for k in np.unique(line) if k != 0]
    out = bytearray(struct.pack("<H", sum(1 << k for k in present)))
    for k in present:
        idx = np.flatnonzero(line == k)
        out += encode_vu8(len(idx))
        prev = -1
        for i in idx:
            out += encode_vu8(int(i) - prev - 1)
            prev = int(i)
    return bytes(out)


def _decode_groups(data, pos: int, n_values: int, n_index: int, line: np.ndarray, where: str,
                   index_name: str, empty_ok: bool) -> Tuple[int, int]:
    """Decode one ``value_mask`` + groups from ``data[pos:]`` into ``line`` (codes indexed by
    column for CER, by row for CSC). Returns (position after the groups, number of entries)."""
    if pos + 2 > len(data):
        raise FormatError("F4_ERR_WEIGHTS", f"{where} value_mask: past the end of the weights section")
    mask = data[pos] | (data[pos + 1] << 8)
    pos += 2
    if mask & 1 or mask >> n_values:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} value_mask 0x{mask:04x}: bit 0 or a bit >= n_values {n_values} is set")
    if mask == 0 and not empty_ok:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} value_mask is 0: an empty column must have column_size 0")
    total = 0
    for k in range(1, n_values):
        if not mask >> k & 1:
            continue
        count, pos = _decode_vu8(data, pos, n_index, f"{where} code {k} count")
        if count == 0:
            raise FormatError("F4_ERR_WEIGHTS", f"{where} code {k} count: must be >= 1")
        i = -1
        for _ in range(count):
            gap, pos = _decode_vu8(data, pos, n_index, f"{where} code {k} {index_name} gap")
            i += gap + 1
            if i >= n_index:
                raise FormatError("F4_ERR_WEIGHTS", f"{where} code {k}: {index_name} {i} >= {n_index}")
            if line[i]:
                raise FormatError("F4_ERR_WEIGHTS", f"{where}: {index_name} {i} appears in two groups")
            line[i] = k
        total += count
    return pos, total


def encode_cer(codes: np.ndarray) -> bytes:
    return b"".join(_encode_groups(row) for row in np.asarray(codes, np.uint8))


def decode_cer(data: bytes, out_f: int, in_f: int, n_values: int, nnz: int, where: str) -> np.ndarray:
    codes = np.zeros((out_f, in_f), np.uint8)
    pos, total = 0, 0
    for r in range(out_f):
        pos, n = _decode_groups(data, pos, n_values, in_f, codes[r], f"{where} row {r}", "column", empty_ok=True)
        total += n
    if pos != len(data):
        raise FormatError("F4_ERR_WEIGHTS", f"{where}: {len(data) - pos} trailing bytes after the last row")
    if total != nnz:
        raise FormatError("F4_ERR_WEIGHTS", f"{where}: counts add up to {total}, nnz says {nnz}")
    return codes


def encode_csc(codes: np.ndarray) -> bytes:
    """Per column: ``column_size`` (vu8), then (if > 0) the CER groups of the column's rows."""
    out = bytearray()
    for col in np.asarray(codes, np.uint8).T:
        body = _encode_groups(col) if col.any() else b""
        out += encode_vu8(len(body)) + body
    return bytes(out)


def csc_column_bytes(codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per input column of a CSC layer: (bytes of the ``column_size`` field, ``column_size``).
    A kernel that skips column j reads only the first; one that uses it reads both."""
    body = np.array([len(_encode_groups(col)) if col.any() else 0 for col in np.asarray(codes, np.uint8).T], np.int64)
    head = np.array([len(encode_vu8(int(b))) for b in body], np.int64)
    return head, body


def decode_csc(data: bytes, out_f: int, in_f: int, n_values: int, nnz: int, where: str) -> np.ndarray:
    codes = np.zeros((in_f, out_f), np.uint8)  # transposed while decoding
    view = memoryview(data)
    pos, total = 0, 0
    for j in range(in_f):
        column_size, pos = _decode_vu8(data, pos, len(data), f"{where} column {j} column_size")
        if column_size > len(data) - pos:
            raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j} column_size {column_size}: past the end of the "
                              f"weights section ({len(data) - pos} bytes left)")
        if column_size == 0:
            continue
        end = pos + column_size
        pos, n = _decode_groups(view[:end], pos, n_values, out_f, codes[j], f"{where} column {j}", "row", empty_ok=False)
        if pos != end:
            raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j}: the groups end {end - pos} bytes before column_size")
        total += n
    if pos != len(data):
        raise FormatError("F4_ERR_WEIGHTS", f"{where}: {len(data) - pos} trailing bytes after the last column")
    if total != nnz:
        raise FormatError("F4_ERR_WEIGHTS", f"{where}: counts add up to {total}, nnz says {nnz}")
    return np.ascontiguousarray(codes.T)


#: CSCI: at most this many rows per chunk (the count is the head byte's high nibble)
CSCI_CHUNK = 15
#: CSCI section header: row_bytes, offset_bytes, two reserved zero bytes
CSCI_HEADER = 4


def csci_row_bytes(out_features: int) -> int:
    """CSCI row index width: 1 byte when ``out_features <= 256``, else 2 (little-endian)."""
    return 1 if out_features <= 256 else 2


def _csci_column(col: np.ndarray, row_bytes: int) -> bytes:
    """One CSCI column: per present code ascending, its rows in chunks of at most 15, each a
    head (``code | count << 4``, a zero byte after it when rows are 2 bytes) and the rows."""
    out = bytearray()
    dtype = np.uint8 if row_bytes == 1 else np.dtype("<u2")
    for k in np.unique(col):
        if k == 0:
            continue
        rows = np.flatnonzero(col == k)
        for i in range(0, len(rows), CSCI_CHUNK):
            chunk = rows[i: i + CSCI_CHUNK]
            out.append(int(k) | (len(chunk) << 4))
            if row_bytes == 2:
                out.append(0)
            out += chunk.astype(dtype).tobytes()
    return bytes(out)


def _csci_length_bytes(longest: int) -> int:
    """The narrowest of 1, 2, 4 bytes that holds the longest column's byte length."""
    return 1 if longest <= 0xFF else 2 if longest <= 0xFFFF else 4


def encode_csci(codes: np.ndarray) -> bytes:
    """CSCI (FORMAT.md section 4): header, ``in`` column byte lengths, column data."""
    codes = np.asarray(codes, np.uint8)
    out_f, in_f = codes.shape
    rb = csci_row_bytes(out_f)
    cols = [_csci_column(col, rb) for col in codes.T]
    lengths = np.array([len(c) for c in cols], np.int64)
    lb = _csci_length_bytes(int(lengths.max(initial=0)))
    return bytes([rb, lb, 0, 0]) + lengths.astype({1: "<u1", 2: "<u2", 4: "<u4"}[lb]).tobytes() + b"".join(cols)


def csci_column_stats(codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per input column of a CSCI layer: (chunks, data bytes). A kernel multiplies once per chunk
    of an active column and reads its data bytes."""
    codes = np.asarray(codes, np.uint8)
    rb = csci_row_bytes(codes.shape[0])
    nz = np.count_nonzero(codes, axis=0)
    chunks = np.zeros(codes.shape[1], np.int64)
    for k in range(1, 16):
        c = np.count_nonzero(codes == k, axis=0)
        chunks += -(-c // CSCI_CHUNK)
    return chunks, rb * (chunks + nz)


def decode_csci(data: bytes, out_f: int, in_f: int, n_values: int, nnz: int, where: str) -> np.ndarray:
    if len(data) < CSCI_HEADER:
        raise FormatError("F4_ERR_WEIGHTS", f"{where}: {len(data)} bytes, shorter than the {CSCI_HEADER}-byte header")
    rb, lb, r0, r1 = data[0], data[1], data[2], data[3]
    want_rb = csci_row_bytes(out_f)
    if rb != want_rb:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} row_bytes is {rb}, must be {want_rb} for {out_f} rows")
    if lb not in (1, 2, 4) or r0 or r1:
        raise FormatError("F4_ERR_WEIGHTS", f"{where} length_bytes {lb} / reserved {r0}, {r1}: need 1, 2 or 4, and 0, 0")
    table = CSCI_HEADER + in_f * lb
    if table > len(data):
        raise FormatError("F4_ERR_WEIGHTS", f"{where}: the {in_f} column lengths end at {table}, past the "
                          f"{len(data)}-byte section")
    lengths = np.frombuffer(data[CSCI_HEADER:table], {1: "<u1", 2: "<u2", 4: "<u4"}[lb]).astype(np.int64)
    if lb != _csci_length_bytes(int(lengths.max(initial=0))):
        raise FormatError("F4_ERR_WEIGHTS", f"{where} length_bytes is {lb}, must be "
                          f"{_csci_length_bytes(int(lengths.max(initial=0)))} for a longest column of "
                          f"{int(lengths.max(initial=0))} bytes")
    if int(lengths.sum()) != len(data) - table:
        raise FormatError("F4_ERR_WEIGHTS", f"{where}: the column lengths add up to {int(lengths.sum())}, the "
                          f"section holds {len(data) - table} bytes of columns")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    codes = np.zeros((in_f, out_f), np.uint8)  # transposed while decoding
    body = data[table:]
    dtype = np.uint8 if rb == 1 else np.dtype("<u2")
    total = 0
    for j in range(in_f):
        pos, end = int(offsets[j]), int(offsets[j + 1])
        prev_code, prev_count, prev_row = 0, CSCI_CHUNK, -1
        line = codes[j]
        while pos < end:
            head = body[pos]
            if rb == 2 and (pos + 1 >= end or body[pos + 1] != 0):
                raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j}: a chunk head's second byte must be 0")
            k, count = head & 0xF, head >> 4
            if not 1 <= k < n_values or count == 0:
                raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j} chunk head 0x{head:02x}: code must be in "
                                  f"1..{n_values - 1} and the count >= 1")
            if k < prev_code or (k == prev_code and prev_count != CSCI_CHUNK):
                raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j} code {k}: codes must ascend, and a code "
                                  f"continues only after a chunk of {CSCI_CHUNK} rows")
            if k != prev_code:
                prev_row = -1
            pos += rb
            if pos + count * rb > end:
                raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j} code {k}: {count} rows run past the column end")
            rows = np.frombuffer(body[pos: pos + count * rb], dtype).astype(np.int64)
            pos += count * rb
            if rows[0] <= prev_row or np.any(np.diff(rows) <= 0):
                raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j} code {k}: rows must strictly increase")
            if rows[-1] >= out_f:
                raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j} code {k}: row {int(rows[-1])} >= {out_f}")
            if np.any(line[rows]):
                dup = int(rows[np.flatnonzero(line[rows])[0]])
                raise FormatError("F4_ERR_WEIGHTS", f"{where} column {j}: row {dup} appears in two groups")
            line[rows] = k
            prev_code, prev_count, prev_row = k, count, int(rows[-1])
            total += count
    if total != nnz:
        raise FormatError("F4_ERR_WEIGHTS", f"{where}: counts add up to {total}, nnz says {nnz}")
    return np.ascontiguousarray(codes.T)


def acc_per_input(folded_bias: bool, input_zero_point: int) -> int:
    """The largest ``|contribution|`` of one input to an int32 accumulator (FORMAT.md section 3).

    Folded bias (the kernel adds raw int8 ``x``): ``|x| * |w| <= 128 * 128``. Unfolded (CSC, the
    kernel adds ``w * (x - z_in)``): ``128 * max(127 - z_in, z_in + 128)`` (255 * 128 at ``z_in = -128``).
    """
    if folded_bias:
        return ACC_PER_INPUT
    return 128 * max(127 - int(input_zero_point), int(input_zero_point) + 128)


class Layout(NamedTuple):
    id: int
    name: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[..., np.ndarray]
    #: exact weights_size from (out, in, nnz), or None when it depends on the content (CER, CSC)
    size: Optional[Callable[[int, int, int], int]]
    #: True: the bias section holds the folded bias (row-major kernels adding raw x);
    #: False: the TFLite bias (CSC, which adds w * (x - input_zero_point))
    folded_bias: bool = True


#: layout id -> Layout; drives the writer, the reader and the simulator's dispatch.
LAYOUTS: Dict[int, Layout] = {
    0: Layout(0, "dense4", encode_dense4, decode_dense4, lambda o, i, nnz: (o * i + 1) // 2),
    1: Layout(1, "bitmap", encode_bitmap, decode_bitmap, lambda o, i, nnz: (o * i + 7) // 8 + (nnz + 1) // 2),
    2: Layout(2, "cer", encode_cer, decode_cer, None),
    3: Layout(3, "csc", encode_csc, decode_csc, None, folded_bias=False),
    4: Layout(4, "csci", encode_csci, decode_csci, None, folded_bias=False),
}
LAYOUT_IDS: Dict[str, int] = {l.name: l.id for l in LAYOUTS.values()}


def layout_sizes(codes: np.ndarray) -> Dict[str, int]:
    """weights_size in bytes of every layout for one layer's ``[out, in]`` codes."""
    return {l.name: len(l.encode(codes)) for l in LAYOUTS.values()}


# ---------------------------------------------------------------------------------------------
# the blob


@dataclasses.dataclass(eq=False)
class F4Layer:
    """One decoded, validated layer; fields named after FORMAT.md (plus ``codes``)."""

    layout: int
    n_values: int
    input_zero_point: int
    output_zero_point: int
    activation_min: int
    activation_max: int
    output_shift: int
    in_features: int
    out_features: int
    output_multiplier: int
    nnz: int
    bias_offset: int
    bias_size: int
    weights_offset: int
    weights_size: int
    codebook: np.ndarray  # int8[16]
    bias_section: np.ndarray  # int32[out], as stored: folded (dense4, bitmap, cer) or TFLite (csc) bias
    codes: np.ndarray  # uint8[out, in]

    @property
    def layout_name(self) -> str:
        return LAYOUTS[self.layout].name

    def weights(self) -> np.ndarray:
        return self.codebook[self.codes]

    def _zero_point_term(self) -> np.ndarray:
        return self.input_zero_point * self.weights().astype(np.int64).sum(axis=1)

    def bias(self) -> np.ndarray:
        """The TFLite bias: the bias section (csc), or ``folded_bias + input_zero_point * row sums``."""
        b = self.bias_section.astype(np.int64)
        return (b + self._zero_point_term() if LAYOUTS[self.layout].folded_bias else b).astype(np.int32)

    def folded_bias(self) -> np.ndarray:
        """``bias - input_zero_point * row sums`` (int64; the bias section for dense4, bitmap, cer)."""
        b = self.bias_section.astype(np.int64)
        return b if LAYOUTS[self.layout].folded_bias else b - self._zero_point_term()


#: the int32 accumulators of a CSC layer start at a multiple of 4 bytes in the scratch buffer
ACC_ALIGN = 4


def scratch_layout(layers: Sequence[F4Layer]) -> Tuple[int, int, int]:
    """FORMAT.md section 8: (activation half size, accumulator offset, total scratch bytes).

    ``half`` = widest intermediate activation (out_features of every layer but the last); the two
    int8 halves are at 0 and ``half``. A blob with CSC layers also needs ``int32 acc[acc_n]``,
    ``acc_n`` = the largest out_features over CSC layers, at ``acc_offset = align4(2 * half)``.
    Without CSC layers the total is ``2 * half`` (as before CSC existed).
    """
    half = max((l.out_features for l in layers[:-1]), default=0)
    acc_n = max((l.out_features for l in layers if not LAYOUTS[l.layout].folded_bias), default=0)
    if acc_n == 0:
        return half, 2 * half, 2 * half
    acc_offset = -(-2 * half // ACC_ALIGN) * ACC_ALIGN
    return half, acc_offset, acc_offset + 4 * acc_n


@dataclasses.dataclass(eq=False)
class F4Blob:
    header: Dict[str, object]
    layers: List[F4Layer]

    def required_scratch(self) -> int:
        """Bytes of scratch ``f4_run`` needs (FORMAT.md section 8): two halves of the widest
        intermediate activation, plus 4-aligned int32 accumulators for the widest CSC layer."""
        return scratch_layout(self.layers)[2]


def folded_bias(layer: IntegerDense) -> np.ndarray:
    """FORMAT.md section 3: ``bias - input_zero_point * sum_j w[r, j]`` (int64)."""
    return layer.bias.astype(np.int64) - layer.input_zero_point * layer.weights.astype(np.int64).sum(axis=1)


def bias_section(layer: IntegerDense, layout: str) -> np.ndarray:
    """FORMAT.md section 3: the int64 values the bias section of ``layout`` holds for ``layer``:
    the folded bias (dense4, bitmap, cer) or the TFLite bias unchanged (csc)."""
    if LAYOUTS[LAYOUT_IDS[layout]].folded_bias:
        return folded_bias(layer)
    return layer.bias.astype(np.int64)


def bias_limit(layout: str, in_features: int, input_zero_point: int) -> int:
    """The largest ``|bias section|`` value ``F4_ERR_BIAS`` accepts:
    ``2^31 - 1 - acc_per_input * in_features``."""
    return INT32_MAX - acc_per_input(LAYOUTS[LAYOUT_IDS[layout]].folded_bias, input_zero_point) * in_features


def bias_fits(layer: IntegerDense, layout: str) -> bool:
    """True when the bias section of ``layer`` in ``layout`` passes the overflow check (``F4_ERR_BIAS``)."""
    return int(np.abs(bias_section(layer, layout)).max()) <= bias_limit(layout, layer.in_features, layer.input_zero_point)


def _pad4(buf: bytearray) -> None:
    buf += b"\0" * (-len(buf) % 4)


def write_blob(net: IntegerMLP, layouts: Union[str, Sequence[str]] = "cer") -> bytes:
    """Pack ``net`` into a blob.

    Args:
        layouts: one layout name for all layers (``dense4``, ``bitmap``, ``cer``, ``csc``),
            ``"smallest"`` (per layer, the layout with the fewest weight bytes among those whose
            bias section passes the overflow check; ties go to the lower layout id), or one name
            per layer.

    Raises:
        ValueError: an unknown layout name, a wrong number of layouts, too many layers, a layer
            wider than 65535, or a bias section outside the int32 overflow-safe range.
    """
    n = len(net.layers)
    if not 1 <= n <= MAX_LAYERS:
        raise ValueError(f"a blob holds 1..{MAX_LAYERS} layers, the network has {n}")
    names = [layouts] * n if isinstance(layouts, str) else list(layouts)
    if len(names) != n:
        raise ValueError(f"layouts: need one name per layer ({n}), got {len(names)}")
    data_start = HEADER_SIZE + ENTRY_SIZE * n
    body = bytearray()
    entries = []
    for i, (layer, lname) in enumerate(zip(net.layers, names)):
        if layer.in_features > 0xFFFF or layer.out_features > 0xFFFF:
            raise ValueError(f"layer {i} {layer.name!r}: features must be <= 65535, got {layer.weights.shape}")
        codes = layer.codes()
        cb = layer.codebook()
        if lname == "smallest":
            sizes = layout_sizes(codes)
            fits = [k for k in sizes if bias_fits(layer, k)]
            lname = min(fits or sizes, key=lambda k: (sizes[k], LAYOUT_IDS[k]))
        if lname not in LAYOUT_IDS:
            raise ValueError(f"layer {i}: unknown layout {lname!r}; accepted: {', '.join(LAYOUT_IDS)}, smallest")
        fb = bias_section(layer, lname)
        if not bias_fits(layer, lname):
            what = "folded bias" if LAYOUTS[LAYOUT_IDS[lname]].folded_bias else "bias"
            raise ValueError(f"layer {i} {layer.name!r}: {what} {int(np.abs(fb).max())} exceeds the overflow-safe "
                             f"{bias_limit(lname, layer.in_features, layer.input_zero_point)} of layout {lname}")
        _pad4(body)
        bias_offset = data_start + len(body)
        body += fb.astype("<i4").tobytes()
        _pad4(body)
        weights_offset = data_start + len(body)
        wbytes = LAYOUTS[LAYOUT_IDS[lname]].encode(codes)
        body += wbytes
        entries.append(pack_layer_entry(
            layout=LAYOUT_IDS[lname], n_values=len(cb),
            input_zero_point=layer.input_zero_point, output_zero_point=layer.output_zero_point,
            activation_min=layer.activation_min, activation_max=layer.activation_max,
            output_shift=layer.output_shift, reserved=0,
            in_features=layer.in_features, out_features=layer.out_features,
            output_multiplier=layer.output_multiplier, nnz=int(np.count_nonzero(codes)),
            bias_offset=bias_offset, bias_size=4 * layer.out_features,
            weights_offset=weights_offset, weights_size=len(wbytes), reserved_u32=0,
            codebook=cb.astype(np.int8).tobytes().ljust(16, b"\0"),
        ))
    _pad4(body)
    total = data_start + len(body)
    header = dict(magic=MAGIC, version=VERSION, header_size=HEADER_SIZE, entry_size=ENTRY_SIZE, reserved0=0,
                  n_layers=n, reserved1=0, total_size=total, crc32=0, reserved2=0)
    blob = bytearray(pack_header(**header) + b"".join(entries) + bytes(body))
    struct.pack_into("<I", blob, CRC_OFFSET, crc32(blob))
    return bytes(blob)


def _inside(offset: int, size: int, total: int) -> bool:
    return offset <= total and size <= total - offset


def read_blob(blob: bytes) -> F4Blob:
    """Validate and decode a blob, in the order of FORMAT.md (the C ``f4_prepare`` order).

    Raises:
        FormatError: naming the field and the rule; ``.status`` is the C status name.
    """
    blob = bytes(blob)
    size = len(blob)
    if size < HEADER_SIZE:
        raise FormatError("F4_ERR_SIZE", f"blob of {size} bytes is shorter than the {HEADER_SIZE}-byte header")
    h = unpack_header(blob)
    if h["magic"] != MAGIC:
        raise FormatError("F4_ERR_MAGIC", f"magic is {h['magic']!r}, expected {MAGIC!r}")
    if h["version"] != VERSION:
        raise FormatError("F4_ERR_VERSION", f"version is {h['version']}, this reader supports {VERSION}")
    for field, want in (("header_size", HEADER_SIZE), ("entry_size", ENTRY_SIZE), ("reserved0", 0), ("reserved1", 0), ("reserved2", 0)):
        if h[field] != want:
            raise FormatError("F4_ERR_HEADER", f"{field} is {h[field]}, must be {want}")
    n = h["n_layers"]
    if not 1 <= n <= MAX_LAYERS:
        raise FormatError("F4_ERR_LAYER_COUNT", f"n_layers is {n}, must be in 1..{MAX_LAYERS}")
    if h["total_size"] != size:
        raise FormatError("F4_ERR_SIZE", f"total_size is {h['total_size']}, the blob has {size} bytes")
    if h["crc32"] != crc32(blob):
        raise FormatError("F4_ERR_CRC", f"crc32 is 0x{h['crc32']:08x}, the bytes give 0x{crc32(blob):08x}")
    data_start = HEADER_SIZE + ENTRY_SIZE * n
    if data_start > size:
        raise FormatError("F4_ERR_SIZE", f"layer table of {n} entries ends at {data_start}, past the blob end {size}")
    layers: List[F4Layer] = []
    for i in range(n):
        e = unpack_layer_entry(blob, HEADER_SIZE + ENTRY_SIZE * i)
        where = f"layer {i}"
        if e["layout"] not in LAYOUTS:
            raise FormatError("F4_ERR_LAYOUT", f"{where} layout is {e['layout']}; accepted: "
                              + ", ".join(f"{l.id} ({l.name})" for l in LAYOUTS.values()))
        k = e["n_values"]
        cb = np.frombuffer(e["codebook"], np.int8)
        if not 1 <= k <= MAX_VALUES:
            raise FormatError("F4_ERR_CODEBOOK", f"{where} n_values is {k}, must be in 1..{MAX_VALUES}")
        if cb[0] != 0 or (cb[1:k] == 0).any() or len(np.unique(cb[1:k])) != k - 1 or cb[k:].any():
            raise FormatError("F4_ERR_CODEBOOK", f"{where} codebook {cb.tolist()}: entry 0 must be 0, entries 1..{k - 1} "
                              "distinct and non-zero, the rest 0")
        if e["activation_min"] > e["activation_max"]:
            raise FormatError("F4_ERR_QUANT", f"{where} activation_min {e['activation_min']} > activation_max {e['activation_max']}")
        if not -31 <= e["output_shift"] <= 30:
            raise FormatError("F4_ERR_QUANT", f"{where} output_shift is {e['output_shift']}, must be in -31..30")
        if e["output_multiplier"] < 0:
            raise FormatError("F4_ERR_QUANT", f"{where} output_multiplier is {e['output_multiplier']}, must be >= 0")
        for field in ("reserved", "reserved_u32"):
            if e[field] != 0:
                raise FormatError("F4_ERR_QUANT", f"{where} {field} is {e[field]}, must be 0")
        in_f, out_f = e["in_features"], e["out_features"]
        if in_f < 1 or out_f < 1:
            raise FormatError("F4_ERR_SHAPE", f"{where} in_features {in_f} / out_features {out_f} must be >= 1")
        if e["nnz"] > in_f * out_f:
            raise FormatError("F4_ERR_SHAPE", f"{where} nnz {e['nnz']} > in_features * out_features {in_f * out_f}")
        if layers:
            prev = layers[-1]
            if in_f != prev.out_features:
                raise FormatError("F4_ERR_CHAIN", f"{where} in_features {in_f} != out_features {prev.out_features} of layer {i - 1}")
            if e["input_zero_point"] != prev.output_zero_point:
                raise FormatError("F4_ERR_CHAIN", f"{where} input_zero_point {e['input_zero_point']} != output_zero_point "
                                  f"{prev.output_zero_point} of layer {i - 1}")
        bo, bs, wo, ws = e["bias_offset"], e["bias_size"], e["weights_offset"], e["weights_size"]
        if bo % 4 or bo < data_start or bs != 4 * out_f or not _inside(bo, bs, size):
            raise FormatError("F4_ERR_SECTION", f"{where} bias_offset {bo} / bias_size {bs}: need a multiple of 4, "
                              f">= {data_start}, size {4 * out_f}, inside the {size}-byte blob")
        lay = LAYOUTS[e["layout"]]
        want = lay.size(out_f, in_f, e["nnz"]) if lay.size else None
        if wo < data_start or not _inside(wo, ws, size) or (want is not None and ws != want):
            raise FormatError("F4_ERR_SECTION", f"{where} weights_offset {wo} / weights_size {ws}: need >= {data_start}, "
                              f"inside the {size}-byte blob" + (f", size {want} for {lay.name}" if want is not None else ""))
        codes = lay.decode(blob[wo : wo + ws], out_f, in_f, k, e["nnz"], f"{where} weights ({lay.name})")
        fb = np.frombuffer(blob[bo : bo + bs], "<i4").astype(np.int32)
        limit = INT32_MAX - acc_per_input(lay.folded_bias, e["input_zero_point"]) * in_f
        if np.abs(fb.astype(np.int64)).max() > limit:
            what = "folded bias" if lay.folded_bias else "bias (unfolded, csc)"
            raise FormatError("F4_ERR_BIAS", f"{where} {what} {int(np.abs(fb.astype(np.int64)).max())} exceeds {limit}")
        fields = {f: e[f] for f in ("layout", "n_values", "input_zero_point", "output_zero_point", "activation_min",
                                    "activation_max", "output_shift", "in_features", "out_features",
                                    "output_multiplier", "nnz", "bias_offset", "bias_size", "weights_offset", "weights_size")}
        layers.append(F4Layer(**fields, codebook=cb.copy(), bias_section=fb, codes=codes))
    return F4Blob(header=h, layers=layers)


def blob_to_network(blob: Union[bytes, F4Blob]) -> IntegerMLP:
    """The :class:`IntegerMLP` a blob encodes (layer names ``layer_<i>``; scales are not stored)."""
    parsed = blob if isinstance(blob, F4Blob) else read_blob(blob)
    return IntegerMLP([
        IntegerDense(
            name=f"layer_{i}", weights=l.weights(), bias=l.bias(),
            input_zero_point=l.input_zero_point, output_zero_point=l.output_zero_point,
            output_multiplier=l.output_multiplier, output_shift=l.output_shift,
            activation_min=l.activation_min, activation_max=l.activation_max,
        )
        for i, l in enumerate(parsed.layers)
    ])
