"""The app's accelerator work, as functions of picklable values (ZeroGPU's contract).

On Hugging Face ZeroGPU every `@spaces.GPU` function runs in a forked worker: its arguments are pickled in,
whatever it returns or yields is pickled back, and nothing it changes in memory is seen by the server. So
each function here takes a `ModelRef` (which generator), a `DragSnapshot` or plain settings, and returns or
yields new values, which the server stores in the visitor's `gr.State`. Nothing here touches a `UIState`.

- Generators: zoo and bundled models are loaded in the server process at start-up (`preload`), so forked
  workers inherit them; a model made later (an upload, a photo's tuned copy) is a converted safetensors folder
  that whichever process runs the step reads (`models.shared_cache()`).
- Stop: a `StopFlag` is a file path; the server creates the file, the worker checks for it between steps.
- Time: ZeroGPU grants a call the duration it asks for. A drag runs in chunks: `drag` returns after `budget_s`
  seconds with the snapshot it reached, and the next call resumes it exactly (the optimiser state travels
  along); each call asks for its chunk's budget plus start-up (`drag_seconds`), and the last chunk of a drag
  is sized to the steps it has left (`handlers.next_chunk_seconds`).
- Workers are kept: spaces reuses a function's forked worker for later calls while it is alive and idle, so
  whatever a call loads there stays for the next one; `generator` never serves a released private model.

`gpu(duration)` wraps a function for the platform: `spaces.GPU` on ZeroGPU, the fork-and-pickle stand-in
(`forked.py`) when `DRAGGAN_FORKED_GPU=1`, otherwise nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .. import settings
from ..errors import DragGANError, ModelNotFoundError
from ..engine import DragConfig, DragSession, RenderPolicy
from ..engine.snapshot import DragSnapshot
from .models import ModelRef, shared_cache, store_private_model


@dataclasses.dataclass(frozen=True)
class StopFlag:
    """A stop request that reaches another process: the server creates `path`, the worker sees it."""

    path: str

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def set(self) -> None:
        Path(self.path).touch()

    def clear(self) -> None:
        Path(self.path).unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class DragUpdate:
    """One step of a running drag as the page shows it; the last update of a call carries the snapshot."""

    step: int
    max_steps: int
    handles: tuple[tuple[float, float], ...]
    targets: tuple[tuple[float, float], ...]
    distances: tuple[float, ...]
    seconds: float                        # wall time of the call so far
    image: np.ndarray | None = None       # uint8 [H, W, 3] when rendered
    image_kind: str = ""                  # "full" (exact) or "preview" (the cheaper live view) when rendered
    snapshot: DragSnapshot | None = None  # set on the last update of the call
    end: str = ""                         # last update: "arrived", "limit", "stopped" or "budget"


def _decorator(duration: int | Callable[..., int]) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` where the `spaces` package is installed (it changes nothing outside ZeroGPU);
    the fork-and-pickle stand-in instead for calls made while `DRAGGAN_FORKED_GPU=1` (the setting is looked up per
    call, so tests can switch it). `duration`: seconds, or a callable with the function's signature that sizes
    each call's grant from its arguments (spaces calls it before scheduling; a smaller request queues sooner and
    spends less of the visitor's quota)."""
    try:
        import spaces
        platform = spaces.GPU(duration=duration)
    except ImportError:
        platform = lambda fn: fn  # noqa: E731

    def decorate(fn: Callable) -> Callable:
        from ..server.forked import forked

        on_platform, in_fork = platform(fn), forked(fn, duration)
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                yield from (in_fork if forked_wanted() else on_platform)(*args, **kwargs)
            return generator

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return (in_fork if forked_wanted() else on_platform)(*args, **kwargs)
        return call
    return decorate


def forked_wanted() -> bool:
    return settings.get().forked_gpu


def on_zero_gpu() -> bool:
    """Whether this process runs on ZeroGPU hardware (the platform's `SPACES_ZERO_GPU` flag)."""
    return settings.flag("SPACES_ZERO_GPU")


def drag_grant() -> int:
    """The ZeroGPU seconds a drag call may ask for (`DRAGGAN_GPU_DURATION`, at least 10), read when asked."""
    return max(10, settings.get().gpu_duration)


def invert_grant(*args: Any, **kwargs: Any) -> int:
    """The ZeroGPU seconds of a photo inversion or recipe replay (`DRAGGAN_GPU_INVERT_DURATION`, at least 10),
    read at each call (spaces calls it with the function's arguments)."""
    return max(10, settings.get().gpu_invert_duration)


def __getattr__(name: str) -> int:
    """`DRAG_SECONDS` / `INVERT_SECONDS`: the settings as they are now (read when used, never at import)."""
    if name == "DRAG_SECONDS":
        return drag_grant()
    if name == "INVERT_SECONDS":
        return invert_grant()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


