"""bench/frontier.py without training: the points of a run, aggregation over seeds, the goal
statements, and the refusal to touch an existing results file without --resume."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _frontier():
    spec = importlib.util.spec_from_file_location("bench_frontier", REPO / "bench" / "frontier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(F, seed, path="ecq", acc=0.94, zeros=0.9, exec_b=20000, **kw):
    if path == "pcqat":
        p = F.Point(model="m", path="pcqat", prune=kw.pop("prune", 0.9), epochs="5+5+5", seed=seed)
    else:
        p = F.Point(model="m", path=path, bits=kw.pop("bits", 2), target=kw.pop("target", 0.9), scope="model", warmup=0.6,
                    gradient="ste", lr="constant", epochs=15, seed=seed, relevance="subset" if path == "ecqx" else None)
    return {"key": p.key, "group": p.group, **p, "acc_tflm": acc, "sparsity": zeros, "layer_sparsity": [zeros, zeros],
            "executable_bytes": exec_b, "stored_lzma_bytes": 1000, "stored_cabac_bytes": 900, "seconds": 10.0,
            "executable": "blob", "notes": []}


def test_points_cover_the_grid_seed_major():
    F = _frontier()
    args = F._parser().parse_args(["--models", "a", "b", "--seeds", "0", "1", "--bits", "2", "4", "--targets", "0.8", "0.9"])
    pts = F.points(args)
    # per seed and model: 3 PCQAT + 2 methods x 2 bits x 2 targets
    assert len(pts) == 2 * 2 * (3 + 8)
    assert [p["seed"] for p in pts[: 2 * 11]] == [0] * 22
    assert len({p.key for p in pts}) == len(pts)
    ecqx = [p for p in pts if p["path"] == "ecqx"][0]
    assert ecqx["relevance"] == "subset" and ecqx["warmup"] == 0.6 and ecqx["scope"] == "model"
    assert "seed" not in ecqx.group and "seed=0" in ecqx.key


def test_summary_mean_and_range_over_seeds_and_goals():
    F = _frontier()
    rows = [_row(F, 0, "pcqat", acc=0.935, zeros=0.92, exec_b=23000), _row(F, 1, "pcqat", acc=0.925, zeros=0.92, exec_b=23400),
            _row(F, 0, acc=0.95, exec_b=20000), _row(F, 1, acc=0.93, exec_b=21000),
            _row(F, 0, "ecqx", acc=0.94, exec_b=20500), _row(F, 1, "ecqx", acc=0.96, exec_b=20100),
            _row(F, 0, bits=4, acc=0.92, exec_b=15000), _row(F, 1, bits=4, acc=0.93, exec_b=15000)]
    summary = F.summarize(rows)
    ecq2 = [e for e in summary if e["path"] == "ecq" and e["bits"] == 2][0]
    assert ecq2["n"] == 2 and ecq2["acc_mean"] == pytest.approx(0.94) and (ecq2["acc_min"], ecq2["acc_max"]) == (0.93, 0.95)
    assert ecq2["exec_bytes"] == 20500 and ecq2["exec_min"] == 20000
    text = F.format_table(summary)
    assert "0.9400" in text and "0.930-0.950" in text and "PCQAT prune 90%" in text
    g = F.goals(summary, rows)
    assert g[0].startswith("m: PCQAT-90 0.9300") and "MET by 2 setting(s)" in g[0]  # ECQ 2-bit and ECQx 2-bit
    assert "best ECQX 2-bit S*=0.9 (warm-up 0.6): 0.9500" in g[0]
    assert "ECQx - ECQ over 2 paired runs" in g[1] and "accuracy +1.00 points" in g[1]
    rows_lose = [r for r in rows if not (r["path"] != "pcqat" and r["bits"] == 2)]
    assert "NOT met" in F.goals(F.summarize(rows_lose), rows_lose)[0]


def test_existing_results_need_resume(tmp_path, capsys):
    F = _frontier()
    out = tmp_path / "f.json"
    out.write_text(json.dumps({"rows": {}}))
    assert F.main(["--out", str(out)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {"rows": {}}  # untouched
    assert F.main(["--from-json", str(tmp_path / "missing.json")]) == 2


def _fake_row(p, acc=0.9):
    return {"key": p.key, "group": p.group, **p, "acc_tflm": acc, "sparsity": 0.9, "layer_sparsity": [0.9, 0.9],
            "executable_bytes": 1000, "stored_lzma_bytes": 900, "stored_cabac_bytes": 800, "seconds": 2.0,
            "executable": "blob", "notes": []}


def test_a_failed_point_is_recorded_and_only_retried_on_request(tmp_path, monkeypatch, capsys):
    """A point whose training raises (tfmot's k-means++ on a layer with too few non-zeros) is a
    result: a row with the error, listed by the report, skipped by --resume, retried with
    --retry-failed; the other points are measured."""
    F = _frontier()
    import bench.common

    monkeypatch.setattr(F, "_float_model", lambda name, data, args, results: object())
    monkeypatch.setattr(bench.common, "is_fc_only", lambda model: True)
    calls = []

    def fake_run_point(p, ctx):
        calls.append(p["path"])
        if p["path"] == "pcqat":
            raise RuntimeError("Expected num_to_sample <= points.rows(). 8\nvs 4.")
        return _fake_row(p)

    monkeypatch.setattr(F, "_run_point", fake_run_point)
    out = tmp_path / "f.json"
    argv = ["--out", str(out), "--models", "mnist_mlp", "--seeds", "0", "1", "--paths", "pcqat", "ecq", "--sparsities", "0.95",
            "--bits", "2", "--targets", "0.9"]
    assert F.main(argv) == 1  # a failed point: exit code 1
    assert calls == ["pcqat", "ecq", "pcqat", "ecq"]
    rows = json.loads(out.read_text())["rows"]
    failed = [r for r in rows.values() if "failed" in r]
    assert len(rows) == 4 and len(failed) == 2
    assert failed[0]["failed"] == "RuntimeError: Expected num_to_sample <= points.rows(). 8 vs 4."
    assert "acc_tflm" not in failed[0] and failed[0]["path"] == "pcqat" and failed[0]["seconds"] >= 0
    report = capsys.readouterr().out
    assert "Failed (1 setting(s)" in report
    assert "* mnist_mlp: PCQAT prune 95% (5+5+5 ep.) (all seeds): RuntimeError: Expected num_to_sample" in report
    assert "Not measured (0 setting(s)" in report and "4 points (2 failed)" in report
    calls.clear()
    assert F.main(argv + ["--resume"]) == 0 and calls == []  # measured and failed points are both kept
    assert F.main(argv + ["--resume", "--retry-failed"]) == 1 and calls == ["pcqat", "pcqat"]
    assert len(json.loads(out.read_text())["rows"]) == 4


def test_coverage_names_the_missing_seeds():
    F = _frontier()
    args = F._parser().parse_args(["--models", "m", "--seeds", "0", "1", "2", "--paths", "ecq", "--bits", "2",
                                   "--targets", "0.8", "0.9"])
    grid = F.points(args)
    have = [p for p in grid if not (p["target"] == 0.8 and p["seed"] > 0)][:-1]  # 0.8: seed 0 only; 0.9: not seed 2
    cov = F.coverage({"rows": {p.key: _fake_row(p) for p in have}}, grid)
    assert cov == {"missing": ["m: ECQ 2-bit S*=0.8 (warm-up 0.6) (seeds 1, 2)", "m: ECQ 2-bit S*=0.9 (warm-up 0.6) (seed 2)"],
                   "failed": []}
    assert F.coverage({"rows": {}}, grid)["missing"][0].endswith("(all seeds)")


def test_ecqx_against_ecq_pairs_by_seed():
    F = _frontier()
    rows = [_row(F, 0, acc=0.95), _row(F, 1, acc=0.93), _row(F, 0, "ecqx", acc=0.94), _row(F, 1, "ecqx", acc=0.96),
            _row(F, 2, "ecqx", acc=0.99)]  # seed 2 has no ECQ partner: not paired
    text = F.ecqx_vs_ecq(rows, markdown=True)
    line = [t for t in text.splitlines() if t.startswith("| m |")]
    assert line == ["| m | 2-bit S*=0.9 | 0, 1 | 0.9400 | 0.9500 | -1.0, +3.0 | +1.00 | 90.0% / 90.0% | 20,000 / 20,000 | 10 / 10 |"]
    lines = F.runtime({"rows": {r["key"]: r for r in rows}, "invocations": [{"seconds": 60.0}]})
    assert lines[0].startswith("5 points (0 failed): 50 s of training and measurement")
    grid = [F.Point({k: v for k, v in r.items() if k in ("model", "path", "bits", "target", "scope", "warmup", "gradient",
                                                            "lr", "epochs", "seed", "relevance")}) for r in rows[:2]]
    assert F.runtime({"rows": {r["key"]: r for r in rows}}, grid)[1] == "of them the 2 of the grid these options define: 20 s (0.0 h)"
    assert "m ECQX 2-bit: 10 s per point (10-10, n=3)" in lines


def test_layer_cap_is_part_of_a_point_only_when_set():
    F = _frontier()
    base = ["--models", "m", "--seeds", "0", "--paths", "ecq", "--bits", "3", "--targets", "0.95"]
    plain = F.points(F._parser().parse_args(base))[0]
    capped = F.points(F._parser().parse_args(base + ["--max-layer-sparsity", "0.99"]))[0]
    assert "cap" not in plain.key and plain["cap"] is None  # the keys of earlier results stay valid
    assert "cap=0.99" in capped.key and capped.group != plain.group
    assert F._label(capped) == "ECQ 3-bit S*=0.95 (layer cap 0.99, warm-up 0.6)"

def test_layer_cap_needs_the_model_scope(tmp_path, capsys):
    F = _frontier()
    argv = ["--models", "mnist_mlp", "--seeds", "0", "--paths", "ecq", "--bits", "3", "--targets", "0.95",
            "--max-layer-sparsity", "0.99", "--out", str(tmp_path / "x.json")]
    assert F.main(argv + ["--target-scope", "layer"]) == 2
    assert "--max-layer-sparsity must be in [0, 1] and needs --target-scope model" in capsys.readouterr().err
    assert F.main(argv[:-4] + ["--max-layer-sparsity", "1.5", "--out", str(tmp_path / "x.json")]) == 2
    assert "got 1.5 with --target-scope model" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_merge_adds_the_points_of_a_parallel_slice(tmp_path, capsys):
    F = _frontier()
    a = [_fake_row(p) for p in F.points(F._parser().parse_args(["--models", "m", "--seeds", "0", "--paths", "ecq",
                                                                 "--bits", "2", "--targets", "0.9"]))]
    b = [_fake_row(p, acc=0.8) for p in F.points(F._parser().parse_args(["--models", "m", "--seeds", "1", "--paths", "ecq",
                                                                          "--bits", "2", "--targets", "0.9"]))]
    fl = {"m": {"fingerprint": "abc"}}
    out, other = tmp_path / "f.json", tmp_path / "g.json"
    out.write_text(json.dumps({"floats": fl, "rows": {r["key"]: r for r in a}, "invocations": [{"seconds": 1.0}]}))
    other.write_text(json.dumps({"floats": fl, "rows": {r["key"]: r for r in a + b}, "invocations": [{"seconds": 2.0}]}))
    assert F.main(["--out", str(out), "--merge", str(other)]) == 0
    got = json.loads(out.read_text())
    assert len(got["rows"]) == 2 and len(got["invocations"]) == 2 and got["seconds_total"] == 4.0
    assert "1 point(s) added" in capsys.readouterr().out
    bad = tmp_path / "h.json"
    bad.write_text(json.dumps({"floats": {"m": {"fingerprint": "xyz"}}, "rows": {}, "invocations": []}))
    assert F.main(["--out", str(out), "--merge", str(bad)]) == 2
    assert "is not the one of the results file" in capsys.readouterr().err
    conflict = dict(b[0], acc_tflm=0.5)
    bad.write_text(json.dumps({"floats": fl, "rows": {conflict["key"]: conflict}, "invocations": []}))
    assert F.main(["--out", str(out), "--merge", str(bad)]) == 2
    assert json.loads(out.read_text()) == got  # untouched by a refused merge


def test_a_run_with_an_empty_kernel_is_marked_and_left_out_of_the_ecqx_comparison():
    F = _frontier()
    dead = _row(F, 1, acc=0.10)
    dead["layer_sparsity"] = [0.8, 1.0]
    rows = [_row(F, 0, acc=0.95), dead, _row(F, 0, "ecqx", acc=0.94), _row(F, 1, "ecqx", acc=0.91),
            _row(F, 0, "pcqat", acc=0.93, zeros=0.9)]
    summary = F.summarize(rows)
    ecq = [e for e in summary if e["path"] == "ecq"][0]
    assert ecq["collapsed"] == 1 and ecq["label"].endswith("[1 of 2 runs: a kernel all zero]")
    g = F.goals(summary, rows)
    assert any(s.startswith("1 ECQ/ECQx pair(s) left out") and "seed 1: ECQ 0.100, ECQx 0.910" in s for s in g)
    assert any("ECQx - ECQ over 1 paired runs" in s and "accuracy -1.00 points" in s for s in g)
