"""Issue 16, command line: --version, -q/--quiet and -v/--verbose on every command; exit codes in
every --help; help text without reStructuredText markup; ecqx-export's usage line without the
options of one target."""
from __future__ import annotations

import re

import pytest
from test_cli_quiet import COMMANDS, run_command

TARGET_ONLY = ("--compress", "--int8-weights", "--golden-header", "--f4-layout")


@pytest.mark.parametrize("name", COMMANDS)
def test_version(name, tmp_path):
    import ecqx_tf

    rc, out, err, tf_imported, _ = run_command(name, ["--version"], tmp_path)
    assert rc == 0 and out.strip() == f"{name} {ecqx_tf.__version__}" and err == "" and not tf_imported


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_common_flags_exit_codes_and_no_markup(name, tmp_path):
    rc, out, _, _, _ = run_command(name, ["--help"], tmp_path)
    assert rc == 0
    for flag in ("--version", "-q, --quiet", "-v, --verbose"):
        assert flag in out, flag
    text = " ".join(out.split())
    assert ("exit codes: 0 ok, 1 a check failed (e.g. the host check differs), 2 bad input (nothing written), "
            "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)") in text
    assert "``" not in out and not re.search(r":(func|class|mod|data|meth):`", out), out


def test_compress_subcommands_take_the_common_flags(tmp_path):
    rc, out, _, _, _ = run_command("ecqx-compress", ["ecqx", "--help"], tmp_path)
    assert rc == 0 and "-q, --quiet" in out and "exit codes:" in out and "``" not in out


@pytest.mark.parametrize("argv", [["--help"], ["--target", "tflm", "--help"], ["--target", "fantastic4", "--help"]])
def test_export_usage_line_has_no_target_options(argv, tmp_path):
    rc, out, _, _, _ = run_command("ecqx-export", argv, tmp_path)
    usage = out.split("\n\n")[0]
    assert rc == 0 and usage.startswith("usage: ecqx-export MODEL --target")
    assert not any(flag in usage for flag in TARGET_ONLY), usage
    if "--target" in argv:  # the target's own options are listed below, in their group
        assert f"options of target '{argv[1]}'" in out


@pytest.mark.slow
def test_quiet_and_verbose(tmp_path):
    """-q: only the result (no progress lines); -v adds messages; both exclude each other."""
    argv = ["--model", "mnist_mlp", "--data", "digits", "--epochs", "1", "--out"]
    rc, out, err, _, _ = run_command("ecqx-train", argv + ["f", "-q"], tmp_path)
    assert rc == 0 and err == "" and out.startswith("mnist_mlp on digits: test accuracy"), (out, err)
    export = ["f/model.keras", "--target", "tflm", "--data", "digits", "--calib", "16", "--max-eval", "8"]
    rc, out, err, _, _ = run_command("ecqx-export", export + ["--out", "e1", "-q"], tmp_path)
    assert rc == 0 and err == "" and "calibrated on" in out, err
    rc, out, err, _, _ = run_command("ecqx-export", export + ["--out", "e2"], tmp_path)
    assert rc == 0 and "ecqx-export: [1/4] loading f/model.keras" in err
    rc, _, err, _, _ = run_command("ecqx-export", export + ["--out", "e3", "-q", "-v"], tmp_path)
    assert rc == 2 and "not allowed with argument" in err
