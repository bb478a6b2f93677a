"""FantastIC4 runtime: format round trip, simulator == TFLM == slow reference == C runtime (bit for
bit, also under AddressSanitizer/UBSan), malformed blobs rejected with the same status in Python
and C, op counts."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from firmware_export.fantastic4 import format as F
from firmware_export.fantastic4 import simulate as S
from firmware_export.fantastic4.network import IntegerDense, IntegerMLP, reference_dense, reference_forward

RUNTIME = Path(__file__).resolve().parents[1] / "firmware_export" / "fantastic4" / "runtime"
LAYOUT_NAMES = ["dense4", "bitmap", "cer", "csc", "csci"]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
BUILDS = {
    "O2": ["-O2"],
    "sanitize": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
}


# ---------------------------------------------------------------------------------------------
# fixtures


def snapped_mlp_tflite(sizes, seed=0, zero_fraction=0.7, activation_last=None) -> bytes:
    """A float MLP whose kernels take 15 levels k*step (k in -7..7, most 0), PTQ int8 .tflite."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    inp = tf.keras.Input((sizes[0],))
    x = inp
    for w in sizes[1:-1]:
        x = tf.keras.layers.Dense(w, activation="relu")(x)
    x = tf.keras.layers.Dense(sizes[-1], activation=activation_last)(x)
    model = tf.keras.Model(inp, x)
    for layer in model.layers[1:]:
        k, b = layer.get_weights()
        step = np.abs(k).max() / 7
        levels = np.clip(np.round(k / step), -7, 7)
        levels[rng.random(k.shape) < zero_fraction] = 0
        layer.set_weights([(levels * step).astype(np.float32), rng.normal(0, 0.1, b.shape).astype(np.float32)])
    from firmware_export.tflm.convert import convert_full_int8

    rep = rng.normal(size=(200, sizes[0])).astype(np.float32)
    return convert_full_int8(tf.lite.TFLiteConverter.from_keras_model(model), rep)


def tflm_outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model_bytes, arena_size=64 * 1024)
    out = []
    for row in x:
        it.set_input(row[None, :], 0)
        it.invoke()
        out.append(np.array(it.get_output(0)).reshape(-1))
    return np.stack(out).astype(np.int8)


@pytest.fixture(scope="session")
def mlp_tflite() -> bytes:
    return snapped_mlp_tflite([64, 32, 16, 10], seed=0)


@pytest.fixture(scope="session")
def net(mlp_tflite) -> IntegerMLP:
    return IntegerMLP.from_tflite(mlp_tflite)


@pytest.fixture(scope="session")
def inputs() -> np.ndarray:
    return np.random.default_rng(1).integers(-128, 128, size=(300, 64)).astype(np.int8)


@pytest.fixture(scope="session")
def tflm_out(mlp_tflite, inputs) -> np.ndarray:
    return tflm_outputs(mlp_tflite, inputs)


@pytest.fixture(scope="session")
def wide_net() -> IntegerMLP:
    """No TF: 601 -> 41 -> 7 with very sparse rows (CER column gaps > 255 need several vu8 bytes),
    a -128 weight, a row with no non-zero weight, odd widths (rows start mid-byte, padding nibbles/bits)."""
    rng = np.random.default_rng(5)
    w1 = np.zeros((41, 601), np.int8)
    vals = np.array([-128, -90, -33, -5, 1, 7, 19, 64, 127], np.int8)
    for r in range(1, 41):
        cols = rng.choice(601, size=rng.integers(1, 12), replace=False)
        w1[r, cols] = rng.choice(vals, size=len(cols))
    w1[3, 600] = 127
    w2 = rng.choice(np.array([0, 0, 0, -3, 2, 5], np.int8), size=(7, 41)).astype(np.int8)
    l1 = IntegerDense("wide_1", w1, rng.integers(-3000, 3000, 41), 3, -128, 1518500250, -6, -128, 127)
    l2 = IntegerDense("wide_2", w2, rng.integers(-300, 300, 7), -128, 5, 1300000000, -5, -128, 127)
    return IntegerMLP([l1, l2])


