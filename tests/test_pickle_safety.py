"""The restricted unpickler never runs code from a network pickle."""

from __future__ import annotations

import io
import os
import pickle
import pickletools

import pytest

from draggan.checkpoints.nvidia_pickle import (PersistentObject, UnsafePickleError, read_network_pickle)

from conftest import fixture_path

FIXTURES = ["stylegan2-tiny-64", "stylegan2-tiny-cond-32", "stylegan3-t-tiny-64", "stylegan3-r-tiny-64"]


class _RunsShell:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_reduce_to_os_system_is_refused_and_nothing_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"G_ema": _RunsShell(str(marker))})
    with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system"):
        read_network_pickle(io.BytesIO(payload))
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"),
                                         ("torch_utils.persistence", "persistent_class"), ("dnnlib.util", "open_url")])
def test_any_unlisted_global_is_named_in_the_error(module: str, name: str) -> None:
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        read_network_pickle(io.BytesIO(payload))


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_module_source_is_never_executed(name: str) -> None:
    data = read_network_pickle(fixture_path(f"{name}.pkl"))
    G = data["G_ema"]
    assert isinstance(G, PersistentObject) and G.class_name == "Generator"
    # The fixtures' embedded source raises if executed; loading succeeded, so it never ran.
    assert "raise RuntimeError" in G.module_src
    with pytest.raises(RuntimeError):
        exec(compile(G.module_src, "<module_src>", "exec"), {})


def test_fixture_globals_are_all_on_the_allow_list() -> None:
    raw = fixture_path("stylegan2-tiny-64.pkl").read_bytes()
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "STACK_GLOBAL" in ops  # the reader really resolves globals, and only allowed ones
    data = read_network_pickle(fixture_path("stylegan2-tiny-64.pkl"))
    assert set(data) == {"G", "D", "G_ema", "training_set_kwargs", "augment_pipe"}
    tensors = data["G_ema"].tensors()
    assert "synthesis.b4.const" in tensors and "mapping.w_avg" in tensors
