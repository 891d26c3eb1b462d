"""A stand-in for ZeroGPU's worker contract: a kept, forked worker process; each call pickled in and out.

`spaces.GPU` (the `spaces` package 0.51.3, `spaces/zero/wrappers.py`) forks a worker for the decorated
function on its first call and **keeps** it: a later call reuses it while it is alive and idle (a call that
finds it busy forks another). Each call's arguments travel through a pickling queue and the call runs in a
**thread** of the worker (not its main thread); the return value or every yielded value comes back pickled,
or the exception. Nothing else travels: what the function changes in its arguments stays in the worker and
is lost, while what it changes in the worker's own memory (caches, loaded generators) stays for the next call
that lands there, and the worker never sees what the server changed after it was forked.

`forked(fn)` does the same with `multiprocessing`'s fork context, so tests (and `DRAGGAN_FORKED_GPU=1 python
app.py`) catch code that would break on ZeroGPU: unpicklable arguments or results, state changed only in the
worker, and state a reused worker kept from an earlier call. One rule more than pickling: no `torch.Tensor`
may cross the boundary, either way (a CUDA tensor cannot leave a ZeroGPU worker; GPU functions take and give
numpy arrays and plain values). A worker whose call failed or was abandoned is ended, as spaces drops it.

A worker lets go of the pipes and sockets it inherited from the server (clients' connections, the listening
socket, a subprocess's stdin): it never uses them, and a copy held open in a kept worker would keep the other
end from ever seeing the server close it (a browser connection never ending, a subprocess waiting on its
stdin forever).
"""

from __future__ import annotations

import functools
import inspect
import io
import multiprocessing
import os
import pickle
import stat
import threading
import traceback
from typing import Any, Callable

import torch

from ..errors import WorkerError

_YIELD, _RETURN, _ERROR = "yield", "return", "error"


class _NoTensors(pickle.Pickler):
    """A pickler that refuses `torch.Tensor` anywhere in the value (the GPU boundary carries no tensors)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            raise TypeError(f"a torch.Tensor {tuple(obj.shape)} would cross the GPU worker boundary; pass numpy "
                            f"arrays or plain values")
        return NotImplemented


def dumps(value: Any) -> bytes:
    """`pickle.dumps` for the GPU boundary: TypeError for a value that holds a `torch.Tensor`."""
    out = io.BytesIO()
    _NoTensors(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return out.getvalue()


def _send(conn: Any, kind: str, value: Any) -> None:
    try:
        message = dumps((kind, value))
    except Exception as exc:              # an unpicklable or tensor-holding result: the caller hears why
        message = pickle.dumps((_ERROR, WorkerError(f"{type(exc).__name__}: {exc}")))
    conn.send_bytes(message)


def _call(fn: Callable, args: tuple, kwargs: dict, conn: Any, stop: Any) -> None:
    """One call, in a thread of the worker: its yields or result, or its exception, sent to the caller."""
    try:
        if inspect.isgeneratorfunction(fn):
            gen = fn(*args, **kwargs)
            for value in gen:
                if stop.is_set():         # the caller stopped listening (spaces' stop_event)
                    gen.close()
                    break
                _send(conn, _YIELD, value)
            conn.send_bytes(pickle.dumps((_RETURN, None)))
        else:
            _send(conn, _RETURN, fn(*args, **kwargs))
    except BaseException as exc:          # sent to the caller, as spaces does
        try:
            message = pickle.dumps((_ERROR, exc))
        except Exception:
            message = pickle.dumps((_ERROR, WorkerError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")))
        conn.send_bytes(message)


def pipes_and_sockets() -> dict[int, tuple[int, int]]:
    """This process's open pipe and socket descriptors above stderr, each with its (device, inode)."""
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    try:
        numbers = [int(name) for name in os.listdir(folder)]
    except OSError:
        return {}
    found = {}
    for fd in numbers:
        try:
            info = os.fstat(fd)
        except OSError:                   # the listing's own descriptor, closed already
            continue
        if fd > 2 and (stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode)):
            found[fd] = (info.st_dev, info.st_ino)
    return found


