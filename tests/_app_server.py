"""Launch the real app in-process on a free localhost port with the fixture models registered (test helper)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from bench.soak import free_port

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
FIXTURE_MODELS = {"Tiny StyleGAN2": DATA / "stylegan2-tiny-64.pkl", "Tiny StyleGAN3": DATA / "stylegan3-t-tiny-64.pkl"}


@contextlib.contextmanager
def launched_app(monkeypatch, env: dict[str, str] | None = None) -> Iterator[tuple[str, object]]:
    """Yield (url, demo) of the app launched in-process on a free localhost port: offline, CPU, the fixture
    models registered, then `env` (which may replace them); its reaper stopped, the app closed and its SSR Node
    server stopped afterwards (`Blocks.close` leaves that to Gradio's SIGTERM/SIGINT handler, which a test never
    sends, so each SSR launch would leave a Node process behind)."""
    variables = {"DRAGGAN_EXTRA_MODELS": os.pathsep.join(f"{k}={v}" for k, v in FIXTURE_MODELS.items()),
                 "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app
    from draggan import settings

    settings.reload()
    from draggan.service.studio import Studio

    demo = app.build_demo(Studio(device="cpu", hub_online=False))
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.reaper.stop()
        demo.close()
        if getattr(demo, "node_process", None) is not None:
            from gradio.node_server import stop_node_process
            stop_node_process(demo.node_process)


@contextlib.contextmanager
def running_app(monkeypatch) -> Iterator[tuple[str, object]]:
    """Yield (url, Studio) of `launched_app` with its default settings."""
    with launched_app(monkeypatch) as (url, demo):
        yield url, demo.panels.model.studio


def build_app(monkeypatch, tmp_path: Path | None = None, extra_models: dict[str, Path] | None = None,
              **studio_kw):
    """`app.build_demo` without a server, on the given local models (default: the tiny StyleGAN2 fixture),
    offline, CPU, its session reaper stopped; with `tmp_path` the converted cache and the app's temp folder
    live there. The handlers are `demo.panels`, the components `demo.page`."""
    models = extra_models if extra_models is not None else {"Tiny": FIXTURE_MODELS["Tiny StyleGAN2"]}
    monkeypatch.setenv("DRAGGAN_EXTRA_MODELS", os.pathsep.join(f"{k}={v}" for k, v in models.items()))
    if tmp_path is not None:
        monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "converted"))
        monkeypatch.setenv("DRAGGAN_TEMP_DIR", str(tmp_path / "app-tmp"))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app
    from draggan import settings
    from draggan.service.studio import Studio

    settings.reload()
    demo = app.build_demo(Studio(device="cpu", hub_online=False, **studio_kw))
    demo.reaper.stop()
    return demo


def app_panels(monkeypatch, extra_models: dict[str, Path] | None = None, **studio_kw):
    """(studio, page, panels) of `build_app`."""
    demo = build_app(monkeypatch, extra_models=extra_models, **studio_kw)
    return demo.panels.model.studio, demo.page, demo.panels

