"""`G.latent_from_seed`: the one z-from-seed → mapping path, checked against NVIDIA's own reference numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan.engine import DragSession

from conftest import fixture_path, load_reference

TOL = 1e-4


def _load(name: str) -> torch.nn.Module:
    return generator_from_persistent(read_network_pickle(fixture_path(f"{name}.pkl"))["G_ema"])


@pytest.mark.parametrize("name", ["stylegan2-tiny-64", "stylegan3-t-tiny-64"])
def test_matches_nvidia_reference_ws(name: str) -> None:
    """NVIDIA's reference z of seed s is RandomState(s).randn(1, z_dim); its ws must come out for both psi."""
    G = _load(name)
    ref = load_reference(name)
    seeds = sorted(int(k[1:]) for k in ref if k.startswith("z"))
    assert seeds
    for seed in seeds:
        assert torch.equal(G.z_from_seed(seed), torch.from_numpy(ref[f"z{seed}"]).float())
        for psi in ("1.0", "0.7"):
            ws = G.latent_from_seed(seed, float(psi))
            assert ws.shape == (1, G.num_ws, G.w_dim) and ws.dtype == torch.float32 and not ws.requires_grad
            assert (ws - torch.from_numpy(ref[f"ws{seed}_psi{psi}"])).abs().max().item() <= TOL


def test_conditional_label_and_seed_range() -> None:
    G = _load("stylegan2-tiny-cond-32")
    ref = load_reference("stylegan2-tiny-cond-32")
    c = torch.from_numpy(ref["c0"])
    assert (G.latent_from_seed(0, 0.7, c=c) - torch.from_numpy(ref["ws0_psi0.7"])).abs().max().item() <= TOL
    zeros = G.mapping(G.z_from_seed(0), torch.zeros([1, G.c_dim]), truncation_psi=0.7)
    assert torch.equal(G.latent_from_seed(0, 0.7), zeros)
    with pytest.raises(ValueError, match="seed"):
        G.z_from_seed(2**32)


def test_session_starts_from_the_seed_latent() -> None:
    G = _load("stylegan2-tiny-64").requires_grad_(False)
    session = DragSession(G, seed=3, psi=0.6)
    expected = G.mapping(torch.from_numpy(np.random.RandomState(3).randn(1, G.z_dim)), None, truncation_psi=0.6)
    assert torch.equal(session.ws, expected)
