"""Issue 11 item 1: no command that writes a folder ever destroys a user's file or folder.

Every folder-writing command refuses (exit code 2, nothing touched) an ``--out`` that is a file,
that holds one of its inputs, or that is a non-empty folder it did not write; a previous output
of the same command (recognised by its ``manifest.json``) is replaced; ``--force`` replaces a
foreign folder but keeps the files the command did not write in ``OUT.previous``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def call(main, argv) -> int:
    """A command's exit code, whether it returns it or exits through argparse."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    import tensorflow as tf

    from models import datasets

    d = datasets.load("digits")
    tf.keras.utils.set_random_seed(0)
    m = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(12, activation="relu"), tf.keras.layers.Dense(10)])
    m.compile(optimizer=tf.keras.optimizers.Adam(0.02),
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(d.x_train, d.y_train, epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    m.save(path)
    return path


def _mains():
    from cli.compress import main as compress
    from cli.export import main as export
    from cli.quantize import main as quantize
    from cli.train import main as train
    from pipeline.demo import main as demo

    return {"export": export, "quantize": quantize, "compress": compress, "train": train, "demo": demo}


def _argv(cmd: str, model: Path, out: Path):
    """The smallest real invocation of each command writing to ``out``."""
    return {
        "export": [model, "--target", "tflm", "--data", "digits", "--calib", "32", "--max-eval", "16", "--out", out],
        "quantize": [model, "--data", "digits", "--epochs", "1", "--out", out],
        "compress": ["magnitude_pruning", model, "--data", "digits", "--out", out],
        "train": ["--model", "mnist_mlp", "--data", "digits", "--epochs", "1", "--out", out],
        "demo": ["--out", out, "--float-epochs", "1", "--qat-epochs", "1"],
    }[cmd]


COMMANDS = ("export", "quantize", "compress", "train", "demo")


@pytest.mark.parametrize("cmd", COMMANDS)
def test_out_that_is_a_file_is_refused_untouched(cmd, digits_model, tmp_path, capsys):
    target = tmp_path / "firmware.bin"
    target.write_bytes(b"user data")
    before = snapshot(tmp_path)
    assert call(_mains()[cmd], _argv(cmd, digits_model, target)) == 2
    err = capsys.readouterr().err
    assert "is a regular file" in err, err
    assert snapshot(tmp_path) == before  # nothing touched, no hidden partial folder


@pytest.mark.parametrize("cmd", ("export", "quantize", "compress"))
def test_out_holding_the_model_is_refused_untouched(cmd, digits_model, tmp_path, capsys):
    """The issue's case: ``ecqx-export d/qat_model.h5 --target tflm --out d --data ...`` deleted
    the model and every other file in d."""
    d = tmp_path / "d"
    d.mkdir()
    model = d / "model.keras"
    model.write_bytes(digits_model.read_bytes())
    (d / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    for extra in ([], ["--force"]):  # --force never overrides this
        assert call(_mains()[cmd], _argv(cmd, model, d) + extra) == 2
        err = capsys.readouterr().err
        assert "contains the input" in err, err
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("cmd", COMMANDS)
def test_foreign_non_empty_folder_is_refused_untouched(cmd, digits_model, tmp_path, capsys):
    d = tmp_path / "firmware"
    (d / "src").mkdir(parents=True)
    (d / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    before = snapshot(tmp_path)
    assert call(_mains()[cmd], _argv(cmd, digits_model, d)) == 2
    err = capsys.readouterr().err
    assert "did not write" in err and "--force" in err, err
    assert snapshot(tmp_path) == before


def test_data_folder_input_is_protected(tmp_path, capsys):
    """--data-path is an input too: --out may not be it, hold it, or lie inside it."""
    from cli.train import main as train

    data = tmp_path / "mnist"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(b"\0" * 16)
    before = snapshot(tmp_path)
    for out in (data, data / "run1", tmp_path):
        assert call(train, ["--model", "mnist_mlp", "--data", "mnist", "--data-path", data, "--out", out,
                            "--force"]) == 2
        err = capsys.readouterr().err
        assert "input" in err, err
        assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_export_replaces_its_own_output_and_force_keeps_foreign_files(digits_model, tmp_path, capsys):
    from cli.export import main as export

    out = tmp_path / "fw"
    assert call(export, _argv("export", digits_model, out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tool"] == "ecqx-export"
    first = snapshot(out)
    # a previous export of this tool is replaced (same inputs -> same bytes), no partial left
    assert call(export, _argv("export", digits_model, out)) == 0
    assert snapshot(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fw"]
    # a file the user added makes it foreign: refused, then --force keeps the file aside
    (out / "main.c").write_text("user code\n")
    assert call(export, _argv("export", digits_model, out)) == 2
    assert "main.c" in capsys.readouterr().err
    assert call(export, _argv("export", digits_model, out) + ["--force"]) == 0
    assert snapshot(out) == first
    assert (tmp_path / "fw.previous" / "main.c").read_text() == "user code\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fw", "fw.previous"]


@pytest.mark.slow
def test_train_output_is_recognised_by_its_manifest(tmp_path, capsys):
    from cli.train import main as train

    out = tmp_path / "float"
    argv = _argv("train", None, out) + ["--quiet"]
    assert call(train, argv) == 0
    assert json.loads((out / "manifest.json").read_text())["tool"] == "ecqx-train"
    assert call(train, argv) == 0  # replaced: it is ours
    # another tool's output is not replaced without --force
    from cli.export import main as export

    assert call(export, [out / "model.keras", "--target", "tflm", "--out", tmp_path / "float2", "--data", "digits",
                         "--calib", "16", "--max-eval", "8"]) in (0, 1)
    assert call(train, _argv("train", None, tmp_path / "float2")) == 2
    assert "is an output of ecqx-export, not of ecqx-train" in capsys.readouterr().err


def test_symlinked_out_is_never_followed_onto_something_else(digits_model, tmp_path, capsys):
    from cli.export import main as export

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("x")
    link = tmp_path / "out"
    os.symlink(precious, link)
    before = snapshot(precious)
    for extra in ([], ["--force"]):
        assert call(export, _argv("export", digits_model, link) + extra) == 2
        assert "symbolic link" in capsys.readouterr().err
    assert snapshot(precious) == before and link.is_symlink()
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    assert call(export, _argv("export", digits_model, dangling)) == 2
    assert not (tmp_path / "nowhere").exists()


# ----------------------------------------------------------------------------------------------
# the shared helper itself (ecqx_tf.io)
def test_check_output_dir_rules(tmp_path):
    from ecqx_tf.io import OutputFolderError, check_output_dir

    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputFolderError, match="regular file"):
        check_output_dir(tmp_path / "f", "ecqx-export", force=True)
    assert check_output_dir(tmp_path / "new", "ecqx-export").state == "missing"
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert check_output_dir(tmp_path / "empty", "ecqx-export").state == "empty"
    with pytest.raises(OutputFolderError, match="filesystem root"):
        check_output_dir("/", "ecqx-export", force=True)
    with pytest.raises(OutputFolderError, match="lies inside the input"):
        check_output_dir(tmp_path / "empty" / "sub" / "o", "ecqx-export", inputs=[tmp_path / "empty"], force=True)
    # a manifest that is not strictly ours does not make a folder ours
    d = tmp_path / "fake"
    d.mkdir()
    for text in ('{"tool": "other", "files": []}', '{"tool": "ecqx-export"}', "not json",
                 '{"tool": "ecqx-export", "files": [{"path": "../x"}]}', '["ecqx-export"]'):
        (d / "manifest.json").write_text(text)
        with pytest.raises(OutputFolderError, match="did not write"):
            check_output_dir(d, "ecqx-export")
    (d / "manifest.json").write_text('{"tool": "ecqx-export", "files": []}')
    assert check_output_dir(d, "ecqx-export").state == "ours"


def test_replacement_removes_only_listed_files(tmp_path):
    from ecqx_tf.io import atomic_output_dir

    out = tmp_path / "o"
    with atomic_output_dir(out, "ecqx-export") as t:
        (t / "a.bin").write_bytes(b"1")
        (t / "sub").mkdir()
        (t / "sub" / "b.bin").write_bytes(b"2")
    assert json.loads((out / "manifest.json").read_text())["tool"] == "ecqx-export"
    (out / "sub" / "mine.txt").write_text("user")
    with atomic_output_dir(out, "ecqx-export", force=True) as t:
        (t / "c.bin").write_bytes(b"3")
    assert sorted(p.name for p in out.iterdir()) == ["c.bin", "manifest.json"]
    kept = tmp_path / "o.previous"
    assert [str(p.relative_to(kept)) for p in sorted(kept.rglob("*"))] == ["sub", "sub/mine.txt"]
    # a failure inside the block leaves the previous output as it was, and no partial folder
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, "ecqx-export") as t:
            (t / "d.bin").write_bytes(b"4")
            raise RuntimeError("boom")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "o.previous"]


def test_safe_join_keeps_paths_inside(tmp_path):
    from ecqx_tf.io import safe_join

    (tmp_path / "a").write_text("x")
    os.symlink("/etc/hostname", tmp_path / "esc")
    assert safe_join(tmp_path, "a") == tmp_path / "a"
    for bad in ("/etc/hostname", "../../etc/hostname", "x/../../y", "", None, 3, "esc"):
        with pytest.raises(ValueError):
            safe_join(tmp_path, bad)
