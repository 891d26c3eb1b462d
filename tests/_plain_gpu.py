"""The GPU functions of `draggan.service.gpu` as plain in-process calls, for tests (the app calls them through
their platform wrappers: `spaces.GPU`, the forked stand-in, or nothing): `PLAIN[name]` is the function
itself, `functools.wraps`' `__wrapped__` of the module's wrapper."""

from __future__ import annotations

import inspect

from draggan.service import gpu

GPU_FUNCTIONS = ("new_image", "render", "drag", "replay", "invert")
PLAIN = {name: inspect.unwrap(getattr(gpu, name)) for name in GPU_FUNCTIONS}