@pytest.fixture(scope="session")
def f4_host(tmp_path_factory):
    """The host harness built once per session, plain and with sanitizers: build name -> path."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    out = tmp_path_factory.mktemp("f4_build")
    exes = {}
    for name, flags in BUILDS.items():
        exe = out / f"f4_host_{name}"
        cmd = ["gcc", *CFLAGS, *flags, f"-I{RUNTIME}", str(RUNTIME / "f4_runtime.c"), str(RUNTIME / "f4_host.c"), "-o", str(exe)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
        exes[name] = exe
    return exes


def run_host(exe: Path, tmp: Path, blob: bytes, x: np.ndarray, n_out: int, *flags: str) -> np.ndarray:
    (tmp / "blob.bin").write_bytes(blob)
    np.asarray(x, np.int8).tofile(tmp / "in.bin")
    r = subprocess.run([str(exe), "-b", str(tmp / "blob.bin"), *flags, str(tmp / "in.bin"), "-", str(tmp / "out.bin")],
                       capture_output=True, text=True, env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1"})
    assert r.returncode == 0, r.stdout + r.stderr
    return np.fromfile(tmp / "out.bin", np.int8).reshape(len(x), n_out)


def fuzz_statuses(exe: Path, tmp: Path, blobs) -> list:
    rec = b"".join(struct.pack("<I", len(b)) + bytes(b) for b in blobs)
    (tmp / "records.bin").write_bytes(rec)
    r = subprocess.run([str(exe), "--fuzz", str(tmp / "records.bin")], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr, r.stderr[-3000:]
    lines = r.stdout.split()
    assert "SCRATCH_NOT_CHECKED" not in lines and "ALIGNMENT_NOT_CHECKED" not in lines
    assert len(lines) == len(blobs)
    return lines


def py_status(blob: bytes) -> str:
    try:
        F.read_blob(blob)
    except F.FormatError as e:
        return e.status
    return "F4_OK"


def with_crc(blob: bytes) -> bytes:
    b = bytearray(blob)
    struct.pack_into("<I", b, F.CRC_OFFSET, F.crc32(b))
    return bytes(b)


def same_layers(a: IntegerMLP, b: IntegerMLP) -> bool:
    strip = lambda n: [{k: v for k, v in l.to_dict().items() if k != "name"} for l in n.layers]
    return strip(a) == strip(b)


# ---------------------------------------------------------------------------------------------
# network and format


def test_network_from_tflite(net):
    assert [(l.in_features, l.out_features) for l in net.layers] == [(64, 32), (32, 16), (16, 10)]
    for l in net.layers:
        assert len(l.codebook()) <= 16 and l.codebook()[0] == 0
        assert np.array_equal(l.codebook()[l.codes()], l.weights)


@pytest.mark.parametrize("layout", LAYOUT_NAMES + ["smallest"])
def test_format_round_trip(net, wide_net, layout):
    for n in (net, wide_net):
        blob = F.write_blob(n, layout)
        assert F.write_blob(n, layout) == blob  # deterministic
        parsed = F.read_blob(blob)
        assert parsed.header["total_size"] == len(blob) and len(blob) % 4 == 0
        assert same_layers(F.blob_to_network(parsed), n)
        assert F.write_blob(F.blob_to_network(blob), layout) == blob


def test_layout_sizes_match_spec(net):
    for l in net.layers:
        codes, nnz = l.codes(), int(np.count_nonzero(l.weights))
        sizes = F.layout_sizes(codes)
        n = codes.size
        assert sizes["dense4"] == (n + 1) // 2
        assert sizes["bitmap"] == (n + 7) // 8 + (nnz + 1) // 2
        assert sizes["cer"] >= 2 * l.out_features + nnz  # a value_mask per row, >= 1 gap byte per entry
        assert sizes["csc"] >= l.in_features + nnz  # a column_size per column, >= 1 gap byte per entry


@pytest.mark.parametrize("value, encoded", [(0, b"\0"), (254, b"\xfe"), (255, b"\xff\0"), (509, b"\xff\xfe"), (510, b"\xff\xff\0")])
def test_vu8(value, encoded):
    assert F.encode_vu8(value) == encoded
    assert F._decode_vu8(encoded, 0, 65535, "x") == (value, len(encoded))


def test_more_than_16_values_rejected():
    w = np.arange(-8, 9, dtype=np.int8).reshape(1, 17)  # 17 distinct values including 0
    with pytest.raises(ValueError, match=r"17 distinct values.*at most 16"):
        IntegerDense("too_many", w, np.zeros(1), 0, 0, 1 << 30, 0, -128, 127)
    w16 = np.arange(1, 17, dtype=np.int8).reshape(1, 16)  # 16 non-zero values: 17 with the implicit 0
    with pytest.raises(ValueError, match="implicit zero"):
        IntegerDense("no_zero", w16, np.zeros(1), 0, 0, 1 << 30, 0, -128, 127)


def test_unsnapped_tflite_rejected():
    blob = snapped_mlp_tflite([16, 8, 4], seed=2, zero_fraction=0.0)
    IntegerMLP.from_tflite(blob)  # snapped: fine
    import tensorflow as tf

    rng = np.random.default_rng(0)
    inp = tf.keras.Input((16,))
    model = tf.keras.Model(inp, tf.keras.layers.Dense(8)(inp))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None]] for r in rng.normal(size=(50, 16)).astype(np.float32))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    with pytest.raises(ValueError, match="distinct values"):
        IntegerMLP.from_tflite(conv.convert())


def test_unsupported_op_rejected():
    blob = snapped_mlp_tflite([16, 8, 4], seed=3, activation_last="softmax")
    with pytest.raises(ValueError, match="SOFTMAX"):
        IntegerMLP.from_tflite(blob)


# ---------------------------------------------------------------------------------------------
# bit exactness


def test_slow_reference_matches_tflm(net, inputs, tflm_out):
    assert np.array_equal(reference_forward(net, inputs), tflm_out)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_simulator_matches_tflm_and_reference(net, wide_net, inputs, tflm_out, layout):
    assert np.array_equal(S.run(F.write_blob(net, layout), inputs), tflm_out)
    xw = np.random.default_rng(9).integers(-128, 128, size=(200, 601)).astype(np.int8)
    assert np.array_equal(S.run(F.write_blob(wide_net, layout), xw), reference_forward(wide_net, xw))


@pytest.mark.parametrize("build", list(BUILDS))
def test_c_runtime_matches_simulator(f4_host, tmp_path, net, wide_net, inputs, tflm_out, build):
    xw = np.random.default_rng(9).integers(-128, 128, size=(100, 601)).astype(np.int8)
    outs = {}
    for layout in LAYOUT_NAMES + [["cer", "bitmap", "dense4"], ["csc", "cer", "csc"]]:
        blob = F.write_blob(net, layout)
        key = layout if isinstance(layout, str) else "+".join(layout)
        outs[key] = run_host(f4_host[build], tmp_path, blob, inputs, 10)
        assert np.array_equal(outs[key], S.run(blob, inputs)), key
        assert np.array_equal(outs[key], tflm_out), key
        wblob = F.write_blob(wide_net, layout if isinstance(layout, str) else layout[:2])
        assert np.array_equal(run_host(f4_host[build], tmp_path, wblob, xw, 7), S.run(wblob, xw)), key
    # f4_run per sample (prepare + invoke each time) gives the same
    for layout in ("cer", "csc"):
        assert np.array_equal(run_host(f4_host[build], tmp_path, F.write_blob(net, layout), inputs[:20], 10, "-r"), tflm_out[:20])


def test_required_scratch(net, wide_net):
    for layout in ("dense4", "bitmap", "cer", ["cer", "bitmap", "dense4"]):  # unchanged by CSC
        assert S.required_scratch(F.write_blob(net, layout)) == 2 * 32
    assert S.required_scratch(F.write_blob(wide_net)) == 2 * 41
    one = IntegerMLP([wide_net.layers[0]])
    assert S.required_scratch(F.write_blob(one)) == 0
    # CSC: int32 accumulators for the widest CSC layer at align4(2 * half)
    assert S.required_scratch(F.write_blob(net, "csc")) == 2 * 32 + 4 * 32
    assert S.required_scratch(F.write_blob(net, ["cer", "bitmap", "csc"])) == 2 * 32 + 4 * 10
    assert S.required_scratch(F.write_blob(wide_net, "csc")) == 84 + 4 * 41  # 2 * 41 = 82 rounded up to 84
    assert S.required_scratch(F.write_blob(one, "csc")) == 4 * 41


# ---------------------------------------------------------------------------------------------
# malformed blobs: Python and C agree, C never reads out of range (sanitizer build)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_truncated_blobs(f4_host, tmp_path, net, layout):
    blob = F.write_blob(net, layout)
    cases = [blob[:n] for n in range(len(blob))] + [blob + b"\0"]
    for build in BUILDS:
        got = fuzz_statuses(f4_host[build], tmp_path, cases + [blob])
        assert got[-1] == "F4_OK"
        assert all(s != "F4_OK" for s in got[:-1])
        assert got[:-1] == [py_status(c) for c in cases]
        assert set(got[:-1]) <= {"F4_ERR_SIZE", "F4_ERR_MAGIC", "F4_ERR_VERSION", "F4_ERR_HEADER"}


def _flips(blob: bytes, lo: int, hi: int, n: int, seed: int, fix_crc: bool):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        b = bytearray(blob)
        for pos in rng.integers(lo, hi, size=rng.integers(1, 4)):
            if F.CRC_OFFSET <= pos < F.CRC_OFFSET + 4 and fix_crc:
                continue
            b[pos] ^= int(rng.integers(1, 256))
        out.append(with_crc(bytes(b)) if fix_crc else bytes(b))
    return out


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_corrupted_blobs(f4_host, tmp_path, net, layout):
    blob = F.write_blob(net, layout)
    table_end = F.HEADER_SIZE + F.ENTRY_SIZE * len(net.layers)
    raw = _flips(blob, 0, table_end, 150, seed=1, fix_crc=False)  # any change is caught
    fixed = _flips(blob, 0, table_end, 300, seed=2, fix_crc=True)  # structural checks
    data = _flips(blob, table_end, len(blob), 150, seed=3, fix_crc=True)  # weights/bias content
    cases = raw + fixed + data
    want = [py_status(c) for c in cases]
    assert all(s != "F4_OK" for s in want[: len(raw)])
    assert sum(s != "F4_OK" for s in want[len(raw) :]) > 100
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, cases) == want


def _entry_field(blob: bytes, layer: int, field: str, value) -> bytes:
    b = bytearray(blob)
    off = F.HEADER_SIZE + F.ENTRY_SIZE * layer
    e = F.unpack_layer_entry(b, off)
    e[field] = value
    b[off : off + F.ENTRY_SIZE] = F.pack_layer_entry(**e)
    return with_crc(bytes(b))


def _header_field(blob: bytes, field: str, value) -> bytes:
    b = bytearray(blob)
    h = F.unpack_header(b)
    h[field] = value
    b[: F.HEADER_SIZE] = F.pack_header(**h)
    return bytes(b) if field == "crc32" else with_crc(bytes(b))


CRAFTED = [
    ("magic", lambda b: _header_field(b, "magic", b"F4NX"), "F4_ERR_MAGIC", "magic"),
    ("version", lambda b: _header_field(b, "version", 2), "F4_ERR_VERSION", "version"),
    ("entry_size", lambda b: _header_field(b, "entry_size", 57), "F4_ERR_HEADER", "entry_size"),
    ("reserved2", lambda b: _header_field(b, "reserved2", 1), "F4_ERR_HEADER", "reserved2"),
    ("n_layers0", lambda b: _header_field(b, "n_layers", 0), "F4_ERR_LAYER_COUNT", "n_layers"),
    ("n_layers17", lambda b: _header_field(b, "n_layers", 17), "F4_ERR_LAYER_COUNT", "n_layers"),
    ("total_size", lambda b: _header_field(b, "total_size", len(b) + 4), "F4_ERR_SIZE", "total_size"),
    ("crc32", lambda b: _header_field(b, "crc32", 12345), "F4_ERR_CRC", "crc32"),
    ("layout", lambda b: _entry_field(b, 1, "layout", len(F.LAYOUTS)), "F4_ERR_LAYOUT", "layout"),
    ("n_values", lambda b: _entry_field(b, 0, "n_values", 17), "F4_ERR_CODEBOOK", "n_values"),
    ("codebook0", lambda b: _entry_field(b, 0, "codebook", b"\x05" + b[F.HEADER_SIZE + 41 : F.HEADER_SIZE + 56]), "F4_ERR_CODEBOOK", "codebook"),
    ("activation", lambda b: _entry_field(_entry_field(b, 2, "activation_min", 10), 2, "activation_max", 9), "F4_ERR_QUANT", "activation_min"),
    ("shift", lambda b: _entry_field(b, 0, "output_shift", 31), "F4_ERR_QUANT", "output_shift"),
    ("multiplier", lambda b: _entry_field(b, 0, "output_multiplier", -5), "F4_ERR_QUANT", "output_multiplier"),
    ("in_features0", lambda b: _entry_field(b, 0, "in_features", 0), "F4_ERR_SHAPE", "in_features"),
    ("nnz", lambda b: _entry_field(b, 0, "nnz", 64 * 32 + 1), "F4_ERR_SHAPE", "nnz"),
    ("chain", lambda b: _entry_field(b, 1, "in_features", 33), "F4_ERR_CHAIN", "in_features"),
    ("chain_zp", lambda b: _entry_field(b, 1, "input_zero_point", 0), "F4_ERR_CHAIN", "input_zero_point"),
    ("bias_align", lambda b: _entry_field(b, 0, "bias_offset", F.unpack_layer_entry(b, F.HEADER_SIZE)["bias_offset"] + 1),
     "F4_ERR_SECTION", "bias_offset"),
    ("bias_in_table", lambda b: _entry_field(b, 0, "bias_offset", F.HEADER_SIZE), "F4_ERR_SECTION", "bias_offset"),
    ("weights_past_end", lambda b: _entry_field(b, 2, "weights_offset", len(b) - 3), "F4_ERR_SECTION", "weights_offset"),
    ("weights_size_huge", lambda b: _entry_field(b, 2, "weights_size", 0xFFFFFFFF), "F4_ERR_SECTION", "weights_offset"),
    ("nnz_off_by_one", lambda b: _entry_field(b, 0, "nnz", F.unpack_layer_entry(b, F.HEADER_SIZE)["nnz"] - 1), "F4_ERR_WEIGHTS", "nnz"),
    ("weights_shorter",
     lambda b: _entry_field(b, 1, "weights_size", F.unpack_layer_entry(b, F.HEADER_SIZE + F.ENTRY_SIZE)["weights_size"] - 1),
     "F4_ERR_WEIGHTS", "trailing|past the end|vu8|nnz|column"),
]


@pytest.mark.parametrize("name, corrupt, status, field", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_errors(f4_host, tmp_path, net, name, corrupt, status, field):
    blob = corrupt(F.write_blob(net, "cer"))
    with pytest.raises(F.FormatError, match=field) as e:
        F.read_blob(blob)
    assert e.value.status == status
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, [blob]) == [status]


def _cut_last_weights(blob: bytes, n_layers: int, k: int) -> bytes:
    """The last layer's weights section shortened by k bytes and ending exactly at the blob end
    (total_size and crc32 fixed): a reader that trusts the stream reads past the allocation."""
    off = F.HEADER_SIZE + F.ENTRY_SIZE * (n_layers - 1)
    e = F.unpack_layer_entry(blob, off)
    end = e["weights_offset"] + e["weights_size"] - k
    b = bytearray(_entry_field(blob, n_layers - 1, "weights_size", e["weights_size"] - k)[:end])
    h = F.unpack_header(b)
    h["total_size"] = end
    b[: F.HEADER_SIZE] = F.pack_header(**h)
    return with_crc(bytes(b))


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_section_cut_at_blob_end(f4_host, tmp_path, net, wide_net, layout):
    cases = []
    for n in (net, wide_net):
        blob = F.write_blob(n, layout)
        cases += [_cut_last_weights(blob, len(n.layers), k) for k in range(0, 12)]
    want = [py_status(c) for c in cases]
    assert want[0] == "F4_OK" and all(s in ("F4_ERR_WEIGHTS", "F4_ERR_SECTION") for s in want[1:12])
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, cases) == want


def test_folded_bias_range(f4_host, tmp_path, net):
    blob = bytearray(F.write_blob(net, "bitmap"))
    e = F.unpack_layer_entry(blob, F.HEADER_SIZE)
    struct.pack_into("<i", blob, e["bias_offset"] + 8, 2**31 - 1)
    blob = with_crc(bytes(blob))
    assert py_status(blob) == "F4_ERR_BIAS"
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, [blob]) == ["F4_ERR_BIAS"]
    big = IntegerDense("big", np.full((1, 4), 127, np.int8), np.array([2**31 - 1000]), -100, 0, 1 << 30, 0, -128, 127)
    with pytest.raises(ValueError, match="folded bias"):
        F.write_blob(IntegerMLP([big]))


# ---------------------------------------------------------------------------------------------
# op counts


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_op_counts(net, inputs, layout):
    blob = F.write_blob(net, layout)
    y, counts, mults = S.run_with_counts(blob, inputs)
    x = inputs
    for l, c, m in zip(net.layers, counts, mults):
        nz = l.weights != 0
        if layout in ("csc", "csci"):  # slow count: per active column (x != zp), its non-zeros and its distinct values
            active = x != l.input_zero_point
            distinct = np.array([len(np.unique(col[col != 0])) for col in l.weights.T])
            if layout == "csci":  # one multiply per chunk of at most 15 rows of a value
                distinct = np.array([sum(-(-int(np.sum(col == v)) // 15) for v in np.unique(col[col != 0]))
                                     for col in l.weights.T])
            assert c.accumulate_adds == pytest.approx((active * nz.sum(axis=0)).sum() / len(x))
            assert np.array_equal(m, active * distinct[None, :])
            assert c.multiplies == pytest.approx(m.sum() / len(x)) and c.product_adds == 0
            assert c.activation_bytes_read == l.in_features
            assert c.accumulator_bytes == pytest.approx(8 * l.out_features + 8 * c.accumulate_adds)
            assert c.weight_bytes <= F.layout_sizes(l.codes())[layout]
        else:
            assert c.accumulate_adds == nz.sum() == c.activation_bytes_read
            distinct = np.array([len(np.unique(row[row != 0])) for row in l.weights])
            assert np.all(m <= distinct[None, :]) and np.all(m <= 15)
            assert m.max() > 0 and c.multiplies == pytest.approx(m.sum() / len(inputs))
            assert c.weight_bytes == F.layout_sizes(l.codes())[layout] and c.accumulator_bytes == 0
        assert c.requantizations == l.out_features
        e = c.energy_pj()
        assert e["total"] == pytest.approx(e["arithmetic"] + e["memory"]) and e["total"] > 0
        x = reference_dense(l, x)
    total = sum(counts, S.OpCounts())
    dense = S.dense_int8_counts(net)
    assert total.multiplies < dense.multiplies and total.accumulate_adds < dense.accumulate_adds


# ---------------------------------------------------------------------------------------------
# CSC: the activation-driven layout


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_inputs_at_zero_point(f4_host, tmp_path, net, wide_net, layout):
    """Every input equal to the input zero point: CSC skips every column of the first layer, whose
    output is then requantize(bias); all layouts agree with the slow reference, in C and Python."""
    for n in (net, wide_net, IntegerMLP([wide_net.layers[0]])):
        blob = F.write_blob(n, layout)
        x = np.full((3, n.input_features), n.input_zero_point, np.int8)
        first = F.read_blob(blob).layers[0]
        bias_only = S.requantize(first, np.repeat(n.layers[0].bias.astype(np.int64)[None, :], 3, axis=0))
        assert np.array_equal(reference_dense(n.layers[0], x), bias_only)
        _, counts, _ = S.run_with_counts(blob, x)
        if layout == "csc":
            assert counts[0].accumulate_adds == 0 and counts[0].multiplies == 0
        want = reference_forward(n, x)
        assert np.array_equal(S.run(blob, x), want)
        for build in BUILDS:
            assert np.array_equal(run_host(f4_host[build], tmp_path, blob, x, n.output_features), want)


def test_csc_sparse_inputs_match_tflm(f4_host, tmp_path, mlp_tflite, net, wide_net):
    """Inputs mostly at the zero point (as MNIST background), a first layer whose input zero point
    is not -128 (the PTQ fixture, and wide_net's 3): CSC == TFLM == slow reference, C and Python."""
    assert net.layers[0].input_zero_point != -128 and wide_net.layers[0].input_zero_point == 3
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, size=(80, 64)).astype(np.int8)
    x[rng.random(x.shape) < 0.8] = net.input_zero_point
    want = tflm_outputs(mlp_tflite, x)
    assert np.array_equal(reference_forward(net, x), want)
    blob = F.write_blob(net, "csc")
    y, counts, _ = S.run_with_counts(blob, x)
    assert np.array_equal(y, want)
    assert counts[0].accumulate_adds < 0.3 * np.count_nonzero(net.layers[0].weights)
    xw = rng.integers(-128, 128, size=(60, 601)).astype(np.int8)
    xw[rng.random(xw.shape) < 0.8] = 3
    wblob = F.write_blob(wide_net, "csc")
    for build in BUILDS:
        assert np.array_equal(run_host(f4_host[build], tmp_path, blob, x, 10), want)
        assert np.array_equal(run_host(f4_host[build], tmp_path, wblob, xw, 7), reference_forward(wide_net, xw))


