"""The app's three layers keep their direction (read from the code's own import statements, lazy ones included):

- `draggan.app` (the Gradio page) may import the service and the server; nothing imports `draggan.app`;
- `draggan.service` (what a visitor can ask for) may import the server and the core (engine, checkpoints, ...),
  never the page;
- `draggan.server` (what hosts the app) imports neither the page nor the service;
- the core (every other package) imports none of the three;
- only `draggan.app`, the entry point `app.py` and the ZeroGPU wrapper (`draggan/service/gpu.py`, which reads
  the `gr.Error` ZeroGPU fails a call with) import Gradio.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("app", "service", "server")
MAY_IMPORT = {"app": {"app", "service", "server"}, "service": {"service", "server"}, "server": {"server"},
              "core": set()}
GRADIO_ALLOWED = ("draggan/app/", "app.py", "draggan/service/gpu.py")


def _module(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in `path` (or in `text` as if it were `path`), relative ones
    resolved."""
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    package = _module(path) if path.name == "__init__.py" else _module(path)[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]   # `from draggan import app`
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "draggan" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else "core"


def _sources() -> list[Path]:
    return sorted((ROOT / "draggan").rglob("*.py")) + [ROOT / "app.py"]


def test_the_layers_exist_and_the_old_package_is_gone():
    for layer in LAYERS:
        assert (ROOT / "draggan" / layer / "__init__.py").is_file()
    assert not list((ROOT / "draggan" / "ui").rglob("*.py")), "draggan/ui was split into app, service and server"


def _wrong_imports(path: Path, text: str | None = None) -> list[str]:
    own = "entry" if path == ROOT / "app.py" else _layer(".".join(_module(path)))
    wrong = []
    for line, module in _imports(path, text):
        target = _layer(module)
        if own != "entry" and target not in (None, "core") and target not in MAY_IMPORT[own]:
            wrong.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {module} ({target})")
    return wrong


def _gradio_imports(path: Path, text: str | None = None) -> list[int]:
    if path.relative_to(ROOT).as_posix().startswith(GRADIO_ALLOWED):
        return []
    return [line for line, module in _imports(path, text) if module == "gradio" or module.startswith("gradio.")]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_one_way(path):
    wrong = _wrong_imports(path)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_page_imports_gradio(path):
    lines = _gradio_imports(path)
    assert not lines, f"{path.relative_to(ROOT)}:{lines[0]} imports Gradio; only {', '.join(GRADIO_ALLOWED)} may"


def test_the_checker_sees_a_wrong_import():
    """The checks above can fail: a lazy import of the service or of Gradio in a server module is seen, and
    an import of the page from the core."""
    text = "def f():\n    from ..service import handlers\n    import gradio as gr\n"
    server = ROOT / "draggan" / "server" / "probe.py"
    assert _wrong_imports(server, text) == ["draggan/server/probe.py:2 (server) imports draggan.service (service)",
                                            "draggan/server/probe.py:2 (server) imports draggan.service.handlers "
                                            "(service)"]
    assert _gradio_imports(server, text) == [3]
    assert _wrong_imports(ROOT / "draggan" / "engine" / "probe.py", "from draggan.app import served\n")
    assert not _wrong_imports(ROOT / "draggan" / "app" / "probe.py", text)
