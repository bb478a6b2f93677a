"""The FantastIC4 runtime on a Cortex-M instruction set (arm-none-eabi-gcc, unicorn, QEMU):
C-on-Arm == Python simulator == TFLM bit for bit on every layout and edge blob, for Cortex-M4 and
Cortex-M33; the exact block-hook instruction count against QEMU -icount + SysTick; flash, RAM
and stack figures; ``ecqx-simulate DIR --cortex-m``. Skipped (with what to install) on a machine
without the Arm toolchain or the emulator packages."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from firmware_export.fantastic4 import cortex_m as CM

_MISSING = CM.missing_tools()
if _MISSING:
    pytest.skip(_MISSING, allow_module_level=True)

from firmware_export.fantastic4 import format as F  # noqa: E402
from firmware_export.fantastic4 import simulate as S  # noqa: E402
from firmware_export.fantastic4.network import IntegerDense, IntegerMLP, reference_forward  # noqa: E402

LAYOUTS = list(F.LAYOUT_IDS)
CPUS = list(CM.CPUS)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A small fantastic4 export (64-24-16-4 on 8x8 inputs, 60 golden vectors), default layouts."""
    from test_fantastic4 import small_request

    from firmware_export.fantastic4.target import FantastIC4Target

    out = tmp_path_factory.mktemp("cm_export")
    FantastIC4Target().export(small_request(name="cm", n_test=60), out)
    return out


@pytest.fixture(scope="module")
def emulators(export_dir, tmp_path_factory):
    """One harness ELF per CPU (-O2), loaded in unicorn: runs any blob through run_blob."""
    emus = {}
    for cpu in CPUS:
        elf, _ = CM.build_harness(export_dir, cpu, tmp_path_factory.mktemp(f"cm_build_{cpu}"))
        emus[cpu] = CM.ArmEmulator(elf, cpu)
    return emus


def _nets():
    from test_fantastic4 import snapped_mlp_tflite

    rng = np.random.default_rng(5)
    w1 = np.zeros((41, 601), np.int8)
    vals = np.array([-128, -90, -33, -5, 1, 7, 19, 64, 127], np.int8)
    for r in range(1, 41):
        cols = rng.choice(601, size=rng.integers(1, 12), replace=False)
        w1[r, cols] = rng.choice(vals, size=len(cols))
    wide = IntegerMLP([
        IntegerDense("w1", w1, rng.integers(-3000, 3000, 41), 3, -128, 1518500250, -6, -128, 127),
        IntegerDense("w2", rng.choice(np.array([0, 0, -3, 2, 5], np.int8), size=(7, 41)), rng.integers(-300, 300, 7),
                     -128, 5, 1300000000, -5, -128, 127),
    ])
    # dense columns (chunks of 15 and continuation chunks), 300 rows (2-byte rows), zp 127
    w = rng.choice(np.array([0, -7, -1, 3, 6], np.int8), size=(300, 40), p=[0.2, 0.2, 0.2, 0.2, 0.2]).astype(np.int8)
    w[:, 0] = 3
    tall = IntegerMLP([
        IntegerDense("t1", w, rng.integers(-2000, 2000, 300), 127, -20, 1300000000, -9, -128, 127),
        IntegerDense("t2", rng.choice(np.array([0, 2, -4], np.int8), size=(9, 300)), rng.integers(-99, 99, 9),
                     -20, 0, 1400000000, -8, -128, 127),
    ])
    return {"ptq": IntegerMLP.from_tflite(snapped_mlp_tflite([64, 32, 16, 10], seed=0)), "wide": wide, "tall": tall}


@pytest.fixture(scope="module")
def nets():
    return _nets()