@pytest.fixture(scope="session")
def tall_net() -> IntegerMLP:
    """13 -> 700 -> 256 -> 3: CSC columns longer than 255 rows (row gaps of several vu8 bytes, the
    C kernel's general path) and, with 256 outputs, a column whose only row is 255 (a two-byte
    first row on the one-byte-gap path)."""
    rng = np.random.default_rng(21)
    w1 = np.zeros((700, 13), np.int8)
    for j in range(13):
        rows = rng.choice(700, size=rng.integers(1, 40), replace=False)
        w1[rows, j] = rng.choice(np.array([-7, -3, 2, 5, 9], np.int8), size=len(rows))
    w1[[0, 699], 0] = [4, 4]  # gap 698: three vu8 bytes
    w2 = rng.choice(np.array([0, 0, 0, 0, -2, 1, 3], np.int8), size=(256, 700)).astype(np.int8)
    w2[:, 5] = 0
    w2[255, 5] = 6
    w3 = rng.choice(np.array([0, -1, 1], np.int8), size=(3, 256)).astype(np.int8)
    b1 = rng.integers(-500, 500, 700)
    b1[5] = 2000  # input 5 of tall_2 (the row-255 column) is mostly above the zero point
    return IntegerMLP([
        IntegerDense("tall_1", w1, b1, -20, -128, 1300000000, -4, -128, 127),
        IntegerDense("tall_2", w2, rng.integers(-1500, -500, 256), -128, -128, 1300000000, -5, -128, 127),
        IntegerDense("tall_3", w3, rng.integers(-50, 50, 3), -128, 9, 1300000000, 0, -128, 127),
    ])


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_tall_layers(f4_host, tmp_path, tall_net, layout):
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, size=(40, 13)).astype(np.int8)
    x[rng.random(x.shape) < 0.3] = -20
    blob = F.write_blob(tall_net, layout)
    assert F.write_blob(F.blob_to_network(blob), layout) == blob
    want = reference_forward(tall_net, x)
    assert len(np.unique(want)) > 3
    assert np.array_equal(S.run(blob, x), want)
    for build in BUILDS:
        assert np.array_equal(run_host(f4_host[build], tmp_path, blob, x, 3), want)
    if layout == "csc":
        section = F.encode_csc(tall_net.layers[0].codes())
        assert b"\xff\xff" in section  # multi-byte row gaps are exercised
        h = reference_dense(tall_net.layers[0], x)
        assert np.mean(h[:, 5] != tall_net.layers[1].input_zero_point) > 0.2  # the row-255 column is used


