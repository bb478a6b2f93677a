"""Every notebook in notebooks/ runs top to bottom (so none can rot).

Each is executed with nbclient on the ``python3`` kernel, which jupyter_client starts with this
interpreter (``sys.executable``, the venv's Python), in the small setting ``ECQX_NB_QUICK=1`` and
with its outputs in a temporary folder (``ECQX_NB_OUT``). A cell that raises fails the test with
the cell's traceback.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell; the quick setting needs far less (whole notebook ~1 min)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no .ipynb"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ECQX_NB_QUICK", "1")
    monkeypatch.setenv("ECQX_NB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    # the kernel must be this interpreter (jupyter_client maps a kernelspec's "python" to it)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code_cells), "a code cell did not run"


def test_kernel_is_this_interpreter():
    """The python3 kernelspec resolves to this interpreter, so the notebooks see the same packages."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    km = KernelManager(kernel_name="python3")
    cmd = km.format_kernel_cmd()
    assert spec.language.lower() == "python"
    assert Path(cmd[0]).resolve() == Path(sys.executable).resolve() or cmd[0] == sys.executable, cmd


STORED_NOISE = ("WARNING:tensorflow", "is slow compared to the batch time", "fully_quantize:", "tensorflow/",
                "Unable to register", "UserWarning", "DeprecationWarning", "/tmp/", "/home/", "/root/", "/work/",
                "Traceback")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_outputs_are_clean(path: Path):
    """What the repository shows: no TensorFlow warnings or debug lines, no path of the machine the
    notebook ran on, no error, and no per-run timing metadata."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        assert "execution" not in cell.get("metadata", {}), f"cell {i} stores execution timings"
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"cell {i} stored an error"
            text = out.get("text", "") if out.get("output_type") == "stream" else \
                "".join(v for k, v in out.get("data", {}).items() if k.startswith("text/") and isinstance(v, str))
            for needle in STORED_NOISE:
                assert needle not in text, f"cell {i}: {needle!r} in a stored output: {text[:300]!r}"
            if out.get("output_type") == "stream":
                assert out.get("name") == "stdout", f"cell {i} stored stderr output: {text[:300]!r}"
