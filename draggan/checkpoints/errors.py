"""Errors raised while finding or loading a generator, shared by the hub, cache and loader modules."""

from __future__ import annotations

import pickle


class ModelUnavailableError(OSError):
    """The requested model is neither on this machine nor downloadable right now (offline, unreachable, absent)."""


class ModelFormatError(ValueError):
    """The file exists but holds no generator we can load (not a pickle, no `G_ema`, broken converted cache)."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle holds something outside our allow-list or beyond our size limits; nothing from it was run."""