#: FORMAT.md's CSC example: 5 x 4 weights, codebook [0, -2, 1, 3]
CSC_EXAMPLE_W = np.array([[0, 3, 0, -2], [0, 3, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], np.int8)
CSC_EXAMPLE_BYTES = bytes.fromhex("04 0400 01 02" "05 0800 02 00 00" "00" "06 0600 01 00 01 04".replace(" ", ""))


def _csc_example_layer(bias=(100, -50, 7, 0, 3)) -> IntegerDense:
    return IntegerDense("ex", CSC_EXAMPLE_W, np.array(bias), -128, -5, 1 << 30, -3, -128, 127)


def _one_layer_blob(layer: IntegerDense, layout: str, weights: bytes, nnz: int) -> bytes:
    """A one-layer blob of ``layer`` with the weights section replaced (weights_size, nnz,
    total_size and crc32 fixed)."""
    blob = F.write_blob(IntegerMLP([layer]), layout)
    e = F.unpack_layer_entry(blob, F.HEADER_SIZE)
    body = bytearray(blob[: e["weights_offset"]] + weights)
    body += b"\0" * (-len(body) % 4)
    b = _entry_field(bytes(body), 0, "weights_size", len(weights))
    b = _entry_field(b, 0, "nnz", nnz)
    h = F.unpack_header(b)
    h["total_size"] = len(b)
    b = bytearray(b)
    b[: F.HEADER_SIZE] = F.pack_header(**h)
    return with_crc(bytes(b))


def _csc_example_blob(weights: bytes, nnz: int = 5, bias=(100, -50, 7, 0, 3)) -> bytes:
    """A one-layer CSC blob of the spec example with the weights section replaced."""
    return _one_layer_blob(_csc_example_layer(bias), "csc", weights, nnz)


def test_csc_encoding_matches_spec_example():
    layer = _csc_example_layer()
    assert list(layer.codebook()) == [0, -2, 1, 3]
    assert F.encode_csc(layer.codes()) == CSC_EXAMPLE_BYTES
    assert F.write_blob(IntegerMLP([layer]), "csc") == _csc_example_blob(CSC_EXAMPLE_BYTES)
    assert np.array_equal(F.read_blob(_csc_example_blob(CSC_EXAMPLE_BYTES)).layers[0].weights(), CSC_EXAMPLE_W)


CSC_CRAFTED = [  # (name, weights section, nnz, Python status, Python message, C status)
    ("row_out_of_range", "04 0400 01 05" "05 0800 02 00 00" "00" "06 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS", "row 5 >= 5|exceeds", "F4_ERR_WEIGHTS"),
    ("gap_past_last_row", "04 0400 01 02" "05 0800 02 00 04" "00" "06 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS", "row 5 >= 5|exceeds", "F4_ERR_WEIGHTS"),
    ("count_zero", "04 0400 00 02" "05 0800 02 00 00" "00" "06 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS", "count: must be >= 1", "F4_ERR_WEIGHTS"),
    ("empty_value_mask", "02 0000" "05 0800 02 00 00" "00" "06 0600 01 00 01 04", 4, "F4_ERR_WEIGHTS", "value_mask is 0", "F4_ERR_WEIGHTS"),
    ("value_mask_bit0", "04 0500 01 02" "05 0800 02 00 00" "00" "06 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS", "bit 0", "F4_ERR_WEIGHTS"),
    ("value_mask_ge_n_values", "04 1400 01 02" "05 0800 02 00 00" "00" "06 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS", "n_values", "F4_ERR_WEIGHTS"),
    ("column_size_short", "04 0400 01 02" "04 0800 02 00 00" "00" "06 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS", "past the end", "F4_ERR_WEIGHTS"),
    ("column_size_long", "04 0400 01 02" "06 0800 02 00 00 00" "06 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS", "before column_size", "F4_ERR_WEIGHTS"),
    ("column_size_past_end", "04 0400 01 02" "05 0800 02 00 00" "00" "07 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS", "past the end", "F4_ERR_WEIGHTS"),
    ("missing_column", "04 0400 01 02" "05 0800 02 00 00" "00", 3, "F4_ERR_WEIGHTS", "column 3 column_size", "F4_ERR_WEIGHTS"),
    ("trailing_byte", "04 0400 01 02" "05 0800 02 00 00" "00" "06 0600 01 00 01 04" "00", 5, "F4_ERR_WEIGHTS", "trailing", "F4_ERR_WEIGHTS"),
    ("nnz_mismatch", "04 0400 01 02" "05 0800 02 00 00" "00" "06 0600 01 00 01 04", 6, "F4_ERR_WEIGHTS", "nnz says 6", "F4_ERR_WEIGHTS"),
    ("long_vu8_column_size", "ff 00", 0, "F4_ERR_WEIGHTS", "column_size", "F4_ERR_WEIGHTS"),
    # a row listed under two values of a column (f4_check_distinct in C)
    ("row_in_two_groups", "04 0400 01 02" "06 0a00 01 00 01 00" "00" "06 0600 01 00 01 04", 5, "F4_ERR_WEIGHTS",
     "row 0 appears in two groups", "F4_ERR_WEIGHTS"),
]


@pytest.mark.parametrize("name, hexbytes, nnz, status, message, c_status", CSC_CRAFTED, ids=[c[0] for c in CSC_CRAFTED])
def test_csc_crafted_errors(f4_host, tmp_path, name, hexbytes, nnz, status, message, c_status):
    blob = _csc_example_blob(bytes.fromhex(hexbytes.replace(" ", "")), nnz=nnz)
    with pytest.raises(F.FormatError, match=message) as e:
        F.read_blob(blob)
    assert e.value.status == status
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, [blob]) == [c_status]


