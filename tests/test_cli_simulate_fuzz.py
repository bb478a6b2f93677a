"""Issue 11 item 6: ``ecqx-simulate DIR`` on a damaged folder gives one error line and exit code
2 (or 1 when the damage only changes numbers, so the host check differs), never a traceback and
never a crash.

Small ``tflm`` and ``fantastic4`` exports are damaged in many ways (bytes flipped, truncated,
random bytes, crafted structural changes that crash the TFLM interpreter, reports without an
entry, golden archives truncated, manifest paths leaving the folder), with the manifest's
checksums redone as a user editing files would. Each damaged folder is checked by
``ecqx-simulate`` in its own child process (forked from one driver process that imported
everything once, so a segfault shows as a negative exit status); a few run the real command in a
fresh interpreter.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

ROOT = Path(os.environ.get("ECQX_TEST_ROOT", Path(__file__).resolve().parents[1]))

# ----------------------------------------------------------------------------------------------
# the exports


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Dict[str, Path]:
    """A tflm and a fantastic4 export of a 64-12-10 MLP with 4-bit snapped kernels."""
    import tensorflow as tf

    from cli.export import main

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(12, activation="relu"), tf.keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Dense):
            w = layer.kernel.numpy()
            step = np.float32(np.abs(w).max() / 7)
            k = np.clip(np.round(w / step), -7, 7)
            k[rng.random(k.shape) < 0.5] = 0
            k.reshape(-1)[:2] = [-7, 7]
            layer.kernel.assign((k * step).astype(np.float32))
    base = tmp_path_factory.mktemp("exports")
    path = base / "m.keras"
    model.save(path)
    out = {}
    for target in ("tflm", "fantastic4"):
        out[target] = base / target
        rc = main([str(path), "--target", target, "--data", "digits", "--calib", "32", "--max-eval", "8",
                   "--out", str(out[target])])
        assert rc == 0
    return out


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def redo_checksums(folder: Path) -> None:
    """What a user editing a file would do: the manifest's sizes and sha256 follow the files."""
    mpath = folder / "manifest.json"
    m = json.loads(mpath.read_text())
    for e in m["files"]:
        f = folder / e["path"]
        if f.is_file() and ".." not in e["path"] and not e["path"].startswith("/"):
            e["size"], e["sha256"] = f.stat().st_size, _sha(f)
    mpath.write_text(json.dumps(m, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------------------------
# damage


def _tflite(folder: Path) -> Path:
    return next(folder.glob("*.tflite"))


def _rewrite_tflite(change: Callable) -> Callable[[Path], None]:
    """Decode the .tflite with the schema's object API, change it, re-encode it: the structural
    damage a bit flip can do, made deterministic."""

    def mutate(folder: Path) -> None:
        import flatbuffers
        from tensorflow.lite.python import schema_py_generated as schema

        p = _tflite(folder)
        m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(p.read_bytes(), 0))
        change(m, schema)
        b = flatbuffers.Builder(4096)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        p.write_bytes(bytes(b.Output()))
        redo_checksums(folder)

    return mutate


def _op_to_add(m, schema) -> None:  # the RESHAPE becomes an ADD of an int8 and an int32 tensor (TFLM aborts)
    for oc in m.operatorCodes:
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == schema.BuiltinOperator.RESHAPE:
            oc.builtinCode = oc.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
            return
    raise AssertionError("no RESHAPE op to damage")


def _no_io(m, schema) -> None:  # a subgraph without inputs and outputs (TFLM segfaults)
    m.subgraphs[0].inputs = []
    m.subgraphs[0].outputs = []


def _no_tensors(m, schema) -> None:
    sg = m.subgraphs[0]
    sg.tensors, sg.operators, sg.inputs, sg.outputs = [], [], [], []


def _negative_dim(m, schema) -> None:
    t = m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]]
    t.shape = [int(d) for d in t.shape]
    t.shape[1] = -5


def _op_tensor_out_of_range(m, schema) -> None:
    op = m.subgraphs[0].operators[0]
    op.inputs = [999] + [int(v) for v in op.inputs[1:]]


def _scales_without_zero_points(m, schema) -> None:
    t = m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]]
    t.quantization.zeroPoint = [0, 0, 0]


def _flip(name_glob: str, pos: int, mask: int = 0xFF, redo: bool = True) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        p = next(folder.glob(name_glob))
        b = bytearray(p.read_bytes())
        b[pos % len(b)] ^= mask
        p.write_bytes(bytes(b))
        if redo:
            redo_checksums(folder)

    return mutate


