"""Run the app's GPU functions under the real `spaces` package (ZeroGPU mode) and pickle what came back.

`python tests/_spaces_client.py OUT SCENARIO...` with `SPACES_ZERO_GPU=true` and `SPACES_ZERO_DEVICE_API_URL`
pointing at the stand-in service (`tests/_zerogpu_service.py`). `draggan.service.gpu` is imported after `spaces`
has patched torch, so its functions carry spaces' own `GPU` wrappers: each call is scheduled with the service,
runs in a forked worker that the service allowed, and its arguments and yields cross spaces' pickling queues.
No Gradio request is needed: outside one, spaces schedules as an anonymous visitor.

This is a CPU-only machine. A CUDA build of torch has a few things that spaces reads at import, filled in
below; and the one step of a worker's start that needs a real GPU, attaching it (`spaces.zero.torch.init`:
`torch.Tensor([0]).cuda()`, and `move`: copy the tensors packed at start-up to it, synchronise), does
nothing here. Everything else is spaces' code as shipped. Exit status 3: spaces could not start here.

Scenarios (OUT gets a list of their results, in order):
- "calls": `new_image`, then `drag` (a generator) on the fixture model: both results.
- "follow": `handlers.make_state`, two points, `handlers.start_drag` + `handlers.follow` in chunks of
  `CHUNK_S`: the updates that came back, the error the handler raised (type, text), the state's last snapshot.
- "stop": the same drag, Stop pressed (`job.stop.set()`, as `handlers.stop_drag` does) after 3 updates: the
  updates and the state's last snapshot.
- "app": the app launched on 127.0.0.1 (fixture models, CPU), its `/drag` API called twice with gradio_client,
  the second time as a visitor with a ZeroGPU token (`X-IP-Token`): each call's result or error text.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository, run as a script from tests/
CHUNK_S = 2.0


def _no_cuda() -> None:
    raise AssertionError("Torch not compiled with CUDA enabled")


def _not_in_bad_fork() -> bool:
    return False


try:
    _cpu_build = torch.version.cuda
    torch.version.cuda = "12.4"                     # picks spaces' CUDA memory-stats table (read once, at import)
    if not hasattr(torch._C, "_cuda_init"):
        torch._C._cuda_init = _no_cuda              # saved by spaces, put back in the worker
    torch.cuda._is_in_bad_fork = _not_in_bad_fork   # a CPU build's is a lambda, which spaces' fork check can't pickle

    import spaces  # noqa: F401 (before draggan, as ZeroGPU asks: it patches torch for the server process)
    import spaces.zero.torch as zero_torch
    from spaces.zero.decorator import decorated_cache

    torch.version.cuda = _cpu_build
    zero_torch.init = lambda nvidia_uuid: None      # no GPU to attach in the worker on this machine
    zero_torch.move = lambda callback=None: None
except Exception as exc:  # a spaces release this stand-in does not fit
    print(f"spaces cannot start in ZeroGPU mode here: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(3)

from _plain_gpu import PLAIN  # noqa: E402
from draggan.engine import snapshot as snapshots  # noqa: E402
from draggan.service import gpu, handlers  # noqa: E402
from draggan.service.models import ModelRef, shared_cache  # noqa: E402

SG2 = Path(__file__).parent / "data" / "stylegan2-tiny-64.pkl"
REF = ModelRef(str(SG2), "tiny")


def calls() -> dict:
    config = handlers.make_config(lr=5e-3, max_steps=6)
    snap, image = gpu.new_image(REF, "cpu", 3, 0.7, config)
    moved = snapshots.set_points(snap, [(20, 20)], [(34, 28)])
    updates = list(gpu.drag(REF, "cpu", moved, 5, None, float("inf"), 2))
    return {"new_image": (snap, image), "drag": updates}


def follow() -> dict:
    ui = handlers.make_state(REF, "cpu", 1, 0.7, "w+", handlers.make_config(lr=1e-3, max_steps=2000), 2)
    ui.snap = snapshots.set_points(ui.snap, [(4, 4)], [(60, 60)])
    job = handlers.start_drag(ui)
    updates, error = [], None
    try:
        for update in handlers.follow(ui, job, budget_s=CHUNK_S):
            updates.append(update)
    except Exception as exc:
        error = (type(exc).__name__, str(exc))
    return {"updates": updates, "error": error, "snap": ui.snap, "running": ui.running}


def stop() -> dict:
    ui = handlers.make_state(REF, "cpu", 1, 0.7, "w+", handlers.make_config(lr=1e-3, max_steps=2000), 2)
    ui.snap = snapshots.set_points(ui.snap, [(4, 4)], [(60, 60)])
    job = handlers.start_drag(ui)
    updates = []
    for update in handlers.follow(ui, job, budget_s=60.0):
        updates.append(update)
        if len(updates) == 3:
            job.stop.set()
    return {"updates": updates, "snap": ui.snap, "running": ui.running}


def app() -> dict:
    import base64
    import json
    import os

    import gradio_client

    from _app_server import FIXTURE_MODELS, free_port

    os.environ.update(DRAGGAN_EXTRA_MODELS=os.pathsep.join(f"{k}={v}" for k, v in FIXTURE_MODELS.items()),
                      GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    import app as studio_app
    from draggan import settings
    from draggan.service.studio import Studio

    settings.reload()
    demo = studio_app.build_demo(Studio(device="cpu", hub_online=False))
    port = free_port()
    studio_app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    payload = base64.urlsafe_b64encode(json.dumps({"user": "visitor"}).encode()).decode().rstrip("=")
    results = []
    try:
        for headers in ({}, {"X-IP-Token": f"header.{payload}.signature"}):
            client = gradio_client.Client(f"http://127.0.0.1:{port}/", headers=headers, verbose=False)
            try:
                _, info = client.predict("Tiny StyleGAN2 (local)", 0, json.dumps([[20, 20, 34, 30]]), 4, 0.7, "w+",
                                         0.002, api_name="/drag")
                results.append(("ok", info))
            except Exception as exc:
                results.append((type(exc).__name__, str(exc)))
    finally:
        demo.close()
    return {"api": results}


def main(out: str, scenarios: list[str]) -> None:
    torch.set_num_threads(1)
    shared_cache().get(REF.source, torch.device("cpu"))   # loaded before any fork, as the app's preload does
    results = [{"calls": calls, "follow": follow, "stop": stop, "app": app}[name]() for name in scenarios]
    wrapped = sorted(name for name, fn in PLAIN.items() if fn in decorated_cache)
    Path(out).write_bytes(pickle.dumps({"results": results, "wrapped": wrapped}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