def test_csc_bias_range(f4_host, tmp_path):
    """CSC stores the TFLite bias and adds w * (x - zp_in), |x - zp_in| <= 128 * max(127 - zp, zp + 128):
    the limit is 2^31 - 1 - 128 * 255 * in at zp_in = -128 (the folded layouts: 16384 * in)."""
    assert F.bias_limit("csc", 4, -128) == 2**31 - 1 - 4 * 128 * 255
    assert F.bias_limit("csc", 4, 0) == F.bias_limit("cer", 4, 0) == 2**31 - 1 - 4 * 16384
    assert F.bias_limit("csc", 4, 127) == 2**31 - 1 - 4 * 128 * 255
    # reader: the last accepted and the first rejected bias, in Python and C
    limit = F.bias_limit("csc", 4, -128)
    ok = _csc_example_blob(CSC_EXAMPLE_BYTES, bias=(-limit, 0, limit, 0, 0))
    bad = bytearray(ok)
    struct.pack_into("<i", bad, F.unpack_layer_entry(ok, F.HEADER_SIZE)["bias_offset"] + 4, limit + 1)
    bad = with_crc(bytes(bad))
    assert py_status(ok) == "F4_OK" and py_status(bad) == "F4_ERR_BIAS"
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, [ok, bad]) == ["F4_OK", "F4_ERR_BIAS"]
    # at the limit, the extreme inputs still give TFLM's accumulator (no int32 overflow), C == Python
    w = np.array([[-128, -128, -128, -128]], np.int8)
    for zp, x0, b in ((-128, 127, -limit), (127, -128, limit)):
        layer = IntegerDense("edge", w, np.array([b]), zp, 0, 1 << 30, -31, -128, 127)
        blob = F.write_blob(IntegerMLP([layer]), "csc")
        x = np.full((1, 4), x0, np.int8)
        acc = b + int(w.astype(np.int64).sum()) * (x0 - zp)
        assert abs(acc) == 2**31 - 1  # the accumulator reaches +-(2^31 - 1)
        want = reference_forward(IntegerMLP([layer]), x)
        assert np.array_equal(S.run(blob, x), want)
        for build in BUILDS:
            assert np.array_equal(run_host(f4_host[build], tmp_path, blob, x, 1), want)
    # writer: a bias within the folded limit but beyond CSC's
    layer = IntegerDense("big", np.array([[1, -1, 0, 0]], np.int8), np.array([2**31 - 1 - 4 * 20000]), -128, 0, 1 << 30, 0, -128, 127)
    F.write_blob(IntegerMLP([layer]), "cer")
    with pytest.raises(ValueError, match="bias .* of layout csc"):
        F.write_blob(IntegerMLP([layer]), "csc")


def test_smallest_unchanged_by_csc(net, wide_net):
    """"smallest" still picks by bytes; on these layers (in >= out) CSC and CSCI are larger than
    CER, so the choice and the bytes are what they were before the column layouts existed."""
    for n in (net, wide_net):
        sizes = [F.layout_sizes(l.codes()) for l in n.layers]
        assert all(min(s["csc"], s["csci"]) > min(s["dense4"], s["bitmap"], s["cer"]) for s in sizes)
        chosen = [min(("dense4", "bitmap", "cer"), key=lambda k: (s[k], F.LAYOUT_IDS[k])) for s in sizes]
        assert F.write_blob(n, "smallest") == F.write_blob(n, chosen)
    # a layer with many more outputs than inputs: a column layout is the smallest and is chosen
    tall = IntegerDense("tall", np.eye(200, 3, dtype=np.int8) * 3, np.zeros(200), -128, 0, 1 << 30, 0, -128, 127)
    assert F.read_blob(F.write_blob(IntegerMLP([tall]), "smallest")).layers[0].layout_name in ("csc", "csci")


# ---------------------------------------------------------------------------------------------
# an index in two groups of a CER row (CSC column): F4_ERR_WEIGHTS in Python and C


def _index_groups(line: np.ndarray) -> dict:
    """code -> sorted indices of one CER row (CSC column) of codes."""
    return {int(k): [int(i) for i in np.flatnonzero(line == k)] for k in np.unique(line) if k != 0}


def _encode_index_groups(groups: dict) -> bytes:
    """value_mask, then per code ascending count and gaps, from explicit index lists (which, unlike
    the codes of a matrix, can list an index under two codes)."""
    out = bytearray(struct.pack("<H", sum(1 << k for k in groups)))
    for k in sorted(groups):
        out += F.encode_vu8(len(groups[k]))
        prev = -1
        for i in groups[k]:
            out += F.encode_vu8(i - prev - 1)
            prev = i
    return bytes(out)


def _weights_from_groups(layout: str, lines) -> bytes:
    if layout == "cer":
        return b"".join(_encode_index_groups(g) for g in lines)
    out = bytearray()
    for g in lines:  # csc: column_size, then the groups of a non-empty column
        body = _encode_index_groups(g) if g else b""
        out += F.encode_vu8(len(body)) + body
    return bytes(out)


def _lines(layer: IntegerDense, layout: str) -> list:
    codes = layer.codes()
    return [_index_groups(line) for line in (codes if layout == "cer" else codes.T)]


def _with_duplicate(lines: list, line: int, a: int, b: int, index: int, drop: int) -> list:
    """``lines`` with ``index`` (listed under code a) also listed under code b, in place of b's
    ``drop``-th index: the counts, hence nnz, stay right and the duplicate is the only defect."""
    out = [dict(g) for g in lines]
    g = {k: list(v) for k, v in out[line].items()}
    assert index in g[a] and index not in g[b]
    del g[b][drop]
    g[b] = sorted(g[b] + [index])
    out[line] = g
    return out


def _dup_blob(layer: IntegerDense, layout: str, lines: list) -> bytes:
    return _one_layer_blob(layer, layout, _weights_from_groups(layout, lines), sum(len(v) for g in lines for v in g.values()))


@pytest.fixture(scope="session")
def many_groups_layer() -> IntegerDense:
    """8 rows x 700 columns, 15 non-zero values (the most a blob holds), all 15 in each of rows
    0-6 (15 groups per row); rows span several 256-index windows of the C check, row 0 lists
    columns 0 and 699, row 7 has four entries in three groups far apart (gaps of several vu8
    bytes)."""
    rng = np.random.default_rng(17)
    values = np.array([-7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8], np.int8)
    w = np.where(rng.random((8, 700)) < 0.4, rng.choice(values, size=(8, 700)), 0).astype(np.int8)
    w[:, :15] = values  # every value present in every row
    w[0, [0, 699]] = [8, -7]
    w[7] = 0
    w[7, [3, 300, 301, 699]] = [5, -1, 5, 8]
    return IntegerDense("many", w, rng.integers(-1000, 1000, 8), -5, 2, 1300000000, -8, -128, 127)


@pytest.mark.parametrize("layout", ["cer", "csc"])
def test_many_groups_valid(f4_host, tmp_path, many_groups_layer, layout):
    """15 groups per row (CER) / up to 15 per column (CSC, the layer transposed) and no index
    repeated: both readers accept, the C output equals the slow reference."""
    layer = many_groups_layer if layout == "cer" else IntegerDense(
        "many_t", many_groups_layer.weights.T.copy(), np.zeros(700, np.int64), -5, 2, 1300000000, -8, -128, 127)
    lines = _lines(layer, layout)
    assert max(len(g) for g in lines) == 15
    blob = F.write_blob(IntegerMLP([layer]), layout)
    assert _dup_blob(layer, layout, lines) == blob  # the group-list encoder is the spec's
    assert py_status(blob) == "F4_OK"
    x = np.random.default_rng(2).integers(-128, 128, size=(20, layer.in_features)).astype(np.int8)
    want = reference_forward(IntegerMLP([layer]), x)
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, [blob]) == ["F4_OK"]
        assert np.array_equal(run_host(f4_host[build], tmp_path, blob, x, layer.out_features), want)


def _dup_cases(layer: IntegerDense, layout: str, n_random: int, seed: int) -> list:
    """(name, blob): duplicates at chosen places, then at random ones."""
    lines = _lines(layer, layout)
    cases = []
    for line, g in enumerate(lines):
        if len(g) < 2:
            continue
        ks = sorted(g)
        lo = min(ks, key=lambda k: g[k][0])  # the group holding the line's smallest index
        hi = max(ks, key=lambda k: g[k][-1])  # ... and its largest
        other = lambda k: ks[0] if k != ks[0] else ks[-1]
        cases += [
            (f"{line}: smallest index", _with_duplicate(lines, line, lo, other(lo), g[lo][0], 0)),
            (f"{line}: largest index", _with_duplicate(lines, line, hi, other(hi), g[hi][-1], -1)),
            (f"{line}: first and last code", _with_duplicate(lines, line, ks[0], ks[-1], g[ks[0]][-1], 0)),
        ]
    rng = np.random.default_rng(seed)
    multi = [i for i, g in enumerate(lines) if len(g) >= 2]
    for _ in range(n_random):
        line = int(rng.choice(multi))
        a, b = (int(k) for k in rng.choice(sorted(lines[line]), 2, replace=False))
        index = int(rng.choice(lines[line][a]))
        cases.append((f"{line}: random {a}->{b} index {index}",
                      _with_duplicate(lines, line, a, b, index, int(rng.integers(len(lines[line][b]))))))
    return [(name, _dup_blob(layer, layout, l)) for name, l in cases]


