"""What every session of one app process shares: the device, the model list, limits and the generators.

`Studio` is read-only after start-up. Per-visitor state lives in each page's `UIState`; the generators
themselves live in the process-wide `models.shared_cache()`, where `preload` puts the offered zoo and
bundled models before the first visitor comes (ZeroGPU's forked workers then inherit them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .. import settings
from ..devices import pick_device
from ..engine import drag_cost, render_costs
from . import gpu
from ..errors import DragGANError
from .handlers import UserError
from .models import GeneratorCache, ModelChoice, ModelRef, model_choices, set_shared_cache, shared_cache
from ..server.threads import ThreadPolicy, apply_thread_policy, thread_policy
from ..server.visitors import Visitors



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
        """The model a new page starts on: the policy of `checkpoints.default_model` (the DRAGGAN_DEFAULT_MODEL
        setting; else FFHQ-512 when it is cached or the Hub is reachable, which is what its entry's availability
        here says; else the bundled model) when this app offers that model, else the bundled
        model, else the first model offered (None: none is)."""
        from ..checkpoints.default_model import HUB_DEFAULT_MODEL, default_model

        offered = [c.source for c in self.available]
        ffhq = any(c.source == HUB_DEFAULT_MODEL for c in self.available)
        wanted = default_model(hub_online=ffhq, cached=ffhq)
        choice = self.offered(wanted) if wanted else None      # a zoo key, a label or an offered local file
        if choice is not None and choice.available:
            return choice.source
        bundled = self.bundled_model()
        return bundled or (offered[0] if offered else None)

    def bundled_model(self) -> str | None:
        """The bundled model (no download, fast on a CPU) when it is offered here."""
        from ..checkpoints.default_model import bundled_default

        source = bundled_default()
        return source if source is not None and any(c.source == source for c in self.available) else None

    @staticmethod
    def resolution_of(source: str | None) -> int:
        """A zoo model's resolution (its larger side, pixels) without loading it; 0 when not a zoo key."""
        from ..checkpoints import zoo

        entry = zoo.find_model(str(source)) if source else None
        return max(entry.resolution) if entry is not None else 0

    def drag_lr(self, source: str | None) -> float:
        """The step size the app starts with for a model: the zoo's recommendation, else the default."""
        choice = self.offered(source) if source else None
        return ModelRef(source or "", "", drag_lr=choice.drag_lr if choice is not None else None).lr

    def models_note(self) -> str:
        """Short Markdown about models that cannot be used right now (empty when all can)."""
        missing = [c for c in self.choices if not c.available]
        if not self.available:
            return "**No model is available offline**: upload one under *Your own model*."
        if not missing:
            return ""
        from ..checkpoints.hub import is_offline

        why = ("offline mode is on (HF_HUB_OFFLINE=1)" if is_offline()
               else "the Hugging Face Hub does not answer")
        return (f"{len(missing)} zoo model(s) are not cached and cannot be downloaded now: {why}. They are "
                f"listed under *Unavailable models*.")

    def unavailable_details(self) -> str:
        return "\n".join(f"- {c.label}: {c.reason}" for c in self.choices if not c.available)

    def label_of(self, source: str) -> str:
        choice = self.offered(source)
        return choice.label if choice is not None else Path(source).name

    def offered(self, model: str) -> ModelChoice | None:
        """The offered model named by source or label (never an arbitrary path), else None."""
        for c in self.choices:
            if model in (c.source, c.label):
                return c
        resolved = str(Path(model).expanduser().resolve())   # compared with the offered files, never opened
        return next((c for c in self.choices if c.source == resolved), None)

    def find_choice(self, model: str) -> ModelChoice:
        """The offered model named by source or label; `UserError` naming the offered ones otherwise."""
        choice = self.offered(model)
        if choice is not None:
            return choice
        raise UserError(f"Unknown model {model!r}; choose one of: {', '.join(c.source for c in self.available)}")

    def resolve(self, model: str) -> ModelRef:
        """The offered model named by source or label, resolved once into the `ModelRef` that travels on (its
        label and recommended step size with it); `UserError` when it is not offered or not available here."""
        choice = self.find_choice(model)
        if not choice.available:
            raise UserError(f"{choice.label} is not available here: {choice.reason}")
        return ModelRef(source=choice.source, label=choice.label, drag_lr=choice.drag_lr)

    def load(self, ref: ModelRef, progress: Callable[[int, int | None], None] | None = None) -> torch.nn.Module:
        """Make sure the model is loaded in this process (downloading it first if needed)."""
        try:
            return self.cache.get(ref.source, self.device, progress=progress)
        except DragGANError as exc:      # the loaders' refusals: missing, unsafe, not a generator, unknown key
            raise UserError(f"Could not load the model: {exc}") from None

    @staticmethod
    def convert_upload(file: Path) -> str:
        """An uploaded model file, parsed and converted in a limited child process (it never runs in the
        server); returns the converted entry, which the server reads as safetensors."""
        from ..checkpoints.sandbox import convert_untrusted
        try:
            return str(convert_untrusted(file, name=file.name))
        except DragGANError as exc:
            raise UserError(f"Could not load the model: {exc}") from None

    def apply_thread_policy(self) -> None:
        """Start-up, once per process: torch's thread count from `policy`, and glibc's allocator tuned
        (`DRAGGAN_MALLOC_ARENAS`, `DRAGGAN_MALLOC_KEEP_MB`: server/memory.py)."""
        from ..server.memory import tune_allocator
        config = settings.get()
        tune_allocator(config.malloc_arenas, config.malloc_keep_mb)
        apply_thread_policy(self.policy)

    def preload(self) -> list[str]:
        """Load, at start-up, the default model and every model that is already on this machine (bundled, local
        or cached), and keep them: the first visitor does not wait, and ZeroGPU's forked workers inherit them.
        A few throwaway drag steps of the start model measure what a drag costs here (`drag_cost.measure`).
        Returns the sources loaded."""
        from ..checkpoints import hub, zoo

        wanted = [self.default_model()] + [c.source for c in self.available if c.source != self.default_model()]
        loaded = []
        for source in wanted:
            if source is None:
                continue
            entry = zoo.find_model(source)                  # None: a local file, not a zoo key
            if entry is not None and source != self.default_model() and not hub.is_available_offline(entry):
                continue                                   # not on disk yet: downloaded when first picked
            try:
                G = self.cache.pin(source, self.device)
                loaded.append(source)
            except DragGANError:
                continue
            if (source == self.default_model() and not gpu.on_zero_gpu()
                    and render_costs.cost(G.synthesis, "step") is None):
                drag_cost.measure(G)   # the page states a drag's cost before Start (ZeroGPU: no GPU here)
        return loaded
