"""Hostile model files: each is refused with one clear domain error, in bounded time and memory, and runs nothing.

Pickles are assembled opcode by opcode (protocol 2/4), so each test says exactly what the attack is. The
sandbox tests start real child processes (`draggan.checkpoints.sandbox`) and measure their limits against a
baseline conversion of the tiny fixture made in the same test, so they hold on slow and fast machines.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import struct
import time
import tracemalloc

import pytest
import safetensors.torch
import torch

from bench.nvidia_format import write_nvidia_pickle
from bench.soak import rss_mb
from draggan import settings
from draggan.checkpoints import (ModelFormatError, UnsafePickleError, builders, cache, generator_from_pickle,
                                 load_generator, model_folder, read_config, reader)
from draggan.checkpoints.nvidia_pickle import PickleLimits, read_network_pickle
from draggan.checkpoints.sandbox import SandboxLimits, _generator_from_safetensors, convert_report, convert_untrusted
from draggan.networks.stylegan2 import Generator

from conftest import fixture_path

pytestmark = pytest.mark.usefixtures("one_thread")

TIME_LIMIT_S = 20.0
MEMORY_LIMIT_MB = 300.0


# ------------------------------------------------------------------ a tiny pickle assembler

P2 = b"\x80\x02"
STOP = b"."
NONE = b"N"


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def raw(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def dct(*pairs: tuple[bytes, bytes]) -> bytes:
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def call(func: bytes, *args: bytes) -> bytes:
    return func + tup(*args) + b"R"


def memo_bomb(depth: int) -> bytes:
    """A tuple nested `depth` levels deep, each level the pair (below, below) through one memo slot:
    4 bytes a level, 2**depth leaves for anything that walks, hashes or prints it."""
    return NONE + b"q\x00" + b"h\x00\x86q\x00" * depth


def persistent(class_name: bytes, module_src: bytes = None, state: bytes = None) -> bytes:
    meta = dct((text("type"), text("class")), (text("version"), integer(6)),
               (text("module_src"), module_src if module_src is not None else text("")),
               (text("class_name"), class_name), (text("state"), state if state is not None else b"}"))
    return call(glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)


def network(g_ema: bytes) -> bytes:
    return P2 + dct((text("G_ema"), g_ema)) + STOP


def legacy_storage(claimed_numel: int, payload: bytes, dtype: str = "FloatStorage") -> bytes:
    """A legacy `torch.save` of one storage whose record claims `claimed_numel` elements."""
    head = pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1001, 2) + pickle.dumps(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}, 2)
    pid = P2 + tup(text("storage"), glob("torch", dtype), text("k0"), text("cpu"), integer(claimed_numel),
                   NONE) + b"Q" + STOP
    keys = P2 + b"]" + text("k0") + b"a" + STOP
    count = len(payload) // 4
    return head + pid + keys + struct.pack("<q", count) + payload


def tensor(storage: bytes, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    return call(glob("torch._utils", "_rebuild_tensor_v2"),
                call(glob("torch.storage", "_load_from_bytes"), raw(storage)), integer(0),
                tup(*map(integer, size)), tup(*map(integer, stride)), b"\x89",
                call(glob("collections", "OrderedDict")))


# ------------------------------------------------------------------ helpers


def refused(payload: bytes, error: type[Exception] = UnsafePickleError, match: str | None = None,
            limits: PickleLimits | None = None) -> str:
    """Read `payload` as a network pickle: it must raise `error` within the time and memory bounds."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as info:
            read_network_pickle(io.BytesIO(payload), limits)
        elapsed = time.perf_counter() - start
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert elapsed < TIME_LIMIT_S and peak_mb < MEMORY_LIMIT_MB, (elapsed, peak_mb)
    assert "\n" not in message and "/" not in message, message
    return message


def tiny_generator(**overrides) -> Generator:
    kwargs = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=8, img_channels=3,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    kwargs.update(overrides)
    return Generator(**kwargs).eval()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "cache"))
    settings.reload()
    return tmp_path


# ------------------------------------------------------------------ memo / nesting bombs


def test_the_321_byte_class_name_bomb_is_refused_before_anything_walks_it() -> None:
    payload = network(persistent(memo_bomb(40)))
    assert len(payload) < 400
    assert "class_name is a tuple" in refused(payload)