START_SECONDS = 5   # a call's start-up on ZeroGPU (the grant, the worker, CUDA) and its closing render
gpu = _decorator(lambda *args, **kwargs: drag_grant())
gpu_long = _decorator(invert_grant)


def drag_seconds(ref: ModelRef, device: str, snap: DragSnapshot, max_steps: int, stop: StopFlag | None,
                 budget_s: float, render_every: int = 0, policy: RenderPolicy | None = None) -> int:
    """The GPU seconds one `drag` call asks for (`_drag`'s signature, as spaces calls it): the chunk's
    `budget_s` plus start-up, at most `drag_grant()` (an unbounded chunk asks for that)."""
    return int(math.ceil(min(drag_grant(), budget_s + START_SECONDS)))


def generator(ref: ModelRef, device: str) -> torch.nn.Module:
    """The shared, read-only generator of `ref` on `device` (loaded once per process).

    A kept ZeroGPU worker holds what it loaded across calls, so a private model (a photo's tuned copy) is
    served only while its folder exists: a released session's copy is dropped from this process's cache and
    refused (`ModelNotFoundError`, a `FileNotFoundError`), never served from memory. A re-tuned photo is a new folder (`store_private_model`
    names each copy anew), so no source ever changes content under a loaded generator."""
    if ref.private and not os.path.isdir(ref.source):
        shared_cache().forget(ref.source)
        raise ModelNotFoundError(f"the tuned model {ref.label!r} was released with its session")
    return shared_cache().get(ref.source, torch.device(device))


# ----------------------------------------------------------------------------------------------------------

def _new_image(ref: ModelRef, device: str, seed: int, psi: float, config: DragConfig) -> tuple[DragSnapshot, np.ndarray]:
    """A new session's snapshot at (seed, ψ) and its image."""
    session = DragSession(generator(ref, device), seed=seed, psi=psi, config=config)
    return session.snapshot(), session.render()


def _render(ref: ModelRef, device: str, snap: DragSnapshot) -> np.ndarray:
    """The image of a snapshot's current latent."""
    return DragSession.from_snapshot(generator(ref, device), snap).render()


def _drag(ref: ModelRef, device: str, snap: DragSnapshot, max_steps: int, stop: StopFlag | None,
          budget_s: float, render_every: int = 0, policy: RenderPolicy | None = None) -> Iterator[DragUpdate]:
    """Run (or resume) the snapshot's drag (`DragSession.run`): an update per step, with an image when the
    render `policy` says so (or every `render_every` steps without one), and a last update with the exact
    image, the new snapshot and why it ended.

    `max_steps` counts the drag's steps so far. The call returns after about `budget_s` seconds ("budget") so
    that it fits a ZeroGPU grant; its snapshot continues the drag exactly, and the whole drag becomes one
    history entry when it ends (arrived, step limit or stop)."""
    t0 = time.perf_counter()
    session = DragSession.from_snapshot(generator(ref, device), snap)
    remaining = max(0, int(max_steps) - session.steps)
    last = None
    for result in session.run(max_steps=remaining, render_every=render_every, stop_event=stop, policy=policy,
                              budget_s=None if budget_s == float("inf") else budget_s):
        last = result
        yield DragUpdate(step=result.step, max_steps=max_steps, handles=tuple(result.handles),
                         targets=tuple(result.targets), distances=tuple(result.distances),
                         seconds=time.perf_counter() - t0, image=result.image, image_kind=result.image_kind or "",
                         snapshot=session.snapshot() if result.end else None, end=result.end)
    if last is None:                      # at the step limit already, or stopped before the first step
        snapshot = session.snapshot()
        yield DragUpdate(step=snapshot.steps, max_steps=max_steps, handles=snapshot.handles,
                         targets=snapshot.targets,
                         distances=tuple(float(np.hypot(tx - x, ty - y))
                                         for (x, y), (tx, ty) in zip(snapshot.handles, snapshot.targets)),
                         seconds=time.perf_counter() - t0, image=session.render(), image_kind="full",
                         snapshot=snapshot, end="stopped" if stop is not None and stop.is_set() else "limit")


def _replay(ref: ModelRef, device: str, recipe: Any, render_every: int = 2, model_key: str | None = None,
            stop: StopFlag | None = None) -> tuple[DragSnapshot, np.ndarray, list[tuple[int, list[np.ndarray]]]]:
    """Rebuild a recipe's edit (`recipes.replay`, which checks the model against `model_key` first):
    (snapshot, start image, [(history entry id, frames)] for every drag that moved)."""
    from ..recipes import replay

    result = replay(recipe, generator(ref, device), current_model_key=model_key, stop_event=stop,
                    render_every=int(render_every) or 5)
    snapshot = result.session.snapshot()
    moved = [d for d in result.drags if d.moved]
    entries = snapshot.history[1:len(moved) + 1]
    return snapshot, result.start_image, [(e.id, d.frames) for e, d in zip(entries, moved)]