@pytest.mark.parametrize("layout", ["cer", "csc"])
def test_index_in_two_groups_rejected(f4_host, tmp_path, net, wide_net, many_groups_layer, layout):
    """A column (CER) / row (CSC) listed under two values of the same row (column), everything else
    valid: F4_ERR_WEIGHTS from format.py ("appears in two groups") and from f4_prepare and
    f4_required_scratch, -O2 and ASan/UBSan builds; the untouched blobs pass."""
    layers = [many_groups_layer, net.layers[0], wide_net.layers[1]]
    if layout == "csc":
        w = many_groups_layer.weights.T.copy()
        layers[0] = IntegerDense("many_t", w, np.zeros(700, np.int64), -5, 2, 1300000000, -8, -128, 127)
    names, cases = [], []
    for i, layer in enumerate(layers):
        for name, blob in _dup_cases(layer, layout, n_random=40, seed=i):
            names.append(f"layer {i} line {name}")
            cases.append(blob)
        cases.append(F.write_blob(IntegerMLP([layer]), layout))
        names.append(f"layer {i} valid")
    assert len(cases) > 150
    for name, blob in zip(names, cases):
        if name.endswith("valid"):
            assert py_status(blob) == "F4_OK", name
        else:
            with pytest.raises(F.FormatError, match="appears in two groups") as e:
                F.read_blob(blob)
            assert e.value.status == "F4_ERR_WEIGHTS", name
    want = [py_status(c) for c in cases]
    for build in BUILDS:
        got = fuzz_statuses(f4_host[build], tmp_path, cases)
        assert got == want, [(n, g, w) for n, g, w in zip(names, got, want) if g != w][:5]

# ---------------------------------------------------------------------------------------------
# the export target (Keras + QuantizedKernel -> tflm convert -> blob -> harness)


def small_request(name="f4t", n_test=60, hidden=(24, 16), input_shape=(8, 8, 1), **options):
    """A 64-24-16-4 MLP on (8, 8, 1) inputs (other widths: ``hidden``, ``input_shape``), kernels
    snapped to the 4-bit symmetric grid (so the TFLM converter stores INT4 weights whose integers
    are the grid levels)."""
    import tensorflow as tf

    from ecqx_tf.quantized import QuantizedKernel
    from firmware_export.registry import ExportRequest

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input(input_shape), tf.keras.layers.Flatten(),
        *[tf.keras.layers.Dense(h, activation="relu") for h in hidden],
        tf.keras.layers.Dense(4),
    ])
    rng = np.random.default_rng(0)
    quant = {}
    levels = np.arange(-7, 8, dtype=np.int32)
    for layer in model.layers:
        if not isinstance(layer, tf.keras.layers.Dense):
            continue
        w = layer.kernel.numpy()
        step = float(np.float32(np.abs(w).max() / 7))
        k = np.clip(np.round(w / step), -7, 7).astype(np.int32)
        k[rng.random(k.shape) < 0.6] = 0
        k.reshape(-1)[:2] = [-7, 7]
        qk = QuantizedKernel(layer.name, 4, "symmetric", step, levels, k + 7)
        layer.kernel.assign(qk.values())
        quant[layer.name] = qk
    x = rng.random((100 + n_test, *input_shape), dtype=np.float32)
    y = rng.integers(0, 4, size=100 + n_test)
    return ExportRequest(model=model, quant=quant, name=name, representative=x[:100],
                         x_test=x[100:], y_test=y[100:], options=dict(options))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    from firmware_export.fantastic4.target import FantastIC4Target
    from firmware_export.registry import TARGETS

    assert TARGETS.get("fantastic4") is FantastIC4Target
    out = tmp_path_factory.mktemp("f4_export")
    request = small_request()
    manifest = FantastIC4Target().export(request, out)
    return out, manifest, request


def test_target_export(exported):
    from firmware_export.tflm.flatbuffer import fully_connected_layers

    out, manifest, request = exported
    name = request.name
    for f in (f"{name}_f4.bin", f"{name}_f4.h", f"{name}_f4.c", "f4_model_data.h", "main.c", "Makefile",
              "f4_runtime.c", "f4_runtime.h", "f4_format.h", "f4_intmath.h", "FORMAT.md",
              "golden_inputs.bin", "golden_outputs.bin", f"{name}.tflite", "fantastic4.json"):
        assert (out / f).is_file(), f
    assert set(manifest["files"]) == {p.name for p in out.iterdir()}
    tfl = (out / f"{name}.tflite").read_bytes()
    # the TFLM exporter stored INT4 weights equal to the ECQ grid levels; the blob holds the same integers
    fcs = fully_connected_layers(tfl)
    assert [l.weight_dtype for l in fcs] == ["INT4"] * 3
    net = F.blob_to_network((out / f"{name}_f4.bin").read_bytes())
    for l, fc, (lname, qk) in zip(net.layers, fcs, request.quant.items()):
        assert np.array_equal(l.weights, fc.weights)
        assert np.array_equal(l.weights, qk.integers().T)
    c_src = (out / f"{name}_f4.c").read_text()
    assert f"F4_ALIGN16 const unsigned char g_{name}_f4_model_data[]" in c_src
    assert manifest["golden"]["samples"] == 60
    assert manifest["ok"] and manifest["python_equals_tflm"]
    for row in manifest["layers"]:
        bpw = row["bytes_per_weight"]
        assert bpw["entropy_bound"] <= min(bpw["dense4"], bpw["bitmap"], bpw["cer"]) + 1e-9
        assert bpw["dense4"] == pytest.approx(0.5, abs=0.01)
    # deterministic: a second export writes identical bytes
    from firmware_export.fantastic4.target import FantastIC4Target

    out2 = out.parent / "again"
    FantastIC4Target().export(exported[2], out2)
    for f in (f"{name}_f4.bin", f"{name}_f4.c", "golden_outputs.bin", f"{name}.tflite"):
        assert (out / f).read_bytes() == (out2 / f).read_bytes(), f


def test_target_simulate(exported):
    from firmware_export.fantastic4.target import FantastIC4Target

    out, manifest, _ = exported
    result = FantastIC4Target().simulate(out)
    assert result["ok"] and result["samples"] == 60
    assert result["c_equals_python"] and result["python_equals_tflm"] and result["harness_exit_code"] == 0


@pytest.mark.parametrize("layout", ["cer", "csc"])
def test_target_tflite_bytes_option(tmp_path, mlp_tflite, layout):
    from firmware_export.fantastic4.target import FantastIC4Target

    request = small_request(tflite_bytes=mlp_tflite, f4_layout=layout)
    request.x_test = np.random.default_rng(3).random((40, 64), dtype=np.float32)
    request.y_test = None
    manifest = FantastIC4Target().export(request, tmp_path)
    assert manifest["layout"] == layout and all(r["layout"] == layout for r in manifest["layers"])
    assert FantastIC4Target().simulate(tmp_path)["ok"]
    with pytest.raises(ValueError, match="f4_layout"):
        FantastIC4Target().export(small_request(tflite_bytes=mlp_tflite, f4_layout="csr"), tmp_path / "x")