def _truncate(name_glob: str, keep: float) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        p = next(folder.glob(name_glob))
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])
        if p.name != "manifest.json":
            redo_checksums(folder)

    return mutate


def _random(name_glob: str, seed: int, keep_header: int = 0) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        p = next(folder.glob(name_glob))
        data = p.read_bytes()
        rng = np.random.default_rng(seed)
        p.write_bytes(data[:keep_header] + rng.integers(0, 256, len(data) - keep_header, dtype=np.uint8).tobytes())
        if p.name != "manifest.json":
            redo_checksums(folder)

    return mutate


def _edit_json(name: str, change: Callable[[dict], object], replace: bool = False) -> Callable[[Path], None]:
    """Edit a JSON file in place (``replace``: write what ``change`` returns instead)."""

    def mutate(folder: Path) -> None:
        p = folder / name
        obj = json.loads(p.read_text())
        new = change(obj)
        p.write_text(json.dumps(new if replace else obj))
        if name != "manifest.json":
            redo_checksums(folder)

    return mutate


def _edit_golden(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        p = next(folder.glob("*_golden.npz"))
        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        with open(p, "wb") as f:
            np.savez(f, **arrays)
        redo_checksums(folder)

    return mutate


def _escape_manifest(path: str) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        m = json.loads((folder / "manifest.json").read_text())
        host = Path("/etc/hostname")
        m["files"].append({"path": path, "size": host.stat().st_size, "sha256": _sha(host)})
        (folder / "manifest.json").write_text(json.dumps(m))

    return mutate


def _symlink_out(folder: Path) -> None:
    os.symlink("/etc/hostname", folder / "notes.json")
    _escape_manifest("notes.json")(folder)


def _report_names_unlisted(folder: Path) -> None:
    shutil.copy(_tflite(folder), folder / "other.tflite")
    _edit_json("tflm_report.json", lambda r: r.update(tflite="other.tflite"))(folder)


def cases() -> List[Tuple[str, str, Callable[[Path], None], str]]:
    """(name, target, damage, expected): expected "2" = exit code 2 with one error line; "2:TEXT" =
    the same with TEXT in the line; "012" = any of 0 (the byte did not matter, e.g. in the
    description), 1 (the numbers changed: the host check differs) or 2 (one error line)."""
    out = [
        # crafted structural damage (each crashed the TFLM interpreter or leaked an exception)
        ("tflite op code RESHAPE->ADD", "tflm", _rewrite_tflite(_op_to_add), "2:integer simulator refuses"),
        ("tflite subgraph without inputs/outputs", "tflm", _rewrite_tflite(_no_io), "2:at least one of each"),
        ("tflite subgraph without tensors", "tflm", _rewrite_tflite(_no_tensors), "2:corrupt .tflite"),
        ("tflite negative dimension", "tflm", _rewrite_tflite(_negative_dim), "2:negative dimension"),
        ("tflite operator tensor index", "tflm", _rewrite_tflite(_op_tensor_out_of_range), "2:names tensor 999"),
        ("tflite zero points != scales", "tflm", _rewrite_tflite(_scales_without_zero_points), "2:zero points"),
        ("tflite truncated to 60%", "tflm", _truncate("*.tflite", 0.6), "2:.tflite"),
        ("tflite truncated to 7 bytes", "tflm", _truncate("*.tflite", 0.001), "2:shorter than a flatbuffer header"),
        ("tflite random bytes", "tflm", _random("*.tflite", 0), "2:not a .tflite model"),
        ("tflite random body", "tflm", _random("*.tflite", 1, keep_header=8), "2:.tflite"),
        # the report
        ("report without arena", "tflm", _edit_json("tflm_report.json", lambda r: r.pop("arena")), "2:'arena.recommended'"),
        ("report arena negative", "tflm", _edit_json("tflm_report.json", lambda r: r["arena"].update(recommended=-5)),
         "2:arena.recommended must be"),
        ("report is a list", "tflm", _edit_json("tflm_report.json", lambda r: [r], replace=True), "2:expected a JSON object"),
        ("report truncated", "tflm", _truncate("tflm_report.json", 0.5), "2:not valid JSON"),
        ("report tflite ../../etc/hostname", "tflm",
         _edit_json("tflm_report.json", lambda r: r.update(tflite="../../etc/hostname")), "2:contains '..'"),
        ("report tflite absolute", "tflm", _edit_json("tflm_report.json", lambda r: r.update(tflite="/etc/hostname")),
         "2:absolute path"),
        ("report names an unlisted file", "tflm", _report_names_unlisted, "2:does not list"),
        # the golden vectors
        ("golden truncated to 50%", "tflm", _truncate("*_golden.npz", 0.5), "2:not a readable .npz"),
        ("golden truncated to 90%", "tflm", _truncate("*_golden.npz", 0.9), "2:not a readable .npz"),
        ("golden random bytes", "tflm", _random("*_golden.npz", 2), "2:not a readable .npz"),
        ("golden without x_int8", "tflm", _edit_golden(lambda a: a.pop("x_int8")), "2:'x_int8' is missing"),
        ("golden x as float", "tflm", _edit_golden(lambda a: a.update(x_int8=a["x_int8"].astype(np.float32))),
         "2:must be int8"),
        ("golden wrong sample shape", "tflm", _edit_golden(lambda a: a.update(x_int8=a["x_int8"][:, :4])),
         "2:do not fit the model"),
        ("golden object array", "tflm", _edit_golden(lambda a: a.update(labels=np.array([{"x": 1}], dtype=object))),
         "2:not a readable .npz"),
        # the manifest itself (checksums not redone: it is the checksum file)
        ("manifest truncated", "tflm", _truncate("manifest.json", 0.5), "2:not an ecqx-export manifest"),
        ("manifest random bytes", "tflm", _random("manifest.json", 3), "2:manifest"),
        ("manifest without target", "tflm", _edit_json("manifest.json", lambda m: m.pop("target")), "2:'target'"),
        ("manifest unknown target", "tflm", _edit_json("manifest.json", lambda m: m.update(target="nope")),
         "2:unknown export target 'nope'"),
        ("manifest files not a list", "tflm", _edit_json("manifest.json", lambda m: m.update(files={})),
         "2:not an ecqx-export manifest"),
        ("manifest ../../etc/hostname", "tflm", _escape_manifest("../../etc/hostname"), "2:contains '..'"),
        ("manifest /etc/hostname", "tflm", _escape_manifest("/etc/hostname"), "2:absolute path"),
        ("manifest symlink leaving the folder", "tflm", _symlink_out, "2:leaves the folder"),
        # fantastic4
        ("f4 tflite op code RESHAPE->ADD", "fantastic4", _rewrite_tflite(_op_to_add), "2"),
        ("f4 tflite subgraph without inputs/outputs", "fantastic4", _rewrite_tflite(_no_io), "2:at least one of each"),
        ("f4 blob byte flipped", "fantastic4", _flip("*_f4.bin", 40), "2"),
        ("f4 blob truncated", "fantastic4", _truncate("*_f4.bin", 0.5), "2"),
        ("f4 golden inputs truncated", "fantastic4", _truncate("golden_inputs.bin", 0.97), "2:whole number"),
        ("f4 report without golden", "fantastic4", _edit_json("fantastic4.json", lambda r: r.pop("golden")),
         "2:'golden.inputs' is missing"),
        ("f4 report blob ../x", "fantastic4", _edit_json("fantastic4.json", lambda r: r.update(blob="../x")),
         "2:contains '..'"),
    ]
    rng = np.random.default_rng(11)
    for i in range(24):  # random single-byte damage anywhere in the model: numbers (exit 1) or structure (2)
        out.append((f"tflite random flip {i}", "tflm", _flip("*.tflite", int(rng.integers(0, 1 << 30)),
                                                             int(rng.integers(1, 256))), "012"))
    for i in range(6):
        out.append((f"golden random flip {i}", "tflm", _flip("*_golden.npz", int(rng.integers(0, 1 << 30)),
                                                             int(rng.integers(1, 256))), "012"))
    for i in range(4):
        out.append((f"f4 tflite random flip {i}", "fantastic4", _flip("*.tflite", int(rng.integers(0, 1 << 30)),
                                                                      int(rng.integers(1, 256))), "012"))
    return out


# ----------------------------------------------------------------------------------------------
# running ecqx-simulate in isolated processes

_DRIVER = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from cli.export import simulate_main
from firmware_export.tflm import flatbuffer
flatbuffer.load_schema()  # import everything once, before forking
jobs = json.loads(open(sys.argv[1]).read())
results = []
for folder in jobs:
    err_path = folder + ".stderr"
    pid = os.fork()
    if pid == 0:
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(fd, 2)
        code = 70
        try:
            code = simulate_main([folder])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 70
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 71
        sys.stderr.flush()
        os._exit(code)
    deadline = time.time() + 300
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = 9
            break
        time.sleep(0.02)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    results.append({"folder": folder, "rc": rc, "stderr": open(err_path).read()})
open(sys.argv[2], "w").write(json.dumps(results))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _check(name: str, expected: str, rc: int, err: str) -> List[str]:
    problems = []
    if rc < 0 or rc > 2:
        problems.append(f"{name}: exit status {rc} (crash or unexpected)")
    if "Traceback" in err:
        problems.append(f"{name}: traceback\n{err[-1500:]}")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if expected == "012":
        if rc not in (0, 1, 2):
            problems.append(f"{name}: exit code {rc}, expected 0, 1 or 2; stderr {err!r}")
        elif rc == 2 and (len(lines) != 1 or not lines[0].startswith("ecqx-simulate: error: ")):
            problems.append(f"{name}: exit code 2 needs one error line, got {lines!r}")
        return problems
    if rc != 2:
        problems.append(f"{name}: exit code {rc}, expected 2; stderr {err[-600:]!r}")
        return problems
    if len(lines) != 1 or not lines[0].startswith("ecqx-simulate: error: "):
        problems.append(f"{name}: expected one error line, got {lines!r}")
    elif ":" in expected and expected.split(":", 1)[1] not in lines[0]:
        problems.append(f"{name}: {expected.split(':', 1)[1]!r} not in {lines[0]!r}")
    return problems


@pytest.mark.slow
def test_damaged_exports_give_one_line_and_exit_2(exports, tmp_path):
    all_cases = cases()
    jobs = []
    for i, (name, target, damage, _) in enumerate(all_cases):
        folder = tmp_path / f"case{i:03d}"
        shutil.copytree(exports[target], folder, symlinks=True)
        damage(folder)
        jobs.append(str(folder))
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, "-c", _DRIVER, str(tmp_path / "jobs.json"), str(tmp_path / "res.json")],
                          env=_env(), capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "res.json").read_text())
    problems = []
    for (name, _, _, expected), r in zip(all_cases, results):
        problems += _check(name, expected, r["rc"], r["stderr"])
    assert not problems, "\n".join(problems)
    # the undamaged exports still pass
    for target, folder in exports.items():
        from cli.export import simulate_main

        assert simulate_main([str(folder)]) == 0, target


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tflite op code RESHAPE->ADD", "report without arena", "golden truncated to 50%",
                                  "manifest ../../etc/hostname"])
