"""Errors raised while finding or loading a generator, shared by the hub, cache and loader modules."""

from __future__ import annotations


class ModelUnavailableError(OSError):
    """The requested model is neither on this machine nor downloadable right now (offline, unreachable, absent)."""


class ModelFormatError(ValueError):
    """The file exists but holds no generator we can load (not a pickle, no `G_ema`, broken converted cache)."""


class ModelIntegrityError(ModelUnavailableError):
    """A downloaded model file whose SHA-256 is not the one the model registry pins; it is refused."""