def _let_go_of(inherited: dict[int, tuple[int, int]]) -> None:
    """Point each of the server's pipes and sockets (`pipes_and_sockets()` taken before the fork) at /dev/null.

    Only a descriptor that is still the same pipe or socket: multiprocessing's sentinel pipes, made after the
    list, and this worker's end of its connection (left out of it) are kept. Redirected rather than closed: the
    server's objects copied into this process still name those numbers, and a closed number could be reused by
    a file the worker opens and then closed under it by one of them."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd, identity in inherited.items():
            try:
                info = os.fstat(fd)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) == identity:
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _serve(fn: Callable, conn: Any, stop: Any, inherited: dict[int, tuple[int, int]]) -> None:
    """The worker's main loop: each call that arrives runs in a new thread; ends when the caller hangs up."""
    _let_go_of(inherited)
    torch.set_num_threads(1)  # OpenMP thread pools do not survive a fork
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        args, kwargs = pickle.loads(payload)
        stop.clear()
        thread = threading.Thread(target=_call, args=(fn, args, kwargs, conn, stop), name="gpu-task")
        thread.start()
        thread.join()


class _Worker:
    """A forked process serving calls of one function, one at a time."""

    def __init__(self, fn: Callable) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe(duplex=True)
        inherited = pipes_and_sockets()   # the server's, and the caller's end of this pipe: a hang-up then ends it
        inherited.pop(child.fileno())
        self.stop = ctx.Event()
        self.process = ctx.Process(target=_serve, args=(fn, child, self.stop, inherited), daemon=True)
        self.process.start()
        child.close()
        self.calls = 0

    def end(self) -> None:
        self.conn.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


class WorkerPool:
    """The workers of one function: an idle one is reused, else a new one is forked (what `spaces.GPU` keeps
    per function)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self.pids: list[int] = []         # the worker process of each call
        self.durations: list[float] = []  # the GPU seconds each call asked for (`forked`'s `duration`)

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.process.is_alive():
                    return worker
                worker.end()
        return _Worker(self.fn)

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def messages(self, args: tuple, kwargs: dict):
        """Run one call in a worker and yield its (kind, value) messages; its exception is raised here."""
        payload = dumps((args, kwargs))   # fails here, in the caller, like spaces' queue
        worker = self._take()
        worker.calls += 1
        self.pids.append(worker.process.pid)
        kept = False
        try:
            worker.conn.send_bytes(payload)
            while True:
                try:
                    kind, value = pickle.loads(worker.conn.recv_bytes())
                except (EOFError, OSError):
                    worker.process.join(timeout=5)
                    raise WorkerError(f"the GPU worker died (exit code {worker.process.exitcode})") from None
                if kind == _ERROR:
                    raise value
                if kind == _RETURN:
                    kept = True
                    yield kind, value
                    return
                try:
                    yield kind, value
                except GeneratorExit:      # the caller stopped listening: the worker ends the call, is kept
                    worker.stop.set()
                    kept = self._drain(worker)
                    raise
        finally:
            if kept:
                self._give_back(worker)
            else:
                worker.end()

    @staticmethod
    def _drain(worker: _Worker, timeout: float = 60.0) -> bool:
        """Read an abandoned call's messages up to its end; whether the worker is free again."""
        while worker.conn.poll(timeout):
            try:
                kind, _ = pickle.loads(worker.conn.recv_bytes())
            except (EOFError, OSError):
                return False
            if kind in (_RETURN, _ERROR):
                return kind == _RETURN
        return False

    def close(self) -> None:
        """End every idle worker (tests; the server's workers end with it)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.end()


def forked(fn: Callable, duration: int | Callable[..., float] | None = None) -> Callable:
    """`fn` run in a kept, forked worker, with ZeroGPU's pickling of arguments, yields and results (the
    module docstring); the wrapper's `pool` is its `WorkerPool`. `duration` is what `spaces.GPU` takes: seconds,
    or a callable with `fn`'s signature that `spaces` calls with each call's arguments before scheduling it;
    here it is called the same way and each call's seconds are kept in `pool.durations`."""
    pool = WorkerPool(fn)

    def asked(args: tuple, kwargs: dict) -> None:
        if duration is not None:
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            if not (isinstance(seconds, (int, float)) and 0 < seconds):
                raise WorkerError(f"ZeroGPU refuses a duration of {seconds!r} s")
            pool.durations.append(seconds)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any):
            asked(args, kwargs)
            for kind, value in pool.messages(args, kwargs):
                if kind == _YIELD:
                    yield value
        generator.pool = pool
        return generator

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        asked(args, kwargs)
        for kind, value in pool.messages(args, kwargs):
            if kind == _RETURN:
                return value
    call.pool = pool
    return call