def test_target_harness_reports_mismatch(exported, tmp_path):
    out, manifest, request = exported
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    golden = bytearray((work / "golden_outputs.bin").read_bytes())
    golden[5] ^= 1
    (work / "golden_outputs.bin").write_bytes(bytes(golden))
    r = subprocess.run(["make", "-s", "-C", str(work), "check"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "mismatch: sample 1 output 1" in r.stdout and "1 mismatching samples" in r.stdout


def test_target_simulate_reports_mismatch(exported, tmp_path):
    from firmware_export.fantastic4.target import FantastIC4Target

    out, _, _ = exported
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    golden = bytearray((work / "golden_outputs.bin").read_bytes())
    golden[0] ^= 0x40
    (work / "golden_outputs.bin").write_bytes(bytes(golden))
    result = FantastIC4Target().simulate(work)
    assert not result["ok"] and not result["python_equals_golden"] and result["harness_exit_code"] == 1


def test_cli_export_and_simulate(tmp_path, capsys):
    """ecqx-export MODEL.keras --target fantastic4, then ecqx-simulate DIR (a float Keras model
    whose kernels are already snapped: the TFLM exporter's PTQ keeps <= 15 values per layer)."""
    from cli import export as cli

    request = small_request()
    path = tmp_path / "snapped.keras"
    request.model.save(path)
    out = tmp_path / "f4_out"
    rc = cli.main([str(path), "--target", "fantastic4", "--out", str(out), "--data", "digits", "--max-eval", "50",
                   "--calib", "64", "--f4-layout", "bitmap"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "bytes/weight" in printed.out and (out / "manifest.json").is_file() and (out / "snapped_f4.bin").is_file()
    assert F.read_blob((out / "snapped_f4.bin").read_bytes()).layers[0].layout_name == "bitmap"
    assert cli.simulate_main([str(out)]) == 0
    assert "c_equals_python" in capsys.readouterr().out


def test_cli_layout_choices_include_csc():
    import argparse

    from firmware_export.fantastic4.target import LAYOUT_CHOICES, FantastIC4Target

    parser = argparse.ArgumentParser()
    FantastIC4Target().add_arguments(parser)
    assert parser.parse_args(["--f4-layout", "csc"]).f4_layout == "csc"
    assert set(LAYOUT_CHOICES) == {"auto", "smallest", *F.LAYOUT_IDS}
    args = parser.parse_args([])
    assert args.f4_layout == "auto" and args.f4_objective == "balanced"
    assert parser.parse_args(["--f4-objective", "size"]).f4_objective == "size"


# ---------------------------------------------------------------------------------------------
# int32 overflow outside the accumulators: y + output_zero_point, the requantization's left shift


def _edge_layer(w: int, bias: int, multiplier: int, shift: int, zp_out: int, in_features: int = 1,
                zp_in: int = 0) -> IntegerDense:
    return IntegerDense("edge", np.full((1, in_features), w, np.int8), np.array([bias]), zp_in, zp_out,
                        multiplier, shift, -128, 127)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_output_zero_point_does_not_overflow(f4_host, tmp_path, layout):
    """Issue 11 item 4: one layer, weight -128, bias at the limit F4_ERR_BIAS allows, multiplier
    2^31 - 1, shift 0, output zero point 127, input -128: acc = 2^31 - 1, the requantized value is
    2^31 - 2, and y + output_zero_point leaves int32 (UBSan: signed overflow; -O2 gave -128, the
    simulator 127). Both readers accept the blob; C (-O2 and ASan/UBSan) == simulator == the slow
    reference, which computes y + output_zero_point exactly (127), and the mirror case at the
    negative end (-128)."""
    limit = F.bias_limit(layout, 1, 0)
    cases = [
        (_edge_layer(-128, limit, 2**31 - 1, 0, 127), -128, 127),
        (_edge_layer(-128, -limit, 2**31 - 1, 0, -128), 127, -128),
        (_edge_layer(-128, limit, 2**31 - 1, 0, -128), -128, 127),  # y + zp fits: saturates at 127
    ]
    for layer, x0, want in cases:
        blob = F.write_blob(IntegerMLP([layer]), layout)
        assert py_status(blob) == "F4_OK"
        x = np.full((1, 1), x0, np.int8)
        got = S.run(blob, x)
        assert got.tolist() == [[want]] and np.array_equal(reference_forward(IntegerMLP([layer]), x), got)
        for build in BUILDS:
            assert fuzz_statuses(f4_host[build], tmp_path, [blob]) == ["F4_OK"]
            assert np.array_equal(run_host(f4_host[build], tmp_path, blob, x, 1), got), (layout, build, x0)


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_extreme_accumulators_and_left_shift(f4_host, tmp_path, layout):
    """The other int32 edges of the datapath on blobs both readers accept, C == simulator on every
    input: the accumulator (row layouts: partial sums S[k] and codebook[k] * S[k]; CSC: acc[r])
    at +-(2^31 - 1) with 300 inputs at the bias limit, and positive output shifts (the
    requantization's x * 2^shift wraps modulo 2^32 as in TFLite's int32 code and intmath.py)
    with the output zero point at both ends."""
    rng = np.random.default_rng(31)
    n = 300
    limit = F.bias_limit(layout, n, 0)
    layers = [
        _edge_layer(-128, limit, 2**31 - 1, 0, 127, n),
        _edge_layer(-128, -limit, 2**31 - 1, 0, -128, n),
        _edge_layer(-128, limit, 1 << 30, 30, 127, n),
        _edge_layer(-128, -limit, (1 << 31) - 1, 30, -128, n),
        _edge_layer(-128, 12345, 1518500250, 17, 5, n),
    ]
    x = rng.integers(-128, 128, size=(64, n)).astype(np.int8)
    x[0], x[1], x[2] = -128, 127, 0
    for layer in layers:
        blob = F.write_blob(IntegerMLP([layer]), layout)
        assert py_status(blob) == "F4_OK"
        want = reference_forward(IntegerMLP([layer]), x)
        assert np.array_equal(S.run(blob, x), want)
        for build in BUILDS:
            assert np.array_equal(run_host(f4_host[build], tmp_path, blob, x, 1), want), (layout, build, layer)
    acc = limit + 128 * 128 * n  # x = -128, w = -128 everywhere
    assert acc == 2**31 - 1


def test_target_large_model_uses_measured_arena(tmp_path):
    """Issue 11 item 5: a 512-640-4 INT4 MLP (330 k weights): TFLM's reference FULLY_CONNECTED
    unpacks the 327,680-weight INT4 filter into the arena, more than the 256 KiB the target used
    to give the interpreter ("failed to allocate tensors"). The export measures the arena and
    checks the simulator against TFLM; simulate() does too."""
    from firmware_export.fantastic4.target import FantastIC4Target

    request = small_request(name="big", n_test=6, hidden=(640,), input_shape=(512,))
    manifest = FantastIC4Target().export(request, tmp_path)
    assert manifest["tflm_arena"]["minimum"] > 256 * 1024
    assert manifest["tflm_arena"]["used"] >= manifest["tflm_arena"]["minimum"]
    assert manifest["ok"] and manifest["python_equals_tflm"]
    result = FantastIC4Target().simulate(tmp_path)
    assert result["ok"] and result["samples"] == 6


#: FORMAT.md's CSCI example: the CSC example's weights
CSCI_EXAMPLE_BYTES = bytes.fromhex("01010000" "02030004" "1202" "230001" "11001204")


def test_csci_encoding_matches_spec_example():
    layer = _csc_example_layer()
    assert F.encode_csci(layer.codes()) == CSCI_EXAMPLE_BYTES
    blob = F.write_blob(IntegerMLP([layer]), "csci")
    assert _one_layer_blob(layer, "csci", CSCI_EXAMPLE_BYTES, 5) == blob
    assert np.array_equal(F.read_blob(blob).layers[0].weights(), CSC_EXAMPLE_W)


def _csci_long_layer() -> IntegerDense:
    """40 rows x 3 columns: column 0 has 32 rows of one value (chunks of 15, 15, 2), column 1 is
    empty, column 2 mixes two values."""
    w = np.zeros((40, 3), np.int8)
    w[:32, 0] = 3
    w[[1, 5, 39], 2] = [-2, 3, -2]
    return IntegerDense("long", w, np.arange(40) - 20, -128, 0, 1 << 30, -5, -128, 127)


CSCI_CRAFTED = [  # (name, weights section as hex, nnz, message)
    ("row_bytes", "02010000" "02030004" "1202" "230001" "11001204", 5, "row_bytes is 2"),
    ("length_bytes_3", "01030000" "02030004" "1202" "230001" "11001204", 5, "length_bytes 3"),
    ("length_bytes_wide", "01020000" "0200030000000400" "1202" "230001" "11001204", 5, "length_bytes is 2, must be 1"),
    ("reserved", "01010100" "02030004" "1202" "230001" "11001204", 5, "reserved"),
    ("lengths_sum", "01010000" "02030005" "1202" "230001" "11001204", 5, "add up to"),
    ("count_zero", "01010000" "02030004" "0202" "230001" "11001204", 5, "count >= 1"),
    ("code_zero", "01010000" "02030004" "1002" "230001" "11001204", 5, "code must be in"),
    ("code_too_big", "01010000" "02030004" "1402" "230001" "11001204", 5, "code must be in"),
    ("codes_descend", "01010000" "02030004" "1202" "230001" "12041100", 5, "codes must ascend"),
    ("row_out_of_range", "01010000" "02030004" "1205" "230001" "11001204", 5, "row 5 >= 5"),
    ("rows_not_increasing", "01010000" "02030004" "1202" "230100" "11001204", 5, "strictly increase"),
    ("row_in_two_codes", "01010000" "02030004" "1202" "230001" "11001200", 5, "appears in two groups"),
    ("chunk_past_column", "01010000" "02030004" "1202" "330001" "11001204", 5, "past the column end"),
    ("nnz", "01010000" "02030004" "1202" "230001" "11001204", 6, "nnz says 6"),
    ("short_section", "0101", 5, "shorter than"),
]


@pytest.mark.parametrize("name, hexbytes, nnz, message", CSCI_CRAFTED, ids=[c[0] for c in CSCI_CRAFTED])
def test_csci_crafted_errors(f4_host, tmp_path, name, hexbytes, nnz, message):
    blob = _one_layer_blob(_csc_example_layer(), "csci", bytes.fromhex(hexbytes), nnz)
    with pytest.raises(F.FormatError, match=message) as e:
        F.read_blob(blob)
    assert e.value.status == "F4_ERR_WEIGHTS"
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, [blob]) == ["F4_ERR_WEIGHTS"]


def test_csci_chunks_of_15(f4_host, tmp_path):
    """A value with 32 rows in a column: chunks of 15, 15 and 2 with the same code; a split that is
    not 15-first (chunks of 14 and 18...) is rejected; C == simulator == reference."""
    layer = _csci_long_layer()
    section = F.encode_csci(layer.codes())
    code3 = int(np.flatnonzero(layer.codebook() == 3)[0])
    assert section[4 + 3:].startswith(bytes([code3 | 15 << 4]) + bytes(range(15)) + bytes([code3 | 15 << 4]))
    blob = F.write_blob(IntegerMLP([layer]), "csci")
    x = np.random.default_rng(0).integers(-128, 128, size=(30, 3)).astype(np.int8)
    want = reference_forward(IntegerMLP([layer]), x)
    assert np.array_equal(S.run(blob, x), want)
    for build in BUILDS:
        assert np.array_equal(run_host(f4_host[build], tmp_path, blob, x, 40), want)
    # 14 + 18 rows instead of 15 + 15 + 2: same codes and rows, not the canonical split
    body = bytearray(section)
    col0 = body[4 + 3: 4 + 3 + section[4]]
    rows = list(range(32))
    alt = bytes([code3 | 14 << 4]) + bytes(rows[:14]) + bytes([code3 | 15 << 4]) + bytes(rows[14:29]) + \
        bytes([code3 | 3 << 4]) + bytes(rows[29:])
    assert len(alt) == len(col0)
    bad = bytes(body[: 4 + 3]) + alt + bytes(body[4 + 3 + len(col0):])
    bad_blob = _one_layer_blob(layer, "csci", bad, int(np.count_nonzero(layer.weights)))
    with pytest.raises(F.FormatError, match="continues only after a chunk of 15"):
        F.read_blob(bad_blob)
    for build in BUILDS:
        assert fuzz_statuses(f4_host[build], tmp_path, [bad_blob]) == ["F4_ERR_WEIGHTS"]


def test_cli_cortex_m_without_tools(exported, tmp_path, monkeypatch, capsys):
    """ecqx-simulate DIR --cortex-m m4 where the Arm toolchain is missing: exit 2 and one line
    saying what to install; a bad CPU name is refused by argparse (exit 2)."""
    from cli import export as cli
    from firmware_export.fantastic4 import cortex_m

    out, _, _ = exported
    work = tmp_path / "export"
    shutil.copytree(out, work)
    cli.write_manifest(work, {"tool": "ecqx-export", "target": "fantastic4", "name": "f4t"})
    monkeypatch.setattr(cortex_m, "missing_tools", lambda qemu=False: "missing arm-none-eabi-gcc: " + cortex_m.TOOLCHAIN_HINT)
    assert cli.simulate_main([str(work), "--cortex-m", "m4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ecqx-simulate: error: missing arm-none-eabi-gcc") and "apt-get install" in err[-1]
    with pytest.raises(SystemExit) as e:
        cli.simulate_main([str(work), "--cortex-m", "m7"])
    assert e.value.code == 2


# ---------------------------------------------------------------------------------------------
# layout choice (cost.py)


def test_choose_layouts_objectives(net, wide_net, tall_net, inputs):
    """size = the former "smallest" (bytes); speed = the least estimated instructions; balanced =
    the least instructions/I + bytes/B with I, B the all-fastest totals; layouts whose bias fails
    the overflow check are never chosen."""
    from firmware_export.fantastic4 import cost as C

    rng = np.random.default_rng(0)
    for n in (net, wide_net, tall_net):
        x = inputs if n is net else rng.integers(-128, 128, size=(40, n.input_features)).astype(np.int8)
        size, _ = C.choose_layouts(n, x, "size")
        assert F.write_blob(n, size) == F.write_blob(n, "smallest")
        speed, table = C.choose_layouts(n, x, "speed")
        balanced, _ = C.choose_layouts(n, x, "balanced")
        feats = C.network_features(n, x)
        fastest = []
        for layer, f, row, name in zip(n.layers, feats, table, speed):
            est = {k: C.predict(f, C.model_name(layer, k)) for k in F.LAYOUT_IDS}
            assert row["instructions_estimate"] == {k: round(v, 1) for k, v in est.items()}
            assert name == min(F.LAYOUT_IDS, key=lambda k: (est[k], F.LAYOUT_IDS[k]))
            fastest.append((est[name], row["bytes"][name]))
        i_ref, b_ref = sum(i for i, _ in fastest), sum(b for _, b in fastest)
        for layer, f, row, name in zip(n.layers, feats, table, balanced):
            score = {k: C.predict(f, C.model_name(layer, k)) / i_ref + row["bytes"][k] / b_ref for k in F.LAYOUT_IDS}
            assert name == min(F.LAYOUT_IDS, key=lambda k: (score[k], F.LAYOUT_IDS[k]))
            assert row["bytes"][name] == F.layout_sizes(layer.codes())[name] + 4 * layer.out_features
    big = IntegerDense("big", np.array([[1, -1, 0, 0]], np.int8), np.array([2**31 - 1 - 4 * 20000]), -128, 0, 1 << 30, 0, -128, 127)
    for objective in C.OBJECTIVES:
        names, _ = C.choose_layouts(IntegerMLP([big]), np.zeros((2, 4), np.int8), objective)
        assert names[0] not in ("csc", "csci")  # their bias limit is exceeded
    with pytest.raises(ValueError, match="objective must be one of"):
        C.choose_layouts(net, inputs, "fast")


def test_layer_features_slow(net, inputs):
    """The cost model's features against slow per-sample, per-column loops."""
    from firmware_export.fantastic4 import cost as C

    layer = net.layers[0]
    x = inputs[:7].copy()
    x[:, ::3] = layer.input_zero_point
    f = C.layer_features(layer, x)
    codes = layer.codes()
    adds = groups = chunks = 0
    for row in x:
        for j in range(layer.in_features):
            if row[j] == layer.input_zero_point:
                continue
            col = codes[:, j]
            adds += np.count_nonzero(col)
            for k in set(col[col != 0].tolist()):
                groups += 1
                chunks += -(-int(np.sum(col == k)) // 15)
    assert f["active"] == pytest.approx(np.sum(x != layer.input_zero_point) / 7)
    assert f["col_adds"] == pytest.approx(adds / 7) and f["col_groups"] == pytest.approx(groups / 7)
    assert f["col_chunks"] == pytest.approx(chunks / 7)
    assert f["row_groups"] == sum(len(set(r[r != 0].tolist())) for r in codes)
    assert f["nonzeros"] == np.count_nonzero(codes) and f["weights"] == codes.size


def test_fast_partial_sums_equal_reference():
    """Issue 15: the BLAS partial sums (float32) and column accumulation (float64) equal the int64
    specification, including the largest sums a blob allows (65,535 inputs of -128 or 127 under one
    code) and random layers with every codebook size."""
    rng = np.random.default_rng(8)
    cases = []
    w = np.full((2, 65535), 7, np.int8)
    w[1, ::2] = -7
    cases.append((IntegerDense("huge", w, np.zeros(2), 0, 0, 1 << 30, -20, -128, 127),
                  np.stack([np.full(65535, -128), np.full(65535, 127)]).astype(np.int8)))
    for i in range(12):
        n_in, n_out = int(rng.integers(1, 300)), int(rng.integers(1, 200))
        values = rng.choice(np.array([v for v in range(-60, 61) if v], np.int8), size=int(rng.integers(1, 16)), replace=False)
        w = np.where(rng.random((n_out, n_in)) < rng.random(), rng.choice(values, size=(n_out, n_in)), 0).astype(np.int8)
        x = rng.integers(-128, 128, size=(int(rng.integers(1, 20)), n_in)).astype(np.int8)
        cases.append((IntegerDense(f"r{i}", w, rng.integers(-10**6, 10**6, n_out), int(rng.integers(-128, 128)), 0,
                                   1 << 30, -10, -128, 127), x))
    for layer, x in cases:
        for layout in ("cer", "csc"):
            parsed = F.read_blob(F.write_blob(IntegerMLP([layer]), layout)).layers[0]
            if layout == "cer":
                assert np.array_equal(S.accumulate_partial_sums(parsed, x), S.accumulate_partial_sums_reference(parsed, x))
            else:
                acc, _, _ = S.accumulate_columns(parsed, x, S.init_accumulators(parsed, len(x)))
                d = x.astype(np.int64) - parsed.input_zero_point
                assert np.array_equal(acc, parsed.bias_section.astype(np.int64)[None, :] + d @ parsed.weights().astype(np.int64).T)
    assert S.accumulate_partial_sums_reference(F.read_blob(F.write_blob(IntegerMLP([cases[0][0]]), "cer")).layers[0],
                                               cases[0][1])[0, 1:, 0].min() == -128 * 65535
