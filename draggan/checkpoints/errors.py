"""Errors raised while finding or loading a generator; defined in `draggan.errors`, re-exported here."""

from __future__ import annotations

from ..errors import ModelFormatError, ModelIntegrityError, ModelNotFoundError, ModelUnavailableError, UnsafePickleError

__all__ = ["ModelFormatError", "ModelIntegrityError", "ModelNotFoundError", "ModelUnavailableError",
           "UnsafePickleError"]