def test_the_real_command(exports, tmp_path, case):
    """The issue's cases through the real command in a fresh interpreter (a crash would be a
    negative status)."""
    name, target, damage, expected = next(c for c in cases() if c[0] == case)
    folder = tmp_path / "case"
    shutil.copytree(exports[target], folder)
    damage(folder)
    proc = subprocess.run([sys.executable, "-c", "import sys; from cli.export import simulate_main; "
                           "sys.exit(simulate_main())", str(folder)], env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert not _check(name, expected, proc.returncode, proc.stderr), proc.stderr


@pytest.mark.slow
def test_probe_reports_a_crashing_model_as_bad_input(exports, tmp_path):
    """The last line of defence: a model that crashes TFLM is run in a child process only."""
    from cli.export import probe_tflm

    folder = tmp_path / "c"
    shutil.copytree(exports["tflm"], folder)
    _rewrite_tflite(_op_to_add)(folder)
    with pytest.raises(ValueError, match=r"crashes on this model \(SIG"):
        probe_tflm(_tflite(folder).read_bytes(), 1 << 20, "m.tflite")
    probe_tflm(_tflite(exports["tflm"]).read_bytes(), 1 << 20, "m.tflite")  # a good model passes


def test_reader_gives_value_error_on_any_damage(exports):
    """``read_model`` on truncations at every length, single-byte flips at every position and
    random bytes: ``ValueError`` or a model, nothing else."""
    from firmware_export.tflm.flatbuffer import read_model

    data = _tflite(exports["tflm"]).read_bytes()
    rng = np.random.default_rng(5)
    variants = [data[:n] for n in range(len(data))]
    for pos in range(len(data)):
        b = bytearray(data)
        b[pos] ^= int(rng.integers(1, 256))
        variants.append(bytes(b))
    variants += [data[:8] + rng.integers(0, 256, len(data), dtype=np.uint8).tobytes() for _ in range(50)]
    for v in variants:
        try:
            read_model(v)
        except ValueError:
            pass
