"""The public API of ``firmware_export``: ``export``, ``simulate``, ``TARGETS``, ``ExportRequest``
and the typed target options (one declaration for the Python API and ``ecqx-export``)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

import firmware_export
from firmware_export import TARGETS, ExportRequest, FantastIC4Options, TFLMOptions, export, get_target, simulate


def test_importing_the_package_stays_light():
    code = ("import sys, json, firmware_export\n"
            "light = 'tensorflow' not in sys.modules\n"
            "names = firmware_export.TARGETS.names()\n"
            "print(json.dumps([light, 'tensorflow' not in sys.modules, names]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [True, True, ["fantastic4", "tflm"]]


def test_public_names():
    assert set(firmware_export.__all__) >= {"export", "simulate", "TARGETS", "ExportRequest", "get_target",
                                            "TFLMOptions", "FantastIC4Options"}
    assert TARGETS.get("tflm").options is TFLMOptions
    assert TARGETS.get("fantastic4").options is FantastIC4Options
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        firmware_export.nope  # noqa: B018


@pytest.mark.parametrize("name", ["tflm", "fantastic4"])
def test_every_target_has_typed_options_and_they_are_its_cli_options(name):
    from cli.export import build_parser

    cls = TARGETS.get(name).options
    assert dataclasses.is_dataclass(cls)
    defaults = cls()
    flags = {a.dest: a for a in build_parser(name)._actions}
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", True):
            assert f.name in flags, f"{name}: option {f.name} missing from ecqx-export --target {name}"
            assert flags[f.name].default == getattr(defaults, f.name)
            assert f.metadata["help"] in flags[f.name].help


def test_options_are_checked():
    t = get_target("tflm")
    assert t.make_options({"compress": True}).compress is True
    with pytest.raises(ValueError, match=r"export target 'tflm': unknown option\(s\) f4_layout; accepted: compress"):
        t.make_options({"f4_layout": "auto"})
    with pytest.raises(TypeError, match="tflm options: parameter golden_header must be an int, got '8'"):
        TFLMOptions(golden_header="8")
    with pytest.raises(ValueError, match=r"tflm options: parameter golden_header must lie in \[0, inf\], got -1"):
        TFLMOptions(golden_header=-1)
    with pytest.raises(ValueError, match="fantastic4 options: parameter f4_objective: unknown value 'fast'; "
                                         "accepted: balanced, speed, size"):
        FantastIC4Options(f4_objective="fast")
    with pytest.raises(ValueError, match="unknown export target 'c'; accepted: fantastic4, tflm"):
        get_target("c")


def test_export_refuses_bad_input_before_any_work(tmp_path):
    import numpy as np

    request = ExportRequest(model=None, quant={}, name="m", representative=np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="unknown option"):
        export(request, "tflm", tmp_path / "out", compres=True)
    with pytest.raises(TypeError, match="request must be a firmware_export.ExportRequest, got dict"):
        export({}, "tflm", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_and_simulate_a_small_model(tmp_path):
    from tflm_helpers import mlp, request_for, snap_model_for_tests

    model, quant = snap_model_for_tests(mlp(seed=3), bits=4)
    request = request_for(model, quant, name="api")
    summary = export(request, "tflm", tmp_path / "tflm", golden_header=2)
    assert summary["ok"]
    assert (tmp_path / "tflm" / "api.tflite").is_file()
    assert simulate("tflm", tmp_path / "tflm")["ok"]
