"""Structure of the package: no import cycles, layering, one error hierarchy, packaging metadata."""

from __future__ import annotations

import ast
import pickle
import sys
from pathlib import Path

import pytest
import torch

import draggan.errors as errors

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "draggan"


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """draggan modules that running `module` may import: every import statement anywhere in the file (lazy
    ones inside functions too), `from pkg import name` resolved to the submodule `pkg.name` where there is one,
    plus the package `__init__`s an import runs first (except packages that contain `module` itself)."""
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    edges = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in modules and name != module and not module.startswith(name + "."):
                edges.add(name)
    return edges


def _import_graph() -> dict[str, set[str]]:
    modules = _module_names()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_relative_lazy_and_package_imports() -> None:
    graph = _import_graph()
    assert "draggan.checkpoints.loader" in graph["draggan.checkpoints"]            # from .loader import ...
    assert "draggan.networks.stylegan3" in graph["draggan.checkpoints.builders"]   # lazy, inside a function
    assert "draggan.checkpoints" in graph["draggan.cli"]                           # package __init__ runs first
    assert "draggan.checkpoints.cache" in graph["draggan.cli"]                     # from .checkpoints import cache


def test_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_networks_import_only_networks() -> None:
    """The generator modules are the bottom layer: loaders, engine and UI build on them, never the reverse."""
    graph = _import_graph()
    for module, targets in graph.items():
        if module.startswith("draggan.networks"):
            assert all(t.startswith("draggan.networks") for t in targets), (module, targets)


# Names of the networks' insides: blocks and layers, their convolutions, filters, noise and style counts. Only
# draggan/networks (which owns its forward passes) and the format converters of draggan/checkpoints, which map
# parameter names, may use them; the engine, inversion and the page go through `generator.DragSynthesis`.
BLOCK_INTERNALS = {"conv0", "conv1", "torgb", "resample_filter", "noise_const", "noise_strength", "num_conv",
                   "num_torgb", "block_resolutions", "layer_names", "affine", "w_avg"}
BLOCK_NAME_RE = __import__("re").compile(r"^(b\d+|L\d+_.*|.*\.?(conv0|conv1|torgb|noise_const)(\..*)?)$")


def _internals_named(source: str) -> list[str]:
    """Where `source` names a block's internals: attributes, names in strings, block names built by f-strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in BLOCK_INTERNALS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and BLOCK_NAME_RE.match(node.value):
            found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
                and node.values[0].value in ("b", "L") and len(node.values) > 1:
            found.append(f"line {node.lineno}: f-string {node.values[0].value!r}{{...}}")
    return found


def test_the_checker_finds_block_internals() -> None:
    planted = ('blk = getattr(synthesis, f"b{res}")\nk = blk.conv0.weight.shape[-1]\nf = blk.resample_filter\n'
               'n = dict(synthesis.named_buffers())["b8.conv0.noise_const"]\nm = G.mapping.w_avg\n')
    assert len(_internals_named(planted)) == 5
    assert _internals_named("x = synthesis.features(ws, block, box)\nw = f'{a}b{c}'\n") == []


def test_engine_inversion_and_the_page_name_no_block_internals() -> None:
    """The networks own their forward passes (windowed features, direct render and preview, noise maps,
    w_avg's EMA): a module of engine/, inversion/ or the page (app.py, draggan/app, service, server) that
    names a block's insides fails here."""
    paths = [ROOT / "app.py"] + [p for sub in ("engine", "inversion", "app", "service", "server")
                                 for p in sorted((PACKAGE / sub).rglob("*.py"))]
    assert len(paths) > 40
    offenders = {str(p.relative_to(ROOT)): found for p in paths if (found := _internals_named(p.read_text()))}
    assert offenders == {}


def test_every_network_module_prints_its_settings() -> None:
    from draggan.networks import ops, stylegan2, stylegan3

    for module in (ops, stylegan2, stylegan3):
        for name, cls in vars(module).items():
            if isinstance(cls, type) and issubclass(cls, torch.nn.Module) and cls.__module__ == module.__name__ \
                    and name != "Generator":
                assert "extra_repr" in vars(cls), f"{module.__name__}.{name} has no extra_repr"


def test_every_error_is_a_draggan_error_with_its_builtin_base() -> None:
    from draggan import cli, recipes
    from draggan.checkpoints import (ModelFormatError, ModelUnavailableError, UnknownModelError,
                                     UnsafePickleError, nvidia_pickle, zoo)
    from draggan.inversion import FaceAlignmentUnavailable, InversionCancelled

    assert (ModelFormatError, ModelUnavailableError, UnknownModelError, UnsafePickleError) == \
        (errors.ModelFormatError, errors.ModelUnavailableError, errors.UnknownModelError, errors.UnsafePickleError)
    assert (nvidia_pickle.UnsafePickleError, zoo.UnknownModelError, recipes.RecipeError, cli.CommandError) == \
        (errors.UnsafePickleError, errors.UnknownModelError, errors.RecipeError, errors.CommandError)
    assert (FaceAlignmentUnavailable, InversionCancelled) == \
        (errors.FaceAlignmentUnavailable, errors.InversionCancelled)
    builtin = {errors.ModelUnavailableError: OSError, errors.ModelFormatError: ValueError,
               errors.UnsafePickleError: pickle.UnpicklingError, errors.UnknownModelError: KeyError,
               errors.RecipeError: ValueError, errors.SettingsError: ValueError,
               errors.FaceAlignmentUnavailable: RuntimeError, errors.InversionCancelled: RuntimeError,
               errors.UserError: Exception, errors.CommandError: Exception,
               errors.ModelIntegrityError: errors.ModelUnavailableError, errors.WorkerError: RuntimeError,
               errors.LimitError: errors.UserError, errors.UploadError: errors.UserError,
               errors.PhotoError: ValueError, errors.ModelNotFoundError: FileNotFoundError,
               errors.ZooError: ValueError}
    defined = {obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception)}
    assert defined == set(builtin) | {errors.DragGANError}
    for cls, base in builtin.items():
        assert issubclass(cls, errors.DragGANError) and issubclass(cls, base), cls
    assert str(errors.UnknownModelError("no model 'x'")) == "no model 'x'"
    assert errors.InversionCancelled(7).step == 7


def test_no_other_exception_classes_in_the_package() -> None:
    """Every exception class is defined in draggan/errors.py."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                assert not any(b.endswith(("Error", "Exception")) for b in bases), f"{path.name}: {node.name}"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_pyproject_matches_requirements() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(project["dependencies"]) == sorted(r for r in requirements if r)
    dev = [line.split("#")[0].strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()]
    assert sorted(project["optional-dependencies"]["dev"]) == sorted(r for r in dev if r and not r.startswith("-r"))
    assert project["name"] == "draggan-studio" and project["requires-python"] == ">=3.10"
    assert project["scripts"]["draggan"] == "draggan.cli:main"
