"""What every session of one app process shares: the device, the model list, limits and the generators.

`Studio` is read-only after start-up. Per-visitor state lives in each page's `UIState`; the generators
themselves live in the process-wide `models.shared_cache()`, where `preload` puts the offered zoo and
bundled models before the first visitor comes (ZeroGPU's forked workers then inherit them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .. import settings
from ..devices import pick_device
from ..engine import DragConfig
from .handlers import UserError
from .models import GeneratorCache, ModelChoice, ModelRef, model_choices, set_shared_cache, shared_cache
from .threads import ThreadPolicy, apply_thread_policy, thread_policy
from .visitors import Visitors



def load_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this model cannot be loaded" (shown to the visitor as one line)."""
    from ..checkpoints import ModelFormatError, ModelUnavailableError, UnknownModelError, UnsafePickleError
    return (ModelFormatError, ModelUnavailableError, UnknownModelError, UnsafePickleError, FileNotFoundError,
            ValueError)


class Studio:
    """The shared context of the app (see the module docstring)."""

    def __init__(self, device: str | None = None, max_upload_mb: float | None = None,
                 hub_online: bool | None = None, cache: GeneratorCache | None = None) -> None:
        self.device = pick_device(device)
        config = settings.get()
        self.max_upload_mb = config.max_upload_mb if max_upload_mb is None else float(max_upload_mb)
        self.cache = set_shared_cache(cache) if cache is not None else shared_cache()
        self.choices: list[ModelChoice] = model_choices(hub_online)
        self.policy: ThreadPolicy = thread_policy(self.device.type, config=config)
        self.concurrency = self.policy.concurrency     # jobs at once; jobs x torch threads <= cores on a CPU
        self.visitors = Visitors()                     # one running job per visitor (session and address)
        self.step_seconds: dict[tuple[str, str], float] = {}   # measured inversion time per step, per model

    @property
    def available(self) -> list[ModelChoice]:
        return [c for c in self.choices if c.available]

    def dropdown_choices(self) -> list[tuple[str, str]]:
        return [(c.label, c.source) for c in self.available]

    def default_model(self) -> str | None:
        return self.available[0].source if self.available else None

    def drag_lr(self, source: str | None) -> float:
        """The step size the app starts with for a model: the zoo's recommendation, else the default."""
        for c in self.choices:
            if c.source == source and c.drag_lr is not None:
                return c.drag_lr
        return DragConfig.lr

    def models_note(self) -> str:
        """Short Markdown about models that cannot be used right now (empty when all can)."""
        missing = [c for c in self.choices if not c.available]
        if not self.available:
            return "**No model is available offline**: upload one under *Your own model*."
        if not missing:
            return ""
        return (f"{len(missing)} zoo model(s) cannot be fetched right now (the Hugging Face Hub is unreachable "
                f"and they are not cached); they are listed under *Unavailable models*.")

    def unavailable_details(self) -> str:
        return "\n".join(f"- {c.label}: {c.reason}" for c in self.choices if not c.available)

    def label_of(self, source: str) -> str:
        for c in self.choices:
            if c.source == source:
                return c.label
        return Path(source).name

    def find_choice(self, model: str) -> ModelChoice:
        """The offered model named by source or label (never an arbitrary path)."""
        for c in self.choices:
            if model in (c.source, c.label):
                return c
        resolved = str(Path(model).expanduser().resolve())   # compared with the offered files, never opened
        for c in self.choices:
            if c.source == resolved:
                return c
        raise UserError(f"Unknown model {model!r}; choose one of: {', '.join(c.source for c in self.available)}")

    def ref(self, source: str, label: str | None = None) -> ModelRef:
        return ModelRef(source=str(source), label=label or self.label_of(source))

    def load(self, ref: ModelRef, progress: Callable[[int, int | None], None] | None = None) -> torch.nn.Module:
        """Make sure the model is loaded in this process (downloading it first if needed)."""
        try:
            return self.cache.get(ref.source, self.device, progress=progress)
        except load_errors() as exc:
            raise UserError(f"Could not load the model: {exc}") from None

    @staticmethod
    def convert_upload(file: Path) -> str:
        """An uploaded model file, parsed and converted in a limited child process (it never runs in the
        server); returns the converted entry, which the server reads as safetensors."""
        from ..checkpoints.sandbox import convert_untrusted
        try:
            return str(convert_untrusted(file, name=file.name))
        except load_errors() as exc:
            raise UserError(f"Could not load the model: {exc}") from None

    def apply_thread_policy(self) -> None:
        """Start-up, once per process: torch's thread count from `policy`, and glibc's malloc arenas capped
        (`DRAGGAN_MALLOC_ARENAS`) so that released sessions' memory can go back to the system."""
        from .memory import limit_arenas
        limit_arenas(settings.get().malloc_arenas)
        apply_thread_policy(self.policy)

    def preload(self) -> None:
        """Load the default model at start-up (and keep it): the first visitor does not wait for it, and
        ZeroGPU's forked workers inherit it."""
        source = self.default_model()
        if source is not None:
            try:
                self.cache.pin(source, self.device)
            except load_errors():
                pass
