"""Imports only point down the project's layers, and private names stay in their module.

Every module of the project's packages is parsed with ``ast`` (nothing is imported), including
the imports inside functions (the lazy ones that keep ``--help`` fast) and ``import_module``
calls with a literal name. The layer order is stated once, in :data:`LAYERS`.
"""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The layers, bottom to top. A module may import a project package of its own layer or of a
#: layer below, never one above: quantization (``ecqx_tf``) knows nothing of the data sets, the
#: zoo or the exporters; the data sets and the zoo (``models``) may use ``ecqx_tf``'s registry
#: and atomic writes; the exporters (``firmware_export``) read ``ecqx_tf``'s quantized kernels;
#: only the top (the command lines, the main job, the benchmarks) combines all of them.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("ecqx_tf",),
    ("models",),
    ("firmware_export",),
    ("cli", "pipeline", "bench"),
)

RANK: Dict[str, int] = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


class Import(NamedTuple):
    module: str  # the importing module, dotted
    line: int
    target: str  # the imported module, dotted and absolute
    names: Tuple[str, ...]  # names taken from it (``from target import a, b``); () for ``import target``


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _absolute(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    """The absolute module of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[Import]:
    """Every import in ``source`` (module level and inside functions/classes)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, node.lineno, alias.name, ())
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, is_package, node.level, node.module)
            yield Import(module, node.lineno, target, tuple(a.name for a in node.names))
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
              in ("import_module", "_import_module") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            name = node.args[0].value
            level = len(name) - len(name.lstrip("."))
            yield Import(module, node.lineno, _absolute(module, is_package, level, name.lstrip(".") or None), ())


def upward_imports(imports: Sequence[Import]) -> List[str]:
    """The imports that point to a higher layer, as readable lines."""
    bad = []
    for imp in imports:
        src, dst = RANK.get(imp.module.split(".")[0]), RANK.get(imp.target.split(".")[0])
        if src is not None and dst is not None and dst > src:
            bad.append(f"{imp.module}:{imp.line} imports {imp.target} (layer {dst + 1} "
                       f"{'/'.join(LAYERS[dst])} is above layer {src + 1} {'/'.join(LAYERS[src])})")
    return bad


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _owner(module: str) -> str:
    """Where a private name of ``module`` may be used: the module itself, or, for a private module
    (``ecqx_tf.methods._qat``), its package."""
    parts = module.split(".")
    while parts and _private(parts[-1]):
        parts = parts[:-1]
    return ".".join(parts) if len(parts) < len(module.split(".")) else module


def _inside(module: str, owner: str) -> bool:
    return module == owner or module.startswith(owner + ".")


def private_crossings(source: str, module: str, is_package: bool = False) -> List[str]:
    """``from X import _name``, ``import X._mod`` and ``X._name`` (``X`` an imported project
    module) where ``X`` is another module of the project."""
    bad = []
    aliases: Dict[str, str] = {}  # local name -> project module it refers to
    for imp in imports_of(source, module, is_package):
        if imp.target.split(".")[0] not in RANK:
            continue
        owner = _owner(imp.target)
        if not _inside(module, owner):
            if owner != imp.target:
                bad.append(f"{module}:{imp.line} imports the private module {imp.target}")
            for n in imp.names:
                if _private(n):
                    bad.append(f"{module}:{imp.line} imports the private name {imp.target}.{n}")
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in RANK:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            if base.split(".")[0] in RANK:
                for a in node.names:
                    aliases[a.asname or a.name] = f"{base}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                target = ".".join([aliases[value.id]] + chain[::-1])
                spec_ok = target.split(".")[0] in RANK and _is_module(target)
                if spec_ok and not _inside(module, _owner(target)):
                    bad.append(f"{module}:{node.lineno} uses the private name {target}.{node.attr}")
    return bad


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def project_modules() -> Iterator[Tuple[Path, str, bool]]:
    for pkg in RANK:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path, module_name(path), path.name == "__init__.py"


# ------------------------------------------------------------------------------------------------
def test_layers_name_every_package_of_the_project():
    """A new top-level package must be placed in LAYERS (or it would escape the check)."""
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} | {p.name for p in ROOT.iterdir()
                                                                   if p.is_dir() and any(p.glob("*.py"))}
    unplaced = sorted(found - set(RANK) - {"tests", "notebooks", "docs", "build"})
    assert not unplaced, f"packages not placed in LAYERS: {unplaced}"
    for pkg in RANK:
        assert (ROOT / pkg).is_dir(), pkg