@dataclasses.dataclass(frozen=True)
class InversionDone:
    """The end of a photo inversion: the tuned generator (written to the model cache), its session and quality."""

    model: ModelRef                   # the photo's private tuned generator
    snapshot: DragSnapshot            # a W+ session at the inverted latent
    image: np.ndarray                 # its image (the reconstruction)
    target: np.ndarray                # uint8 [H, W, 3] the prepared photo
    w: np.ndarray                     # [1, num_ws, w_dim] the inverted latent
    psnr: float
    lpips: float | None
    loss_name: str
    loss_note: str | None
    seconds: float


def _invert(ref: ModelRef, device: str, target: np.ndarray, config: Any, drag_config: DragConfig,
            stop: StopFlag | None, label: str) -> Iterator[Any]:
    """Invert a prepared photo into the model: every `InversionProgress`, then one `InversionDone` (nothing
    when cancelled: the generator just ends). The tuned copy is written to the model cache, never returned."""
    import queue
    import threading

    from ..inversion import InversionCancelled, invert

    events: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = invert(generator(ref, device), target, config, progress=events.put, cancel=stop)
        except InversionCancelled:
            pass
        except BaseException as exc:  # re-raised in the caller's thread below
            outcome["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=work, name="draggan-invert", daemon=True)
    thread.start()
    while (event := events.get()) is not None:
        yield event
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome.get("result")
    if result is None:
        return
    tuned = store_private_model(result.G_tuned, label, note=dict(base_model=ref.source, psnr=round(result.psnr, 3)))
    w = result.w.detach().cpu().numpy()
    session = DragSession(result.G_tuned, w=w, config=drag_config)   # in W+: the caller's config (photo.py)
    yield InversionDone(model=tuned, snapshot=session.snapshot(), image=session.render(), target=result.target,
                        w=w, psnr=result.psnr, lpips=result.lpips, loss_name=result.loss_name,
                        loss_note=result.loss_note, seconds=result.seconds)


def failures() -> tuple[type[Exception], ...]:
    """What a GPU call fails with when it is not a bug: a `DragGANError` (the fork harness's `WorkerError`, a
    released session's model) and, where `spaces` is installed, ZeroGPU's `gr.Error` (a refused or ended grant, a
    worker that failed: see `explain_failure`). The only Gradio name the service knows, read where it is raised."""
    try:
        import spaces  # noqa: F401
        from gradio import Error
    except ImportError:
        return (DragGANError,)
    return DragGANError, Error


def chunk_seconds() -> float:
    """How long one drag call may run: under ZeroGPU a little less than its grant, elsewhere without end."""
    if on_zero_gpu() or forked_wanted():
        return max(5.0, drag_grant() - 5.0)
    return float("inf")


def explain_failure(exc: BaseException) -> str:
    """One sentence for a GPU call that failed, the visitor's image being kept either way.

    ZeroGPU (`spaces` 0.51) reports as `gr.Error(message, title=...)`: a grant that ran out mid-call ends the
    worker, read as "GPU task aborted" (title "ZeroGPU worker error"); an exception raised inside the worker
    arrives as that title with only its class name; a refused grant has a title "ZeroGPU quota exceeded",
    "ZeroGPU queue timeout", "ZeroGPU client error", "ZeroGPU illegal duration"... and a message such as "You
    have exceeded your free ZeroGPU quota (... left). Try again in 0:05:00.", "Space app has reached its GPU
    limit." or "No GPU was available"; the time and refusal cases say that Start continues the drag."""
    message = getattr(exc, "message", None)
    text = (str(message) if isinstance(message, str) else str(exc)).strip() or type(exc).__name__
    title = str(getattr(exc, "title", "") or "")
    if "gpu task aborted" in text.lower():
        return ("The GPU time granted for this step ran out (ZeroGPU: GPU task aborted). Your image is kept: "
                "press Start to continue.")
    if title == "ZeroGPU worker error":
        return f"The drag failed on the GPU worker: {text}"
    if title == "ZeroGPU illegal duration":
        return f"ZeroGPU refused the GPU time this app asks for per step ({text})."
    said = f"{title}: {text}".lower()
    if any(word in said for word in ("zerogpu", "quota", "gpu limit", "no gpu was available")):
        return (f"No GPU time now ({text}). Your image is kept: press Start to continue once the GPU is "
                f"available again.")
    return f"The drag failed: {type(exc).__name__}: {text}"


new_image = gpu(_new_image)
render = gpu(_render)
drag = _decorator(drag_seconds)(_drag)
replay = gpu_long(_replay)
invert = gpu_long(_invert)