def test_a_module_src_bomb_is_refused() -> None:
    assert "module_src is a tuple" in refused(network(persistent(text("Generator"), module_src=memo_bomb(40))))


@pytest.mark.parametrize("where", ["dict key", "set member"])
def test_a_bomb_is_never_hashed(where: str) -> None:
    if where == "dict key":
        payload = P2 + b"}" + memo_bomb(40) + integer(1) + b"s" + STOP
    else:
        payload = P2 + call(glob("builtins", "frozenset"), b"]" + memo_bomb(40) + b"a") + STOP
    assert "is a tuple" in refused(payload)


def test_a_bomb_inside_a_networks_state_is_refused_by_the_node_budget() -> None:
    state = dct((text("_init_kwargs"), dct((text("z_dim"), memo_bomb(40)))))
    assert "expand to more than" in refused(network(persistent(text("Generator"), state=state)))


def test_deep_nesting_is_refused() -> None:
    payload = P2 + b"]" * 100 + b"a" * 99 + STOP
    assert "nested more than" in refused(payload)


# ------------------------------------------------------------------ allowed callables as memory bombs


def test_numpy_reconstruct_with_object_dtype_and_a_huge_shape() -> None:
    payload = P2 + call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"),
                        tup(integer(2**29)), b"C\x01O") + STOP
    assert len(payload) < 100
    assert "numpy array reconstruction" in refused(payload)


def test_numpy_object_dtype_is_refused() -> None:
    payload = P2 + call(glob("numpy", "dtype"), text("O8"), b"\x89", b"\x88") + STOP
    assert "numpy data of type object" in refused(payload)


def test_numpy_array_state_claiming_more_than_its_bytes() -> None:
    array = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), tup(integer(0)),
                 b"C\x01b")
    dtype = call(glob("numpy", "dtype"), text("f8"), b"\x89", b"\x88")
    state = tup(integer(1), tup(integer(2**29), integer(2**10)), dtype, b"\x89", b"C\x00")
    assert "claims more or fewer bytes" in refused(P2 + array + state + b"b" + STOP)


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d", b"\x95"], ids=["BINBYTES8", "BINUNICODE8", "FRAME"])
def test_huge_length_claims_are_refused_before_allocating(opcode: bytes) -> None:
    payload = b"\x80\x04" + opcode + struct.pack("<Q", 2**62) + b"x" * 16
    assert "claims 4611686018427387904 bytes" in refused(payload)


def test_a_storage_claiming_more_elements_than_it_holds() -> None:
    storage = legacy_storage(2**40, b"\0" * 4)
    assert "claims 1099511627776 elements" in refused(P2 + tensor(storage, (1,), (1,)) + STOP)


def test_a_stride_zero_tensor_larger_than_its_storage() -> None:
    storage = legacy_storage(1, b"\0" * 4)
    payload = P2 + tensor(storage, (2**20, 2**20), (0, 0)) + STOP
    assert "outside its storage" in refused(payload)
    assert torch.equal(read_network_pickle(io.BytesIO(P2 + tensor(storage, (1,), (1,)) + STOP)), torch.zeros(1))


def test_a_storage_of_an_unlisted_type_is_refused() -> None:
    storage = legacy_storage(1, b"\0" * 4).replace(b"FloatStorage", b"ObjectStore0")
    assert "torch.ObjectStore0" in refused(P2 + tensor(storage, (1,), (1,)) + STOP)


# ------------------------------------------------------------------ opcode floods


def test_a_none_flood_stops_at_the_stack_bound() -> None:
    limits = PickleLimits(max_stack=50_000)
    assert "more than 50000 objects on the pickle stack" in refused(P2 + NONE * 60_000 + STOP, limits=limits)
    default = PickleLimits().max_stack   # 256 MB of None would hold 256 M references; the default stops at 1 M
    assert f"more than {default} objects" in refused(P2 + NONE * (default + 10) + STOP)


def test_a_none_pop_flood_stops_at_the_opcode_bound() -> None:
    limits = PickleLimits(max_ops=100_000)
    assert "more than 100000 pickle opcodes" in refused(P2 + b"N0" * 60_000 + NONE + STOP, limits=limits)