def test_no_module_imports_a_higher_layer():
    bad = []
    for path, module, is_package in project_modules():
        bad += upward_imports(list(imports_of(path.read_text(encoding="utf-8"), module, is_package)))
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_modules():
    bad = []
    for path, module, is_package in project_modules():
        bad += private_crossings(path.read_text(encoding="utf-8"), module, is_package)
    assert not bad, "private names used outside their module:\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------
# The checks themselves can fail (synthetic sources).
UPWARD = '''
import numpy as np
from ecqx_tf.io import atomic_write_json   # down: fine

def lazy():
    from firmware_export.tflm import convert   # up, inside a function
    import models.datasets                      # up
    return convert

from . import grid                               # same package
'''


def test_check_finds_lazy_and_module_level_upward_imports():
    bad = upward_imports(list(imports_of(UPWARD, "ecqx_tf.methods.sharing")))
    assert bad == [
        "ecqx_tf.methods.sharing:6 imports firmware_export.tflm (layer 3 firmware_export is above layer 1 ecqx_tf)",
        "ecqx_tf.methods.sharing:7 imports models.datasets (layer 2 models is above layer 1 ecqx_tf)",
    ]
    # the same source one layer up is fine, except what is still above
    assert [b.split(" imports ")[1].split(" ")[0] for b in
            upward_imports(list(imports_of(UPWARD, "models.zoo")))] == ["firmware_export.tflm"]
    assert upward_imports(list(imports_of(UPWARD, "cli.compress"))) == []


def test_check_resolves_relative_imports_and_import_module():
    src = "from ..cli import main\nfrom importlib import import_module\nm = import_module('bench.common')\n"
    assert [(i.target, i.names) for i in imports_of(src, "firmware_export.x")] == [
        ("cli", ("main",)), ("importlib", ("import_module",)), ("bench.common", ())]
    # ``from ..cli import main`` in firmware_export/x.py means ``from cli import main``: upward
    assert upward_imports(list(imports_of(src, "firmware_export.x"))) == [
        "firmware_export.x:1 imports cli (layer 4 cli/pipeline/bench is above layer 3 firmware_export)",
        "firmware_export.x:3 imports bench.common (layer 4 cli/pipeline/bench is above layer 3 firmware_export)"]
    # in a package's __init__ one dot is the package itself
    assert [i.target for i in imports_of("from .api import METHODS", "ecqx_tf.methods", is_package=True)] == [
        "ecqx_tf.methods.api"]
    assert upward_imports(list(imports_of("from .. import cli", "ecqx_tf.methods.x"))) == []  # ecqx_tf.cli


def test_private_check_flags_names_modules_and_attributes():
    src = ("from ecqx_tf.assign import _beta_step, ecq_assign\n"
           "from ecqx_tf.relevance import native\n"
           "from ecqx_tf.methods import _qat\n"
           "x = native._chain_layers\n"
           "y = native.public\n")
    assert private_crossings(src, "ecqx_tf.methods.pruning") == [
        "ecqx_tf.methods.pruning:1 imports the private name ecqx_tf.assign._beta_step",
        "ecqx_tf.methods.pruning:4 uses the private name ecqx_tf.relevance.native._chain_layers",
    ]
    # a private module is private to its package: fine inside ecqx_tf.methods, not outside
    assert private_crossings("from ecqx_tf.methods._qat import finetune_qat\n", "ecqx_tf.methods.api") == []
    assert private_crossings("from ecqx_tf.methods._qat import finetune_qat\n", "cli.compress") == [
        "cli.compress:1 imports the private module ecqx_tf.methods._qat"]
    # a module's own private names are its business
    assert private_crossings("from ecqx_tf.assign import _beta_step\n", "ecqx_tf.assign") == []


def test_layer_table_is_consistent():
    assert len(RANK) == sum(len(layer) for layer in LAYERS), "a package is listed in two layers"
    for pkg in RANK:
        assert importlib.util.find_spec(pkg) is not None or (ROOT / pkg).is_dir(), pkg


@pytest.mark.parametrize("layer", range(len(LAYERS)))
def test_each_layer_imports_only_what_is_at_or_below_it(layer):
    """Synthetic: a module of each layer importing every package is flagged for exactly the
    packages above it."""
    src = "\n".join(f"import {pkg}" for pkg in RANK)
    module = LAYERS[layer][0] + ".m"
    flagged = {b.split(" imports ")[1].split(" ")[0] for b in upward_imports(list(imports_of(src, module)))}
    assert flagged == {pkg for pkg, r in RANK.items() if r > layer}
