"""The shape the code keeps: small modules, format knowledge in format packages, imports pointing down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ckptsurgeon import formats

PACKAGE = Path(__file__).resolve().parents[1] / "ckptsurgeon"
MODULES = sorted(PACKAGE.rglob("*.py"))
FORMAT_PACKAGES = [PACKAGE / "formats" / name for name in formats.PACKAGES]
MAX_LINES = 700


def rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def imported(tree: ast.AST) -> set[str]:
    """Every module an import statement names, and every ``module.attr`` a ``from`` import takes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_no_module_is_longer_than_700_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_nothing_unpickles_and_nothing_calls_numpy_load(path: Path) -> None:
    tree = ast.parse(path.read_text())
    names = imported(tree)
    if rel(path) == "ckptsurgeon/formats/torch/unpickle.py":  # the one restricted unpickler parses opcodes only
        names -= {"pickletools"}
    assert not names & {"pickle", "pickletools", "numpy.load", "_pickle"}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "load"
             and isinstance(n.value, ast.Name) and n.value.id in ("np", "numpy")]
    assert not calls, f"{rel(path)} line {calls[0].lineno}: numpy.load"


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_libraries_stay_where_they_belong(path: Path) -> None:
    names = {n.split(".")[0] for n in imported(ast.parse(path.read_text()))}
    where = rel(path)
    if "h5py" in names:
        assert where == "ckptsurgeon/formats/hdf5/_h5.py"
    if names & {"rich", "typer"}:
        assert where.startswith("ckptsurgeon/cli/")


def _format_names() -> set[str]:
    return {s.name for s in formats.FORMATS} | {s.family for s in formats.FORMATS}


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_no_format_name_is_compared_outside_its_package(path: Path) -> None:
    """``if fmt == "npz"`` / ``in ("hdf5", "keras")`` belongs in a format's own package, or in its spec."""
    if any(path.is_relative_to(p) for p in FORMAT_PACKAGES):
        return
    names = _format_names()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            consts = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            for c in consts:
                assert not (isinstance(c, ast.Constant) and c.value in names), \
                    f"{rel(path)} line {node.lineno} compares with the format name {c.value!r}"


def test_format_packages_light_init_imports_nothing_heavy() -> None:
    """Each format package's __init__ (its specs) imports only the standard library and the registry's base."""
    for package in FORMAT_PACKAGES:
        names = imported(ast.parse((package / "__init__.py").read_text()))
        assert not {n.split(".")[0] for n in names} & {"numpy", "h5py", "ml_dtypes", "safetensors"}, package.name


def test_the_help_lists_the_registered_formats() -> None:
    from ckptsurgeon.cli import options

    writable = [s.name for s in formats.FORMATS if s.writer is not None and not s.shards_of]
    assert ", ".join(writable) == options.WRITABLE_FORMATS
    assert ", ".join(e for s in formats.FORMATS for e in s.extensions) == options.EXTENSIONS
