"""TF-era StyleGAN2 pickles convert to our generator and reproduce NVIDIA's own TF→PyTorch conversion."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch

from draggan.checkpoints.builders import build_generator
from draggan.checkpoints.nvidia_pickle import TFNetwork, read_network_pickle
from draggan.checkpoints.tf_pickle import generator_from_tf, tf_generator_kwargs

from conftest import fixture_path, load_reference

TOL = 1e-4
NAME = "stylegan2-tf-tiny-64"


@pytest.fixture(scope="module")
def tf_gs() -> TFNetwork:
    G, D, Gs = read_network_pickle(fixture_path(f"{NAME}.pkl"))
    assert all(isinstance(net, TFNetwork) for net in (G, D, Gs))
    return Gs


@pytest.fixture(scope="module")
def converted(tf_gs: TFNetwork) -> torch.nn.Module:
    return generator_from_tf(tf_gs)


def _err(a: torch.Tensor, b: np.ndarray) -> float:
    return (a.detach() - torch.from_numpy(b)).abs().max().item()


def _clone(net: TFNetwork) -> TFNetwork:
    """Independent copy of a TFNetwork tree (copy.deepcopy would route the state through __setstate__)."""
    state = {k: copy.deepcopy(v) for k, v in net.state.items() if k != "components"}
    state["components"] = {name: _clone(comp) for name, comp in net.components.items()}
    return TFNetwork(state=state)


def _edited(Gs: TFNetwork, edit) -> TFNetwork:
    """Copy of Gs whose flat {path: array} variables were changed in place by `edit`."""
    net = _clone(Gs)
    flat = net.variables()
    edit(flat)
    components = net.components
    for owner in [net, *components.values()]:
        owner.state["variables"] = []
    for path, value in flat.items():
        comp, _, local = path.partition("/")
        if local and comp in components:
            components[comp].state["variables"].append((local, value))
        else:
            net.state["variables"].append((path, value))
    return net


def _with_kwargs(Gs: TFNetwork, **kwargs) -> TFNetwork:
    net = _clone(Gs)
    net.state["static_kwargs"] = {**net.static_kwargs, **kwargs}
    return net


def test_reproduces_nvidia_conversion(converted: torch.nn.Module) -> None:
    G = converted
    ref = load_reference(NAME)
    assert G.family == "stylegan2" and not G.training
    assert not any(p.requires_grad for p in G.parameters())
    assert (G.z_dim, G.w_dim, G.img_resolution, G.num_ws) == (64, 64, 64, 10)
    assert G.init_kwargs["synthesis_kwargs"]["architecture"] == "skip"
    for seed in range(3):
        z = torch.from_numpy(ref[f"z{seed}"])
        for psi in ("1.0", "0.7"):
            assert _err(G.mapping(z, None, truncation_psi=float(psi)), ref[f"ws{seed}_psi{psi}"]) <= TOL
        img, feats = G.synthesis(torch.from_numpy(ref[f"ws{seed}_psi0.7"]), noise_mode="const", return_features=True)
        assert img.shape == (1, 3, 64, 64)
        assert _err(img, ref[f"img{seed}"]) <= TOL
        if seed == 0:
            assert len(feats) == G.synthesis.num_blocks == 5
            for i, f in enumerate(feats):
                assert _err(f, ref[f"feat0_{i}"]) <= TOL, f"feature {i}"


def test_rebuild_from_init_kwargs(converted: torch.nn.Module) -> None:
    kwargs = json.loads(json.dumps(converted.init_kwargs))
    G2 = build_generator("stylegan2", kwargs)
    G2.load_state_dict(converted.state_dict(), strict=True)
    ws = converted.mapping(torch.from_numpy(load_reference(NAME)["z1"]), None, truncation_psi=0.7)
    assert torch.equal(G2.synthesis(ws, noise_mode="const"), converted.synthesis(ws, noise_mode="const"))


def test_kwargs_follow_static_kwargs(tf_gs: TFNetwork) -> None:
    kw = tf_generator_kwargs(tf_gs)
    assert kw["synthesis_kwargs"]["channel_base"] == 2 * tf_gs.static_kwargs["fmap_base"]
    assert kw["synthesis_kwargs"]["channel_max"] == tf_gs.static_kwargs["fmap_max"]
    assert kw["mapping_kwargs"]["num_layers"] == tf_gs.static_kwargs["mapping_layers"]


def test_missing_variable_is_named(tf_gs: TFNetwork) -> None:
    broken = _edited(tf_gs, lambda v: v.pop("synthesis/noise3"))
    assert "synthesis/noise3" not in broken.variables()
    with pytest.raises(ValueError, match=re.escape("missing variable(s) ['synthesis/noise3']")):
        generator_from_tf(broken)


def test_wrong_shape_is_named(tf_gs: TFNetwork) -> None:
    def shrink(v):
        v["synthesis/16x16/Conv1/weight"] = v["synthesis/16x16/Conv1/weight"][:, :, :32]
    with pytest.raises(ValueError, match="synthesis/16x16/Conv1/weight"):
        generator_from_tf(_edited(tf_gs, shrink))


def test_unexpected_variable_is_refused(tf_gs: TFNetwork) -> None:
    def add(v):
        v["synthesis/8x8/Extra/weight"] = np.zeros([3], np.float32)
    with pytest.raises(ValueError, match="synthesis/8x8/Extra/weight"):
        generator_from_tf(_edited(tf_gs, add))


def test_training_lod_variable_is_ignored(tf_gs: TFNetwork, converted: torch.nn.Module) -> None:
    def add(v):
        v["lod"] = np.float32(0)
    G = generator_from_tf(_edited(tf_gs, add))
    for key, value in converted.state_dict().items():
        assert torch.equal(G.state_dict()[key], value), key


@pytest.mark.parametrize("kwargs, message", [
    (dict(architecture="resnet"), "resnet"),
    (dict(fmap_decay=0.5), "fmap_decay"),
    (dict(normalize_latents=False), "normalize_latents"),
    (dict(nonlinearity="tanh"), "nonlinearity"),
    (dict(synthesis_func="G_synthesis_custom"), "G_synthesis_custom"),
    (dict(some_new_option=3), "some_new_option"),
])
def test_unsupported_configs_are_refused(tf_gs: TFNetwork, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generator_from_tf(_with_kwargs(tf_gs, **kwargs))


def test_stylegan1_is_refused(tf_gs: TFNetwork) -> None:
    old = _clone(tf_gs)
    old.state["build_func_name"] = "training.networks_stylegan.G_style"
    with pytest.raises(ValueError, match="StyleGAN1"):
        generator_from_tf(old)
    old.state["version"] = 3
    with pytest.raises(ValueError, match="version"):
        generator_from_tf(old)


def _orig_image_from_reference(converted: torch.nn.Module) -> torch.Tensor:
    """'orig' output = the last block's ToRGB of the last features (NVIDIA's reference features, seed 0)."""
    ref = load_reference(NAME)
    ws = torch.from_numpy(ref["ws0_psi0.7"])
    return converted.synthesis.b64.torgb(torch.from_numpy(ref["feat0_4"]), ws[:, 9])


def test_orig_architecture(tf_gs: TFNetwork, converted: torch.nn.Module) -> None:
    def drop_low_torgb(v):
        for res in (4, 8, 16, 32):
            for name in [n for n in v if n.startswith(f"synthesis/{res}x{res}/ToRGB/")]:
                v.pop(name)
    net = _with_kwargs(_edited(tf_gs, drop_low_torgb), architecture="orig")
    G = generator_from_tf(net)
    assert G.init_kwargs["synthesis_kwargs"]["architecture"] == "orig" and G.num_ws == 10
    ws = torch.from_numpy(load_reference(NAME)["ws0_psi0.7"])
    img = G.synthesis(ws, noise_mode="const")
    assert (img - _orig_image_from_reference(converted)).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="8x8/ToRGB"):
        generator_from_tf(_with_kwargs(tf_gs, architecture="orig"))


def _progressive(tf_gs: TFNetwork, lod: float) -> TFNetwork:
    """Configs B-D layout: one `ToRGB_lod{n}` output per resolution and a `synthesis/lod` level."""
    def rename(v):
        for res, n in ((4, 4), (8, 3), (16, 2), (32, 1), (64, 0)):
            for name in [k for k in v if k.startswith(f"synthesis/{res}x{res}/ToRGB/")]:
                v[f"synthesis/ToRGB_lod{n}/{name.rsplit('/', 1)[1]}"] = v.pop(name)
        v["synthesis/lod"] = np.float32(lod)
        v["lod"] = np.float32(lod)
    return _edited(tf_gs, rename)


def test_progressive_growing_generator(tf_gs: TFNetwork, converted: torch.nn.Module) -> None:
    G = generator_from_tf(_progressive(tf_gs, 0.0))
    assert G.init_kwargs["synthesis_kwargs"]["architecture"] == "orig"
    ws = torch.from_numpy(load_reference(NAME)["ws0_psi0.7"])
    img = G.synthesis(ws, noise_mode="const")
    assert (img - _orig_image_from_reference(converted)).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="lod=0.5"):
        generator_from_tf(_progressive(tf_gs, 0.5))
