"""Our StyleGAN2 reproduces NVIDIA's reference outputs from the fixture network pickles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from draggan.checkpoints.builders import build_generator
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan.networks import stylegan2

from conftest import fixture_path, load_reference

TOL = 1e-4
MODELS = ["stylegan2-tiny-64", "stylegan2-tiny-cond-32"]


def _load(name: str) -> torch.nn.Module:
    return generator_from_persistent(read_network_pickle(fixture_path(f"{name}.pkl"))["G_ema"])


def _err(a: torch.Tensor, b: np.ndarray) -> float:
    return (a.detach() - torch.from_numpy(b)).abs().max().item()


@pytest.mark.parametrize("name", MODELS)
def test_reproduces_reference(name: str) -> None:
    G = _load(name)
    ref = load_reference(name)
    assert G.family == "stylegan2"
    for seed in range(3):
        z = torch.from_numpy(ref[f"z{seed}"])
        c = torch.from_numpy(ref[f"c{seed}"])
        for psi in ("1.0", "0.7"):
            ws = G.mapping(z, c, truncation_psi=float(psi))
            assert ws.shape == (1, G.num_ws, G.w_dim)
            assert _err(ws, ref[f"ws{seed}_psi{psi}"]) <= TOL
        img, feats = G.synthesis(torch.from_numpy(ref[f"ws{seed}_psi0.7"]), noise_mode="const", return_features=True)
        assert img.shape == (1, 3, G.img_height, G.img_width)
        assert _err(img, ref[f"img{seed}"]) <= TOL
        if seed == 0:
            n_feats = len([k for k in ref if k.startswith("feat0_")])
            assert n_feats == len(feats) == G.synthesis.num_blocks
            for i, f in enumerate(feats):
                assert _err(f, ref[f"feat0_{i}"]) <= TOL, f"feature {i}"


def test_conditional_model_uses_labels() -> None:
    G = _load("stylegan2-tiny-cond-32")
    ref = load_reference("stylegan2-tiny-cond-32")
    assert G.c_dim == 4
    z = torch.from_numpy(ref["z0"])
    ws_a = G.mapping(z, torch.eye(4)[:1])
    ws_b = G.mapping(z, torch.eye(4)[1:2])
    assert (ws_a - ws_b).abs().max() > 1e-3
    with pytest.raises(AssertionError, match="label"):
        G.mapping(z, None)


def test_unfused_modconv_and_partial_synthesis_match_full_pass() -> None:
    G = _load("stylegan2-tiny-64")
    ws = torch.from_numpy(load_reference("stylegan2-tiny-64")["ws1_psi0.7"])
    img, feats = G.synthesis(ws, noise_mode="const", return_features=True)
    img_unfused = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    assert (img - img_unfused).abs().max() <= TOL
    partial = G.synthesis(ws, noise_mode="const", until_block=2)
    assert len(partial) == 3
    for a, b in zip(partial, feats[:3]):
        assert (a - b).abs().max() <= TOL
    assert [tuple(f.shape[1:]) for f in feats] == G.synthesis.feature_shapes()


def test_image_at_a_lower_resolution_is_the_skip_image_the_top_blocks_add_detail_to() -> None:
    """`image_at(ws, r)` stops after block r: at full size it is the forward pass; one block lower, the image
    that the top block upsamples and adds its ToRGB output to (so the full image is exactly that sum)."""
    from draggan.networks.ops import upsample2d

    G = _load("stylegan2-tiny-64")
    S = G.synthesis
    ws = torch.from_numpy(load_reference("stylegan2-tiny-64")["ws1_psi0.7"])
    assert S.image_resolutions() == S.block_resolutions == [4, 8, 16, 32, 64]
    full = S(ws, noise_mode="const")
    assert torch.equal(S.image_at(ws, 64, noise_mode="const"), full)
    half = S.image_at(ws, 32, noise_mode="const")
    assert half.shape == (1, 3, 32, 32)
    top = S.b64
    x_top = S(ws, noise_mode="const", until_block=S.num_blocks - 1)[-1]
    detail = top.torgb(x_top, ws[:, S.num_ws - 1], fused_modconv=True)
    assert (upsample2d(half, top.resample_filter) + detail - full).abs().max() <= TOL
    assert (S.image_at(ws, 32, noise_mode="const", fused_modconv=False) - half).abs().max() <= TOL
    assert (S.image_at(ws, 8, noise_mode="const") - S.image_at(ws, 8, noise_mode="random")).abs().max() > 0
    with pytest.raises(AssertionError, match="can stop at"):
        S.image_at(ws, 48)


def test_demodulation_sums_are_cached_until_the_weight_changes_and_follow_its_gradient() -> None:
    G = _load("stylegan2-tiny-64").eval().requires_grad_(False)
    ws = torch.from_numpy(load_reference("stylegan2-tiny-64")["ws1_psi0.7"])
    layer = G.synthesis.b8.conv1
    fresh = layer.weight.square().sum(dim=[2, 3]).t()
    assert torch.equal(layer.demodulation_sums(), fresh) and layer.demodulation_sums() is layer.demodulation_sums()
    before = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    with torch.no_grad():
        layer.weight[:, 0].mul_(3.0)     # an optimiser step or load_state_dict changes the weight in place
    expected = fresh.clone()
    expected[0] *= 9
    assert torch.allclose(layer.demodulation_sums(), expected)
    changed = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    assert (changed - G.synthesis(ws, noise_mode="const")).abs().max() <= TOL
    assert (changed - before).abs().max() > 1e-3
    key, sums = layer._demod_cache       # the unfused forward reads the cached sums
    layer._demod_cache = (key, sums * 4)
    assert (G.synthesis(ws, noise_mode="const", fused_modconv=False) - changed).abs().max() > 1e-3
    layer._demod_cache = None
    layer.weight.requires_grad_(True)   # training / pivotal tuning: the sums carry the weight's gradient
    G.synthesis(ws, noise_mode="const", fused_modconv=False).square().mean().backward()
    fused = layer.weight.grad.clone()
    layer.weight.grad = None
    G.synthesis(ws, noise_mode="const", fused_modconv=True).square().mean().backward()
    assert torch.allclose(fused, layer.weight.grad, atol=1e-6, rtol=1e-4)


def test_noise_modes() -> None:
    G = _load("stylegan2-tiny-64")
    ws = G.mapping(torch.randn(1, G.z_dim), None)
    const_a = G.synthesis(ws, noise_mode="const")
    const_b = G.synthesis(ws, noise_mode="const")
    assert torch.equal(const_a, const_b)
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.equal(const_a, none)
    with pytest.raises(AssertionError):
        G.synthesis(ws, noise_mode="bogus")


def test_rebuild_from_init_kwargs() -> None:
    G = _load("stylegan2-tiny-64")
    G2 = build_generator(G.family, G.init_kwargs)
    G2.load_state_dict(G.state_dict(), strict=True)
    ws = G.mapping(torch.randn(2, G.z_dim), None, truncation_psi=0.7)
    assert torch.equal(G.synthesis(ws, noise_mode="const"), G2.synthesis(ws, noise_mode="const"))


def test_non_square_human_layout() -> None:
    G = stylegan2.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                            mapping_kwargs=dict(num_layers=2),
                            synthesis_kwargs=dict(channel_base=256, channel_max=16, square=False)).eval()
    assert (G.img_height, G.img_width) == (32, 16)
    img, feats = G.synthesis(G.mapping(torch.randn(1, 16), None), noise_mode="const", return_features=True)
    assert img.shape == (1, 3, 32, 16)
    assert [tuple(f.shape[2:]) for f in feats] == [(r, r // 2) for r in (4, 8, 16, 32)]


def _as_persistent(module: torch.nn.Module, class_name: str, init_kwargs: dict | None = None):
    """Mimic how NVIDIA's pickles store a network object: class name + __dict__ with nested modules."""
    from draggan.checkpoints.nvidia_pickle import PersistentObject
    state = {
        "_parameters": dict(module._parameters),
        "_buffers": dict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_modules": {name: _as_persistent(child, type(child).__name__) for name, child in module._modules.items()},
        "_init_args": (),
        "_init_kwargs": init_kwargs or {},
    }
    return PersistentObject(class_name=class_name, state=state, module_src="raise RuntimeError()")