def test_memo_and_mark_floods_stop_at_their_bounds() -> None:
    assert "memo entries" in refused(P2 + b"]\x940" * 2_000 + NONE + STOP, limits=PickleLimits(max_memo=1_000))
    assert "nested pickle marks" in refused(P2 + b"(" * 300 + STOP)


@pytest.mark.parametrize("opcode", [b"i", b"o", b"\x82", b"\x96", b"\x97", b"P"],
                         ids=["INST", "OBJ", "EXT1", "BYTEARRAY8", "NEXT_BUFFER", "PERSID"])
def test_opcodes_network_pickles_never_use_are_refused(opcode: bytes) -> None:
    assert "opcode" in refused(b"\x80\x05" + opcode + b"os\nsystem\n" + STOP)


def test_reduce_to_os_system_runs_nothing(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = P2 + call(glob("os", "system"), text(f"touch {marker}")) + STOP
    assert "os.system" in refused(payload.replace(str(tmp_path).encode(), b"x"))
    with pytest.raises(UnsafePickleError):
        read_network_pickle(io.BytesIO(payload))
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    P2 + call(glob("collections", "OrderedDict"), b"]" + tup(text("a"), integer(1)) + b"a") + STOP,
    P2 + glob("numpy", "ndarray") + tup(tup(integer(2**30))) + b"R" + STOP,
    P2 + glob("dnnlib.util", "EasyDict") + tup(integer(1)) + b"\x81" + STOP,
    P2 + call(glob("torch._utils", "_rebuild_parameter"), NONE, b"\x88", b"}") + STOP,
], ids=["OrderedDict-args", "ndarray-call", "EasyDict-newobj-args", "parameter-of-None"])
def test_allowed_globals_used_outside_their_genuine_form(payload: bytes) -> None:
    refused(payload)


# ------------------------------------------------------------------ generator settings


@pytest.mark.parametrize("change,match", [
    (lambda kw: kw["mapping_kwargs"].update(num_layers=10**7), "num_layers"),
    (lambda kw: kw.update(img_resolution=0), "img_resolution"),
    (lambda kw: kw.update(img_resolution=float("nan")), "img_resolution"),
    (lambda kw: kw.update(img_resolution=48), "not a power of two"),
    (lambda kw: kw["synthesis_kwargs"].update(channel_max=10**6), "channel_max"),
    (lambda kw: kw["synthesis_kwargs"].update(conv_clamp=float("inf")), "not a finite number"),
    (lambda kw: kw.update(w_dim=4096, z_dim=4096, img_resolution=2048,
                          synthesis_kwargs=dict(channel_base=2**24, channel_max=2048)), "M parameters"),
], ids=["num_layers", "resolution-0", "resolution-nan", "resolution-48", "channels", "inf", "params"])
def test_generator_settings_are_range_checked_before_building(tmp_path, change, match) -> None:
    G = tiny_generator()
    kwargs = copy.deepcopy(G.init_kwargs)
    change(kwargs)
    path = write_nvidia_pickle(tmp_path / "bad.pkl", G, init_kwargs=kwargs)
    start = time.perf_counter()
    with pytest.raises(ModelFormatError, match=match) as info:
        generator_from_pickle(path)
    assert time.perf_counter() - start < TIME_LIMIT_S
    assert str(tmp_path) not in str(info.value) and "\n" not in str(info.value)


def test_the_writer_round_trips_a_sane_generator(tmp_path) -> None:
    G = tiny_generator()
    G2 = generator_from_pickle(write_nvidia_pickle(tmp_path / "ok.pkl", G))
    z = torch.randn(2, 16)
    assert torch.equal(G(z, None, noise_mode="const"), G2(z, None, noise_mode="const"))


def test_pickled_tensors_are_assigned_in_the_modules_dtype(tmp_path) -> None:
    G = tiny_generator()
    G2 = generator_from_pickle(write_nvidia_pickle(tmp_path / "f64.pkl", copy.deepcopy(G).double()))
    assert {k: t.dtype for k, t in G2.state_dict().items()} == {k: t.dtype for k, t in G.state_dict().items()}
    z = torch.randn(2, 16)
    assert torch.equal(G(z, None, noise_mode="const"), G2(z, None, noise_mode="const"))


# ------------------------------------------------------------------ safetensors


