"""The page's one refusal path: every panel handler is wrapped in `answer`.

What a handler may end with, and what the visitor sees:

| raised                        | the visitor sees                                   | the handler answers          |
| ----------------------------- | -------------------------------------------------- | ---------------------------- |
| `DragGANError` (a refusal)    | its message in a warning toast, as written         | `unchanged()` (page as it was) |
| `gr.Error` (Gradio's own)     | Gradio's error, as raised                          | -                            |
| anything else (a bug)         | "Something went wrong on our side (incident <id>)" | `unchanged()`                |

A bug is logged with its traceback under the same incident id (logger `draggan.app`), so an operator finds
it in the Space's log from the id a visitor reports; its text never reaches the visitor. On the headless API
(`api=True`) both a refusal and a bug are raised as `gr.Error` with that text, which is what API clients read.

A handler whose panel has a status line may pass `said`: called as `said(panel, text, began, *args)` with
the handler's own arguments (`began`: a stream had sent something), it answers a refusal raised by the handler
instead of `unchanged()`, or says nothing more with None (the drag's Start says why in the status line and keeps
the last image of a failed drag; a failed inversion says why on the photo's status line). `answer(job=...)` also claims the visitor's job slot (`Studio.visitors`: one drag, inversion, conversion or
replay per visitor at a time) for the whole call, a stream included, from the handler's `request` argument.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from contextlib import nullcontext
from typing import Any, Callable, TypeVar

import gradio as gr

from ..errors import DragGANError

log = logging.getLogger("draggan.app")
Handler = TypeVar("Handler", bound=Callable[..., Any])
TOAST_SECONDS = 8


def unchanged() -> Any:
    """A handler's answer that leaves every one of its outputs as it was. (Not `{}`: Gradio reads an empty
    dict as one value, and with several outputs logs "didn't return enough output values" with a traceback.)"""
    return gr.skip()


def apology(incident: str) -> str:
    return (f"Something went wrong on our side (incident {incident}); your session is kept. If it happens "
            f"again, tell the operator this incident id.")


def refused(exc: BaseException, where: str, api: bool) -> str:
    """Say why a request ended (see the module docstring) and return the text said; on the API, raise."""
    if isinstance(exc, DragGANError):
        text = str(exc)
    else:
        incident = uuid.uuid4().hex[:10]
        log.error("incident %s in %s", incident, where, exc_info=exc)
        text = apology(incident)
    if api:
        raise gr.Error(text) from None
    gr.Warning(text, duration=TOAST_SECONDS)
    return text


def answer(job: str | None = None, *, api: bool = False,
           said: Callable[..., Any] | None = None) -> Callable[[Handler], Handler]:
    """Wrap a panel handler (a method of a panel holding `studio`): claim the visitor's slot for `job` ("a
    drag", ...) when given, and end every refusal and bug as the module docstring says. A generator handler
    stays one (Gradio streams it); it stops at the refusal, keeping what it already sent."""
    def decorate(fn: Handler) -> Handler:
        signature = inspect.signature(fn)
        where = fn.__qualname__

        def slot(args: tuple, kwargs: dict) -> Any:
            if job is None:
                return nullcontext()
            request = signature.bind_partial(*args, **kwargs).arguments.get("request")
            return args[0].studio.visitors.claim(request, job)

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def stream(*args: Any, **kwargs: Any) -> Any:
                started = began = False
                try:
                    with slot(args, kwargs):
                        started = True
                        for update in fn(*args, **kwargs):
                            began = True
                            yield update
                except gr.Error:
                    raise
                except Exception as exc:      # the one place a bug is caught: logged, and said as one
                    text = refused(exc, where, api)
                    last = said(args[0], text, began, *args[1:], **kwargs) if said and started else None
                    if last is not None:
                        yield last
            return stream  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            started = False
            try:
                with slot(args, kwargs):
                    started = True
                    return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:          # the one place a bug is caught: logged, and said as one
                text = refused(exc, where, api)
                last = said(args[0], text, False, *args[1:], **kwargs) if said and started else None
                return unchanged() if last is None else last
        return call  # type: ignore[return-value]
    return decorate
