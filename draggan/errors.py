"""The project's one error hierarchy: every failure a visitor or a command-line user may be told about.

`DragGANError` is the user-facing base: its message is written for the person who made the request (what is
wrong and what to do instead) and is safe to show a stranger on a public demo, so it names no server path
and carries no traceback. The app and the CLI catch `DragGANError` once and show `str(error)`; anything else
is a bug and is logged, not shown.

Subclasses keep the builtin base their callers already catch (multiple inheritance), so code written against
`OSError`, `ValueError`, `KeyError` or `pickle.UnpicklingError` keeps working:

| class                    | also a                 | raised when                                                            |
| ------------------------ | ---------------------- | ---------------------------------------------------------------------- |
| ModelUnavailableError    | OSError                | a model is neither on disk nor downloadable right now                  |
| ModelNotFoundError       | FileNotFoundError      | no model at that source (or a released private model)                  |
| ModelFormatError         | ValueError             | a file holds no generator we can load                                  |
| UnsafePickleError        | pickle.UnpicklingError | a pickle references code outside the allow-list                        |
| UnknownModelError        | KeyError               | a zoo key is not in the registry                                       |
| ZooError                 | ValueError             | a zoo.json entry or the file is malformed; the message names the field |
| RecipeError              | ValueError             | an edit recipe cannot be read or replayed                              |
| SettingsError            | ValueError             | a `DRAGGAN_*` environment variable has a bad value                     |
| FaceAlignmentUnavailable | RuntimeError           | dlib or its landmark model cannot be had                               |
| PhotoError               | ValueError             | a photo cannot be used (not an image, size, no face)                   |
| InversionCancelled       | RuntimeError           | a photo inversion was stopped on request                               |
| UserError                | -                      | the editor refuses a request (bad point, no image ...)                 |
| UploadError              | UserError, ValueError  | an uploaded file's type or size is refused, unread                     |
| CommandError             | -                      | a command-line invocation is wrong                                     |

The classes are defined here; the modules that raise them import them from here.
"""

from __future__ import annotations

import pickle


class DragGANError(Exception):
    """Base of every error whose message is meant for the user: short, actionable, no server paths."""


class ModelUnavailableError(DragGANError, OSError):
    """The requested model is neither on this machine nor downloadable right now (offline, unreachable, absent)."""


class ModelIntegrityError(ModelUnavailableError):
    """A downloaded model file whose SHA-256 is not the one the model registry pins; it is refused."""


class ModelNotFoundError(ModelUnavailableError, FileNotFoundError):
    """No model at the source named: no such file, zoo key or Hub file, or a session's private model (a photo's
    tuned copy) asked for after the session released it."""


class ModelFormatError(DragGANError, ValueError):
    """The file exists but holds no generator we can load (not a pickle, no `G_ema`, broken converted cache)."""


class UnsafePickleError(DragGANError, pickle.UnpicklingError):
    """A pickle references a global outside the allow-list; it is refused before any of its code could run."""


class UnknownModelError(DragGANError, KeyError):
    """A zoo key that is not in the registry; the message lists the valid keys."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class ZooError(DragGANError, ValueError):
    """The model registry (`checkpoints/zoo.json`) or one of its entries is malformed; the message names the field."""


class RecipeError(DragGANError, ValueError):
    """A recipe file that cannot be read or does not describe a valid edit."""


class SettingsError(DragGANError, ValueError):
    """A `DRAGGAN_*` environment variable holds a value outside its type or range; the message names it."""


class FaceAlignmentUnavailable(DragGANError, RuntimeError):
    """dlib or its landmark model cannot be had; use the plain centre crop instead."""


class PhotoError(DragGANError, ValueError):
    """A photo that cannot be used: not an image, too small or too large, damaged, or no face where one is asked."""


class InversionCancelled(DragGANError, RuntimeError):
    """Raised when the cancel event is set; nothing of the interrupted inversion is kept."""

    def __init__(self, step: int) -> None:
        super().__init__(f"inversion cancelled after {step} steps")
        self.step = step


class UserError(DragGANError):
    """A request the editor refuses; the message tells the user what to do instead."""


class UploadError(UserError, ValueError):
    """An uploaded file refused by its name or size before any of it is read."""


class CommandError(DragGANError):
    """A command-line failure: printed as `error: ...` without a traceback."""


class WorkerError(DragGANError, RuntimeError):
    """A GPU worker process died, or raised an exception that could not be sent back (its text is kept)."""


class LimitError(UserError, ValueError):
    """An input outside the limits table (`draggan.limits`); `field` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

