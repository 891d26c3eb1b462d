"""How the tests compare two computations of the same numbers, so that they hold on any x86-64 CPU.

Two paths that are equal in exact arithmetic (windowed and whole-map synthesis, the phase L1 and
`F.interpolate` + L1, a masked and an unmasked read of the same map) add their float32 terms in different
orders, and PyTorch picks its kernels by CPU (`ATEN_CPU_CAPABILITY` = default, avx2, avx512; oneDNN by
`ONEDNN_MAX_CPU_ISA`), so one path's order differs from machine to machine too. What they can differ by:

- A float32 value: a sum of K terms differs by at most ~K·u·Σ|terms| in the worst case and ~√K·u·Σ|terms| in
  practice when its order changes (u = 2⁻²⁴ ≈ 6e-8). The feature maps here are a chain of ≤ 12 modulated
  3×3 convolutions of K ≤ 9·512 terms each, so each layer adds ≲ √K·u ≈ 4e-6 relative rounding; the losses
  (means of |F − F0| over ≤ 10⁵ terms) and the features are compared at `VALUE_RTOL` = 1e-5 relative.
- A gradient runs the chain backwards as well (twice the operations, and transposed convolutions whose
  order oneDNN picks), so `GRAD_RTOL` = 1e-4 of the gradient's largest element (an element close to zero
  has no relative accuracy: its absolute error is that of its largest neighbours in the same sums).
- An 8-bit image from two float32 renders (the direct CPU render and the module's forward, say): a value that
  lands within rounding of a quantisation boundary rounds either way, so such images may differ by one level
  in a few values (`assert_same_image_u8`: at most 1 level, in at most 0.1 % of the values).
- Discrete decisions (tracked handles: the argmin of feature distances over a window) are equal unless two
  candidates tie within rounding, which the tests' points do not do; they are compared exactly.
- After optimiser steps the latents are NOT comparable: Adam's step is lr·m/(√v + ε) per element, so an
  element whose gradient is within rounding of zero steps by up to ±lr in either direction in either path
  (its sign is rounding), and five steps amplify 1e-7 of rounding into 1e-4 or more of latent. Such elements
  barely change the loss (its gradient there is ~0), so the losses stay comparable after steps, to first
  order within rounding; `STEP_LOSS_RTOL` = 1e-3 allows the second-order term of those ±lr moves.

Measured on one Xeon (AVX-512) under all four settings (default, avx2, avx512, oneDNN at AVX2), the drags of
test_engine, test_live_view and test_locality: first-step losses ≤ 1.3e-6 relative, first-step gradients ≤
5e-7 of their largest element, later losses ≤ 1.8e-4 (the keep term on the 32 × 32 block, after 4 steps),
handles equal; the latents after five steps differed by up to 7e-5 (atol 1e-5 failed there).

So a drag is compared where it is well conditioned: the handles at every step, the first step's loss and
gradient (both paths read the same latent), and the later steps' losses; never the latent after steps.
"Bit for bit" (`torch.equal`) is claimed only where the same operations run in the same order (a drag
continued from a snapshot, a replay of the same recipe, a session in another process on the same machine).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

VALUE_RTOL = 1e-5       # a float32 value computed in two summation orders (see the module docstring)
GRAD_RTOL = 1e-4        # a gradient, relative to its largest element
STEP_LOSS_RTOL = 1e-3   # a loss after optimiser steps (both paths' latents differ where the gradient is ~0)


def first_gradient(session) -> np.ndarray:
    """The gradient of the first step of `session`'s drag (call after exactly one step), read from the
    optimiser's state in its snapshot: after one step Adam's first moment is (1 − β1)·g."""
    drag = session.snapshot().drag
    assert drag is not None and drag.adam and drag.adam["step"] == 1, "call after the drag's first step"
    return np.asarray(drag.adam["exp_avg"], dtype=np.float64) / 0.1


def assert_close_gradients(got: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor,
                           rtol: float = GRAD_RTOL) -> None:
    """Two gradients of one loss by two paths: equal within `rtol` of the largest element."""
    got, expected = (torch.as_tensor(np.asarray(t, dtype=np.float64)) for t in (got, expected))
    scale = float(expected.abs().max())
    assert scale > 0, "a zero gradient compares nothing"
    torch.testing.assert_close(got, expected, rtol=0, atol=rtol * scale)


def assert_same_drag(got: Sequence, expected: Sequence, got_gradient: np.ndarray, expected_gradient: np.ndarray,
                     losses: Sequence[str] = ("loss",)) -> None:
    """Two drags' step results by two exact-in-theory paths: the same handles at every step, the first step's
    losses within rounding, the later steps' within `STEP_LOSS_RTOL`, and the first step's gradient."""
    assert len(got) == len(expected) and got
    assert [r.handles for r in got] == [r.handles for r in expected]
    for name in losses:
        a, b = [getattr(r, name) for r in got], [getattr(r, name) for r in expected]
        np.testing.assert_allclose(a[0], b[0], rtol=VALUE_RTOL, atol=1e-12, err_msg=f"first step's {name}")
        np.testing.assert_allclose(a, b, rtol=STEP_LOSS_RTOL, atol=1e-9, err_msg=name)
    assert_close_gradients(got_gradient, expected_gradient)


def assert_same_image_u8(got: np.ndarray, expected: np.ndarray, what: str = "image") -> None:
    """Two 8-bit renders of the same latent by different float32 paths: equal up to one level in at most 0.1 %
    of the values (values within rounding of a quantisation boundary; module docstring)."""
    assert got.shape == expected.shape and got.dtype == expected.dtype == np.uint8, (got.shape, expected.shape)
    diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, \
        f"{what}: {int((diff > 0).sum())} of {diff.size} values differ, by up to {int(diff.max())}"