def test_stylegan_human_pickle_detected_as_non_square_from_tensor_shapes() -> None:
    """StyleGAN-Human pickles don't record `square`; the 4×2 constant tells us the model is 512×256-shaped."""
    synthesis_kwargs = dict(channel_base=256, channel_max=16, num_fp16_res=0, conv_clamp=256)
    G = stylegan2.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                            mapping_kwargs=dict(num_layers=2),
                            synthesis_kwargs=dict(synthesis_kwargs, square=False)).eval()
    pickled_kwargs = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                          mapping_kwargs=dict(num_layers=2), synthesis_kwargs=synthesis_kwargs)
    loaded = generator_from_persistent(_as_persistent(G, "Generator", pickled_kwargs))
    assert (loaded.img_height, loaded.img_width) == (32, 16)
    ws = G.mapping(torch.randn(1, 16), None, truncation_psi=0.7)
    assert torch.equal(loaded.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))


def test_the_mapping_network_keeps_its_own_w_avg_moving_average() -> None:
    """`update_emas=True` (training) moves w_avg by (1 − β) towards the batch's mean w; inference leaves it."""
    torch.manual_seed(0)
    mapping = stylegan2.MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=3, num_layers=2, w_avg_beta=0.9)
    z = torch.randn(4, 8)
    before = mapping.w_avg.clone()
    ws = mapping(z, None)
    assert torch.equal(mapping.w_avg, before), "no update unless asked"
    assert torch.equal(mapping(z, None, update_emas=True), ws), "the output does not change"
    torch.testing.assert_close(mapping.w_avg, before.lerp(ws[:, 0].mean(dim=0), 0.1))
    assert "w_avg_beta=0.9" in repr(mapping)