def _config(G: Generator) -> dict:
    return dict(format_version=builders.FORMAT_VERSION, family=G.family, init_kwargs=G.init_kwargs)


def test_safetensors_with_the_config_in_its_metadata_is_a_complete_model(tmp_path) -> None:
    G = tiny_generator()
    lone = tmp_path / "lone" / "mine.safetensors"
    lone.parent.mkdir()
    safetensors.torch.save_file(G.state_dict(), str(lone), metadata=model_folder.config_metadata(_config(G)))
    z = torch.randn(1, 16)
    for G2 in (_generator_from_safetensors(lone, "mine.safetensors"), load_generator(lone, device="cpu")):
        assert torch.equal(G(z, None, noise_mode="const"), G2(z, None, noise_mode="const"))


def test_our_cache_writes_the_config_into_the_weights_file(env) -> None:
    load_generator(fixture_path("stylegan2-tiny-64.pkl"), device="cpu")
    entry = cache.converted_cache_dir() / cache.file_sha256(fixture_path("stylegan2-tiny-64.pkl"))
    with safetensors.safe_open(str(entry / cache.WEIGHTS_FILE), framework="pt") as f:
        assert model_folder.metadata_config(f.metadata(), "x") == read_config(entry)


@pytest.mark.parametrize("kind", ["no-config", "int-tensors", "huge-header", "bad-json", "bomb-config"])
def test_bad_safetensors_are_refused_in_one_line(tmp_path, kind: str) -> None:
    G = tiny_generator()
    path = tmp_path / "upload.safetensors"
    state = G.state_dict()
    metadata = model_folder.config_metadata(_config(G))
    if kind == "no-config":
        metadata, match = None, "carries no model config"
    elif kind == "int-tensors":
        state = {k: v.to(torch.int64) for k, v in state.items()}
        match = "not a float type"
    elif kind == "bad-json":
        metadata, match = {model_folder.METADATA_KEY: "{" * 10_000}, "not valid JSON"
    elif kind == "bomb-config":
        bad = _config(G)
        bad["init_kwargs"]["mapping_kwargs"]["num_layers"] = 10**7
        metadata, match = model_folder.config_metadata(bad), "num_layers"
    else:
        match = "not a readable safetensors file"
    safetensors.torch.save_file(state, str(path), metadata=metadata)
    if kind == "huge-header":
        path.write_bytes(struct.pack("<Q", 2**26) + b"{" + path.read_bytes()[9:])
    start = time.perf_counter()
    with pytest.raises(ModelFormatError, match=match) as info:
        _generator_from_safetensors(path, "upload.safetensors")
    assert time.perf_counter() - start < TIME_LIMIT_S
    assert str(tmp_path) not in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------ the sandbox


def test_an_upload_converts_in_a_child_and_the_server_reads_only_safetensors(env, monkeypatch) -> None:
    lone = env / "lone.safetensors"
    G = tiny_generator()
    safetensors.torch.save_file(G.state_dict(), str(lone), metadata=model_folder.config_metadata(_config(G)))
    entries = [convert_untrusted(fixture_path("stylegan2-tiny-64.pkl")), convert_untrusted(lone)]
    monkeypatch.setattr(reader, "read_network_pickle", lambda *a, **k: pytest.fail("pickle read in-process"))
    for entry in entries:
        assert entry.parent == cache.converted_cache_dir() and model_folder.is_model_folder(entry)
        load_generator(entry, device="cpu")
    again = convert_report(fixture_path("stylegan2-tiny-64.pkl"))
    assert again.cached and again.entry == entries[0]


def test_sandbox_refusals_name_the_upload_not_the_server_path(env) -> None:
    marker = env / "pwned"
    evil = env / "evil.pkl"
    evil.write_bytes(P2 + call(glob("os", "system"), text(f"touch {marker}")) + STOP)
    with pytest.raises(UnsafePickleError, match=r"^upload\.pkl: .*os\.system") as info:
        convert_untrusted(evil, name="upload.pkl")
    assert not marker.exists() and str(env) not in str(info.value)
    lone = env / "bare.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(2)}, str(lone))
    with pytest.raises(ModelFormatError, match=r"^mine\.safetensors carries no model config") as info:
        convert_untrusted(lone, name="mine.safetensors")
    assert str(env) not in str(info.value)