@pytest.mark.slow
@pytest.mark.parametrize("cpu", CPUS)
def test_every_layout_bit_exact_on_arm(emulators, nets, cpu):
    """Every layout, and mixed layouts, on three networks (1- and 2-byte rows, long columns,
    zero points -128 / 3 / 127, inputs often at the zero point): Arm == simulator == slow reference."""
    emu = emulators[cpu]
    rng = np.random.default_rng(3)
    for name, net in nets.items():
        x = rng.integers(-128, 128, size=(12, net.input_features)).astype(np.int8)
        x[rng.random(x.shape) < 0.5] = net.input_zero_point
        want = reference_forward(net, x)
        n = len(net.layers)
        for layout in LAYOUTS + [(["csci", "cer"] * n)[:n], (["dense4", "csci"] * n)[:n]]:
            blob = F.write_blob(net, layout)
            y, counts, st = emu.run_blob(blob, x, S.required_scratch(blob))
            assert st == 0, (name, layout)
            assert np.array_equal(y, want), (cpu, name, layout)
            assert np.array_equal(S.run(blob, x), want)
            assert counts.min() > 0


@pytest.mark.parametrize("cpu", CPUS)
def test_overflow_edges_on_arm(emulators, cpu):
    """Issue 11 item 4 on the target: accumulators at +-(2^31 - 1), the requantized value near
    2^31 plus the output zero point, positive shifts; every layout, Arm == simulator."""
    emu = emulators[cpu]
    n = 300
    x = np.random.default_rng(1).integers(-128, 128, size=(8, n)).astype(np.int8)
    x[0], x[1] = -128, 127
    for layout in LAYOUTS:
        limit = F.bias_limit(layout, n, 0)
        for bias, mult, shift, zp in ((limit, 2**31 - 1, 0, 127), (-limit, 2**31 - 1, 0, -128), (limit, 1 << 30, 30, 127)):
            layer = IntegerDense("edge", np.full((1, n), -128, np.int8), np.array([bias]), 0, zp, mult, shift, -128, 127)
            blob = F.write_blob(IntegerMLP([layer]), layout)
            y, _, st = emu.run_blob(blob, x, S.required_scratch(blob))
            assert st == 0 and np.array_equal(y, S.run(blob, x)), (cpu, layout, bias, shift)


def test_malformed_blob_rejected_on_arm(emulators):
    blob = bytearray(F.write_blob(_nets()["wide"], "csci"))
    blob[-5] ^= 0x40
    _, _, st = emulators["m4"].run_blob(bytes(blob), np.zeros((1, 601), np.int8), 4096)
    assert st == F.STATUS_VALUE["F4_ERR_CRC"]


@pytest.mark.slow
@pytest.mark.parametrize("cpu", CPUS)
def test_simulate_cortex_m(export_dir, cpu):
    """The --cortex-m check on every golden vector: Arm == Python == TFLM, counts, sizes, report."""
    rep = CM.simulate(export_dir, cpu)
    assert rep["ok"] and rep["arm_equals_python"] and rep["python_equals_tflm"] and rep["samples"] == 60
    ipi = rep["instructions_per_inference"]
    assert 0 < ipi["min"] <= ipi["mean"] <= ipi["max"]
    assert rep["instructions_per_addition"] > 1
    flash, ram = rep["flash_bytes"], rep["ram_bytes"]
    assert flash["blob"] >= len((export_dir / "cm_f4.bin").read_bytes())
    assert 1000 < flash["runtime_code"] < 16384 and flash["total"] == flash["runtime_code"] + flash["blob"]
    assert ram["scratch"] == S.required_scratch((export_dir / "cm_f4.bin").read_bytes())
    assert 0 < ram["stack_peak_invoke"] < 2048 and ram["blob_state_f4_model"] > 0 and ram["runtime_static"] == 0
    saved = json.loads(CM.report_path(export_dir, cpu).read_text())
    assert saved["instructions_per_inference"] == ipi and saved["cpu"] == cpu


def test_thumb_instruction_lengths():
    """16-bit and 32-bit Thumb encodings: MOVS r0,#1 (0x2001), LDR.W r0,[r1] (0xf8d1 0x0000),
    BL (0xf000 0xf800), IT EQ (0xbf08), ADD r0,r1 (0x4408)."""
    code = bytes.fromhex("0120" "d1f80000" "00f000f8" "08bf" "0844")
    assert CM.thumb_instruction_count(code) == 5
    assert CM.thumb_instruction_count(bytes.fromhex("0120")) == 1


