"""Our StyleGAN3 (T and R) against NVIDIA's reference outputs for the tiny fixtures in tests/data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import fixture_path, load_reference

from draggan.checkpoints.builders import build_generator
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle, stylegan3_kwargs
from draggan.networks import stylegan3

FIXTURES = ("stylegan3-t-tiny-64", "stylegan3-r-tiny-64")
SEEDS = (0, 1, 2)
TOL = 1e-4


@pytest.fixture(scope="module", params=FIXTURES)
def loaded(request):
    G_pickled = read_network_pickle(fixture_path(f"{request.param}.pkl"))["G_ema"]
    G = generator_from_persistent(G_pickled)
    ref = load_reference(request.param)
    return G_pickled, G, ref


def _max_err(a: torch.Tensor, b: np.ndarray) -> float:
    assert tuple(a.shape) == b.shape, (tuple(a.shape), b.shape)
    return (a.detach().float() - torch.from_numpy(b)).abs().max().item()


def test_generator_attributes(loaded):
    _, G, ref = loaded
    assert G.family == "stylegan3"
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_channels) == (64, 0, 64, 3)
    assert G.img_resolution == G.img_height == G.img_width == 64
    assert G.num_ws == G.synthesis.num_ws == ref["ws0_psi1.0"].shape[1]
    assert G.mapping.w_avg.shape == (64,)
    assert G.synthesis.num_blocks == len(G.synthesis.layer_names) == 7
    json.dumps(G.init_kwargs)


@pytest.mark.parametrize("seed", SEEDS)
def test_mapping_matches_reference(loaded, seed):
    _, G, ref = loaded
    z = torch.from_numpy(ref[f"z{seed}"])
    for psi in (1.0, 0.7):
        ws = G.mapping(z, None, truncation_psi=psi)
        assert _max_err(ws, ref[f"ws{seed}_psi{psi}"]) <= TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_image_matches_reference(loaded, seed):
    _, G, ref = loaded
    img = G.synthesis(torch.from_numpy(ref[f"ws{seed}_psi0.7"]), noise_mode="const")
    assert img.dtype == torch.float32
    assert img.abs().max().item() > 0.1
    assert _max_err(img, ref[f"img{seed}"]) <= TOL


def test_features_match_reference(loaded):
    _, G, ref = loaded
    img, feats = G.synthesis(torch.from_numpy(ref["ws0_psi0.7"]), noise_mode="const", return_features=True)
    assert _max_err(img, ref["img0"]) <= TOL
    assert len(feats) == G.synthesis.num_blocks
    assert [tuple(f.shape[1:]) for f in feats] == G.synthesis.feature_shapes()
    for i, feat in enumerate(feats):
        assert _max_err(feat, ref[f"feat0_{i}"]) <= TOL, f"layer {i} ({G.synthesis.layer_names[i]})"


def test_until_block_matches_full_pass(loaded):
    _, G, ref = loaded
    ws = torch.from_numpy(ref["ws1_psi0.7"])
    _, full = G.synthesis(ws, noise_mode="const", return_features=True)
    for until in (0, 3, G.synthesis.num_blocks - 1):
        partial = G.synthesis(ws, noise_mode="const", until_block=until)
        assert isinstance(partial, list) and len(partial) == until + 1
        for a, b in zip(partial, full):
            assert torch.equal(a, b)
    with pytest.raises(AssertionError):
        G.synthesis(ws, until_block=G.synthesis.num_blocks)


def test_noise_mode_is_accepted_and_irrelevant(loaded):
    _, G, ref = loaded
    ws = torch.from_numpy(ref["ws2_psi0.7"])
    imgs = [G.synthesis(ws, noise_mode=mode) for mode in ("random", "const", "none")]
    assert torch.equal(imgs[0], imgs[1]) and torch.equal(imgs[1], imgs[2])
    with pytest.raises(AssertionError):
        G.synthesis(ws, noise_mode="bogus")


def test_rebuild_from_init_kwargs(loaded):
    G_pickled, G, ref = loaded
    kwargs = json.loads(json.dumps(G.init_kwargs))
    G2 = build_generator("stylegan3", kwargs).eval()
    G2.load_state_dict(G_pickled.tensors(), strict=True)
    assert G2.synthesis.layer_names == G.synthesis.layer_names
    img = G2.synthesis(torch.from_numpy(ref["ws0_psi0.7"]), noise_mode="const")
    assert _max_err(img, ref["img0"]) <= TOL


def test_designed_filters_match_pickle(loaded):
    G_pickled, G, _ = loaded
    fresh = stylegan3.Generator(**G.init_kwargs)
    pickled = G_pickled.tensors()
    filter_keys = [k for k in pickled if k.endswith("_filter")]
    assert filter_keys
    fresh_state = fresh.state_dict()
    assert set(fresh_state) == set(pickled)
    for key in filter_keys:
        assert fresh_state[key].shape == pickled[key].shape, key
        assert (fresh_state[key] - pickled[key]).abs().max().item() <= 1e-6, key


def test_kwargs_from_pickle_is_plain(loaded):
    G_pickled, G, _ = loaded
    kwargs = stylegan3_kwargs(G_pickled)
    assert kwargs == G.init_kwargs
    assert kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_gradients_reach_every_w_used(loaded):
    G_pickled, G, ref = loaded
    layer = 4
    G2 = build_generator("stylegan3", G.init_kwargs).eval()
    G2.load_state_dict(G_pickled.tensors(), strict=True)
    with torch.no_grad():  # The fixture's input affine has NVIDIA's zero init; make w[0] matter.
        G2.synthesis.input.affine.weight.normal_(0, 0.1)
    ws = torch.from_numpy(ref["ws0_psi0.7"]).clone().requires_grad_(True)
    feats = G2.synthesis(ws, until_block=layer)
    feats[-1].square().mean().backward()
    grad_norms = ws.grad[0].norm(dim=1)
    assert (grad_norms[: layer + 2] > 0).all()
    assert (grad_norms[layer + 2:] == 0).all()


def test_feature_margins_cover_image():
    synthesis = stylegan3.SynthesisNetwork(w_dim=8, img_resolution=512, img_channels=3, channel_base=64,
                                           channel_max=4)
    margins = synthesis.feature_margins()
    for layer, margin, (c, h, w) in zip(synthesis.layers(), margins, synthesis.feature_shapes()):
        assert h == w == layer.out_sampling_rate + 2 * margin
    assert margins == [10] * (len(margins) - 2) + [0, 0]


@pytest.mark.parametrize("resolution, expected", [(256, 9), (512, 7), (1024, 6)])
def test_default_feature_layer_full_size(resolution, expected):
    synthesis = stylegan3.SynthesisNetwork(w_dim=8, img_resolution=resolution, img_channels=3, channel_base=64,
                                           channel_max=4)
    layer = synthesis.layers()[expected]
    assert layer.out_sampling_rate == 128
    assert synthesis.layers()[expected + 1].out_sampling_rate > 128
    assert synthesis.default_feature_block() == expected


def test_default_feature_layer_tiny(loaded):
    _, G, _ = loaded
    assert G.synthesis.default_feature_block() == G.synthesis.num_blocks - 2