def test_a_file_that_needs_too_much_memory_or_time_is_killed(env) -> None:
    base = convert_report(fixture_path("stylegan2-tiny-64.pkl"), limits=SandboxLimits())
    assert not base.cached and base.peak_rss_mb > 0
    server_before = rss_mb(os.getpid())

    hungry = env / "hungry.pkl"  # ~900k empty lists kept in the memo: ~100 MB from a 3 MB file
    hungry.write_bytes(P2 + b"]\x940" * 900_000 + NONE + STOP)
    start = time.perf_counter()
    with pytest.raises(ModelFormatError, match=r"^hungry\.pkl: converting it needed more than \d+ MB"):
        convert_untrusted(hungry, limits=SandboxLimits(max_rss_mb=base.peak_rss_mb + 40, wall_s=60))
    assert time.perf_counter() - start < TIME_LIMIT_S + 10

    slow = env / "slow.pkl"  # just under the opcode bound: seconds of pure-Python unpickling
    slow.write_bytes(P2 + b"N0" * 1_990_000 + NONE + STOP)
    start = time.perf_counter()
    with pytest.raises(ModelFormatError, match=r"^slow\.pkl: converting it took longer than"):
        # far below what importing torch and parsing it take on any machine: the kill, not a race, is tested
        convert_untrusted(slow, limits=SandboxLimits(wall_s=0.3))
    assert time.perf_counter() - start < 0.3 + 5
    assert rss_mb(os.getpid()) - server_before < 30, "the server process did not grow"
    assert not any(p.name.startswith(("hungry", "slow")) for p in cache.converted_cache_dir().iterdir())


def test_cpu_time_limit_kills_the_child(env) -> None:
    slow = env / "busy.pkl"  # seconds of pure-Python unpickling on any machine (the tiny fixture can take < 1 s)
    slow.write_bytes(P2 + b"N0" * 1_990_000 + NONE + STOP)
    with pytest.raises(ModelFormatError, match=r"used more than 1 s of CPU time|took longer than"):
        convert_untrusted(slow, limits=SandboxLimits(cpu_s=1, wall_s=60))


# ------------------------------------------------------------------ the converted cache is bounded


def test_the_cache_evicts_least_recently_used_entries(env, monkeypatch) -> None:
    root = cache.converted_cache_dir()
    entries = []
    for i in range(3):
        entry = root / f"{i:064x}"
        entry.mkdir(parents=True)
        (entry / cache.WEIGHTS_FILE).write_bytes(b"\0" * 2**20)
        (entry / cache.CONFIG_FILE).write_text("{}")
        os.utime(entry, (1000 + i, 1000 + i))
        entries.append(entry)
    (root / "by-stat").mkdir()
    (root / "by-stat" / "k").write_text(entries[1].name)
    cache.touch(entries[0])                                   # used just now: newest
    monkeypatch.setenv("DRAGGAN_CACHE_MAX_MB", "2.5")
    settings.reload()
    removed = cache.enforce_limit()
    assert removed == [entries[1]] and entries[0].is_dir() and entries[2].is_dir()
    assert not (root / "by-stat" / "k").exists()
    assert cache.enforce_limit(max_bytes=0, keep=(entries[2],)) == [entries[0]] and entries[2].is_dir()
    monkeypatch.setenv("DRAGGAN_CACHE_MAX_MB", "lots")
    with pytest.raises(ValueError, match="DRAGGAN_CACHE_MAX_MB"):
        settings.reload()


def test_saving_an_entry_enforces_the_bound(env, monkeypatch) -> None:
    monkeypatch.setenv("DRAGGAN_CACHE_MAX_MB", "0.001")
    settings.reload()
    assert cache.cache_max_bytes() == int(0.001 * 2**20)
    root = cache.converted_cache_dir()
    load_generator(fixture_path("stylegan2-tiny-64.pkl"), device="cpu")
    first = [p for p in root.iterdir() if p.name != "by-stat"]
    load_generator(fixture_path("stylegan2-tiny-cond-32.pkl"), device="cpu")
    second = [p for p in root.iterdir() if p.name != "by-stat"]
    assert len(first) == len(second) == 1 and first != second, "the older entry made room for the new one"
    assert json.loads((second[0] / cache.CONFIG_FILE).read_text())["family"] == "stylegan2"
