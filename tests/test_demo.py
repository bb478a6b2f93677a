"""The main job (``make demo``) end to end on a small setting."""
import json

from pipeline import demo


def test_demo_runs_whole_pipeline_and_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--float-epochs", "1", "--qat-epochs", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    r = json.loads((out / "results.json").read_text())
    s = r["summary"]
    assert r["dataset"]["train"] == 4000 and r["dataset"]["test"] == 1000
    assert 0.5 < s["float_accuracy"] <= 1 and 0.5 < s["ecqx_accuracy"] <= 1
    assert s["tflm_vs_simulator_mismatches"] == 0 and s["tflm_samples"] == 1000
    assert s["fantastic4_c_vs_python_mismatches"] == 0 and s["fantastic4_python_vs_tflm_mismatches"] == 0
    # The TFLM model and the C runtime compute the same integers, hence the same accuracy.
    assert s["tflm_accuracy"] == s["fantastic4_accuracy"]
    for sub in ("float/model.keras", "ecqx/qat_model.h5", "ecqx/stripped.keras", "tflm/manifest.json", "fantastic4/manifest.json"):
        assert (out / sub).is_file(), sub
    assert "FantastIC4 C99 runtime" in text and "TFLM (.tflite, INT4)" in text
    assert not demo.failed_checks(r)
