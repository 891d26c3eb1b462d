"""A stand-in for ZeroGPU's worker contract: run a function in a forked process, values pickled both ways.

`spaces.GPU` (the `spaces` package, `spaces/zero/wrappers.py`) forks a worker for the decorated function,
sends the arguments through a pickling queue, and sends back, pickled, the return value or every yielded
value, or the exception. Nothing else travels: what the function changes in its arguments or in any other
memory stays in the worker and is lost. `forked(fn)` does the same with `multiprocessing`'s fork context, so
tests (and `DRAGGAN_FORKED_GPU=1 python app.py`) catch code that would break on ZeroGPU: unpicklable
arguments or results, and state changed only in the worker.
"""

from __future__ import annotations

import functools
import inspect
import multiprocessing
import pickle
import traceback
from typing import Any, Callable

import torch

from ..errors import WorkerError

_YIELD, _RETURN, _ERROR = "yield", "return", "error"


def _child(fn: Callable, payload: bytes, conn: Any) -> None:
    torch.set_num_threads(1)  # OpenMP thread pools do not survive a fork
    try:
        args, kwargs = pickle.loads(payload)
        if inspect.isgeneratorfunction(fn):
            for value in fn(*args, **kwargs):
                conn.send_bytes(pickle.dumps((_YIELD, value)))
            conn.send_bytes(pickle.dumps((_RETURN, None)))
        else:
            conn.send_bytes(pickle.dumps((_RETURN, fn(*args, **kwargs))))
    except BaseException as exc:  # sent to the caller, as spaces does
        try:
            message = pickle.dumps((_ERROR, exc))
        except Exception:
            message = pickle.dumps((_ERROR, WorkerError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")))
        conn.send_bytes(message)
    finally:
        conn.close()


def _start(fn: Callable, args: tuple, kwargs: dict) -> tuple[Any, Any]:
    payload = pickle.dumps((args, kwargs))  # fails here, in the caller, like spaces' queue
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(fn, payload, sender), daemon=True)
    process.start()
    sender.close()
    return process, receiver


def _messages(process: Any, receiver: Any):
    try:
        while True:
            try:
                kind, value = pickle.loads(receiver.recv_bytes())
            except EOFError:
                process.join(timeout=5)
                raise WorkerError(f"the GPU worker died (exit code {process.exitcode})") from None
            if kind == _ERROR:
                raise value
            yield kind, value
            if kind == _RETURN:
                return
    finally:
        receiver.close()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()


def forked(fn: Callable) -> Callable:
    """`fn` run in a forked worker per call, with ZeroGPU's pickling of arguments, yields and results."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any):
            for kind, value in _messages(*_start(fn, args, kwargs)):
                if kind == _YIELD:
                    yield value
        return generator

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        for kind, value in _messages(*_start(fn, args, kwargs)):
            if kind == _RETURN:
                return value
    return call