@pytest.mark.slow
def test_block_count_against_qemu_icount(export_dir, tmp_path):
    """Two independent counts of f4_invoke: unicorn's block hook (exact) and QEMU -icount with a
    SysTick read around the call (calibrated on the target with a loop of known length, minus an
    empty call between the same reads). They agree within 16 instructions on every golden vector
    (the difference is the handful of instructions between the reads outside f4_invoke)."""
    if shutil.which(CM.QEMU) is None:
        pytest.skip(f"{CM.QEMU} not found: apt-get install qemu-system-arm")
    for cpu in CPUS:
        res = CM.run_golden(export_dir, cpu, build_dir=tmp_path / cpu)
        q = CM.qemu_cross_check(res["elf"], cpu)
        assert q["exit_code"] == 0 and "0 mismatching" in q["summary"]
        assert np.array_equal(q["outputs"], res["outputs"])
        diff = q["instructions"] - res["instructions"]
        assert np.abs(diff).max() <= 16, (cpu, q["ticks_per_instruction"], diff[:10])


def test_missing_tools_message(monkeypatch):
    monkeypatch.setattr(CM.shutil, "which", lambda name: None)
    msg = CM.missing_tools(qemu=True)
    assert msg.startswith("missing arm-none-eabi-gcc") and "apt-get install gcc-arm-none-eabi" in msg
    assert "\n" not in msg


@pytest.mark.slow
def test_cli_simulate_cortex_m(export_dir, tmp_path, capsys):
    """ecqx-simulate DIR --cortex-m m4 on an ecqx-export-style folder (manifest with checksums):
    exit 0, the counts and the bit-exact agreement printed, the report written."""
    from cli import export as cli

    work = tmp_path / "export"
    shutil.copytree(export_dir, work)
    for f in work.glob("cortex_m_*.json"):
        f.unlink()
    cli.write_manifest(work, {"tool": "ecqx-export", "target": "fantastic4", "name": "cm"})
    assert cli.simulate_main([str(work), "--cortex-m", "m4"]) == 0
    out = capsys.readouterr().out
    assert "arm == python" in out and "True on 60 golden vectors" in out
    assert "instructions, not cycles" in out and "per addition" in out and "runtime code" in out
    assert json.loads((work / "cortex_m_m4.json").read_text())["ok"]


@pytest.mark.slow
def test_cost_model_predicts_measured_instructions(emulators):
    """The cost model (fitted on other layers) against instructions counted on Cortex-M4 -O2 for
    new random layers: the CSCI assembly loop within 1% (its count is linear in the features up to
    the bias copy's remainder loop), the
    other kernels within 15% (median within 5%)."""
    from firmware_export.fantastic4 import cost as C

    rng = np.random.default_rng(123)
    errors = {}
    for i in range(6):
        n_in, n_out = int(rng.choice([40, 150, 300])), int(rng.choice([16, 100, 256]))
        w = np.where(rng.random((n_out, n_in)) < rng.choice([0.1, 0.3, 0.6]),
                     rng.choice(np.array([-5, -3, -1, 1, 2, 4, 6], np.int8), size=(n_out, n_in)), 0).astype(np.int8)
        layer = IntegerDense(f"r{i}", w, rng.integers(-999, 999, n_out), -128, -3, 1300000000, -8, -128, 127)
        x = rng.integers(-127, 128, size=(4, n_in)).astype(np.int8)
        x[rng.random(x.shape) < 0.5] = -128
        feats = C.layer_features(layer, x)
        for layout in LAYOUTS:
            blob = F.write_blob(IntegerMLP([layer]), layout)
            _, counts, st = emulators["m4"].run_blob(blob, x, S.required_scratch(blob))
            model = C.model_name(layer, layout)
            err = abs(C.predict(feats, model) - counts.mean()) / counts.mean()
            errors.setdefault(model, []).append(err)
    assert max(errors["csci"]) < 0.01, errors["csci"]
    for model, e in errors.items():
        assert max(e) < 0.15 and np.median(e) < 0.05, (model, e)
