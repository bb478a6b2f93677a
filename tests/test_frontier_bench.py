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
