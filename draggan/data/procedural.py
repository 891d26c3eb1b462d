"""Procedural cartoon faces: a tiny, exactly-known world to train and judge DragGAN models offline.

Every face is drawn from a vector of `NUM_PARAMS` unit parameters in [0, 1] (head place, size, roll and
turn, colours, eye size/opening/gaze, mouth width/opening/smile, ...). The renderer composites
anti-aliased shapes with batched tensor ops, so thousands of 64×64 images render per second on one CPU
core, and it returns the exact image position of every named keypoint alongside the image.

Conventions: images are NCHW float32 in [-1, 1]; keypoints are (x, y) in image pixels where pixel
(row i, column j) has its centre at (x=j, y=i), so `round(keypoint)` indexes the pixel that holds it.
"""

from __future__ import annotations

import math

import torch

PARAM_NAMES = (
    "head_x", "head_y", "head_size", "head_aspect", "roll", "yaw",
    "skin_tone", "hair_hue", "hair_amount", "bg_hue",
    "eye_spacing", "eye_height", "eye_size", "eye_open", "gaze_x", "gaze_y", "iris_hue",
    "mouth_y", "mouth_width", "mouth_open", "smile",
    "nose_size", "ear_size",
)
NUM_PARAMS = len(PARAM_NAMES)
_P = {name: i for i, name in enumerate(PARAM_NAMES)}

KEYPOINT_NAMES = (
    "head_top", "chin", "left_ear", "right_ear", "left_eye", "right_eye", "nose",
    "mouth_left", "mouth_right", "mouth_top", "mouth_bottom",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# Faces rendered per pass: bigger batches are split so the [N, H, W] temporaries stay cache-sized.
_CHUNK = 64

# Fixed colours (RGB in [0, 1]).
_PUPIL = (0.05, 0.05, 0.08)
_SCLERA = (0.97, 0.97, 0.95)
_OUTLINE = (0.12, 0.08, 0.08)
_MOUTH = (0.45, 0.08, 0.12)
_SKIN_LIGHT = (1.00, 0.86, 0.74)
_SKIN_DARK = (0.50, 0.32, 0.20)


def params_from_z(z: torch.Tensor) -> torch.Tensor:
    """The fixed map from a latent z [N, NUM_PARAMS] to unit face parameters [N, NUM_PARAMS] in (0, 1).

    z is first scaled to unit mean square, exactly as StyleGAN's mapping network does with its input, so
    a generator sees the same function of z that decides the target face. Each parameter is then the
    normal CDF of one coordinate: standard normal z gives uniformly distributed parameters.
    """
    assert z.ndim == 2 and z.shape[1] == NUM_PARAMS, f"z must be [N, {NUM_PARAMS}], got {tuple(z.shape)}"
    z = z.to(torch.float32)
    z = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def sample_z(n: int, seed: int) -> torch.Tensor:
    """n standard-normal latents [n, NUM_PARAMS], deterministic in `seed` (independent of torch's global RNG)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn([n, NUM_PARAMS], generator=gen)


def _lerp(lo: float, hi: float, t: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * t


def _palette(hue: torch.Tensor, sat: float, val: float) -> torch.Tensor:
    """Smooth hue wheel: hue [N] in [0, 1] → RGB [N, 3]."""
    phase = torch.tensor([0.0, 1 / 3, 2 / 3], device=hue.device)
    rgb = 0.5 + 0.5 * torch.cos(2 * math.pi * (hue[:, None] + phase))
    return val * (1 - sat + sat * rgb)


def _coverage(dist: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage of a pixel from its signed distance to a shape's edge (negative = inside)."""
    return (0.5 - dist).clamp(0, 1)


def _ellipse_dist(u: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (pixels) to an axis-aligned ellipse with semi-axes a, b.

    Uses (r - 1) / |grad r| with r the ellipse's radial coordinate: exact on the edge and well behaved far
    away, which matters for the flat ellipses of closed eyes.
    """
    r = ((u / a).square() + (v / b).square()).sqrt()
    grad = ((u / a.square()).square() + (v / b.square()).square()).sqrt() / r.clamp_min(1e-6)
    return (r - 1) / grad.clamp_min(1e-6)


def _paint(img: torch.Tensor, alpha: torch.Tensor, color: torch.Tensor | tuple) -> torch.Tensor:
    """Composite a colour ([N, 3] or fixed RGB) over img [N, 3, H, W] with coverage alpha [N, H, W]."""
    if not isinstance(color, torch.Tensor):
        color = torch.tensor(color, device=img.device).expand(img.shape[0], 3)
    return img + alpha[:, None] * (color[:, :, None, None] - img)


def render(params: torch.Tensor, resolution: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw faces from unit parameters [N, NUM_PARAMS].

    Returns (images [N, 3, R, R] in [-1, 1], keypoints [N, NUM_KEYPOINTS, 2] as (x, y) pixels).
    Geometry scales with `resolution`, so the same parameters give the same face at 64 and 128.
    """
    assert params.ndim == 2 and params.shape[1] == NUM_PARAMS, \
        f"params must be [N, {NUM_PARAMS}], got {tuple(params.shape)}"
    assert resolution >= 16
    if params.shape[0] > _CHUNK:
        parts = [render(chunk, resolution) for chunk in params.split(_CHUNK)]
        return torch.cat([img for img, _ in parts]), torch.cat([kp for _, kp in parts])
    p = params.to(torch.float32).clamp(0, 1)
    dev = p.device
    n = p.shape[0]
    s = float(resolution)

    def g(name: str) -> torch.Tensor:
        return p[:, _P[name]]

    # Head frame: centre, radii, roll; features live in head-local (u right, v down) pixel coordinates.
    cx = _lerp(0.42, 0.58, g("head_x")) * s
    cy = _lerp(0.46, 0.56, g("head_y")) * s
    ry = _lerp(0.27, 0.35, g("head_size")) * s
    rx = ry * _lerp(0.78, 0.97, g("head_aspect"))
    roll = _lerp(-0.35, 0.35, g("roll"))
    yaw = _lerp(-0.6, 0.6, g("yaw"))
    cos_r, sin_r = roll.cos(), roll.sin()

    # Feature geometry (local coordinates, pixels). A head turn shifts the face towards the turn side and
    # shrinks the far eye, as a cheap stand-in for perspective.
    shift = 0.28 * rx * yaw
    eye_dx = _lerp(0.30, 0.44, g("eye_spacing")) * rx
    eye_v = -_lerp(0.05, 0.25, g("eye_height")) * ry
    eye_w = _lerp(0.14, 0.21, g("eye_size")) * ry
    eye_open = (_lerp(-0.25, 1.35, g("eye_open"))).clamp(0.1, 1.0)
    gaze_x = _lerp(-1, 1, g("gaze_x"))
    gaze_y = _lerp(-1, 1, g("gaze_y"))
    mouth_v = _lerp(0.36, 0.56, g("mouth_y")) * ry
    mouth_w = _lerp(0.20, 0.42, g("mouth_width")) * rx
    mouth_h = (_lerp(-0.05, 0.22, g("mouth_open")) * ry).clamp_min(0)
    smile = _lerp(-0.4, 1.0, g("smile")) * 0.18 * mouth_w
    nose_r = _lerp(0.05, 0.10, g("nose_size")) * ry
    nose_u = shift * 1.35
    nose_v = 0.5 * (eye_v + mouth_v) + 0.05 * ry
    ear_r = _lerp(0.14, 0.26, g("ear_size")) * ry
    hairline = -ry * _lerp(0.80, 0.35, g("hair_amount"))

    skin = torch.stack([_lerp(lo, hi, g("skin_tone")) for lo, hi in zip(_SKIN_LIGHT, _SKIN_DARK)], dim=1)
    hair = _palette(g("hair_hue"), sat=0.7, val=0.45)
    bg = _palette(g("bg_hue"), sat=0.35, val=0.85)
    iris = _palette(g("iris_hue"), sat=0.8, val=0.55)
    nose_color = skin * 0.8

    # Pixel grid in head-local coordinates, [N, H, W].
    coords = torch.arange(resolution, device=dev, dtype=torch.float32)
    dx = coords[None, None, :] - cx[:, None, None]
    dy = coords[None, :, None] - cy[:, None, None]
    cr, sr = cos_r[:, None, None], sin_r[:, None, None]
    u = cr * dx + sr * dy
    v = -sr * dx + cr * dy

    def b(t: torch.Tensor) -> torch.Tensor:
        return t[:, None, None]

    img = bg[:, :, None, None].expand(n, 3, resolution, resolution).clone()

    # Ears (behind the head): the far ear hides as the head turns.
    ear_scale = (b(ear_r), b(ear_r) * 1.3)
    left_ear_u = -b(rx) * (1.0 + 0.1 * b(yaw)) + b(shift) * 0.3
    right_ear_u = b(rx) * (1.0 - 0.1 * b(yaw)) + b(shift) * 0.3
    for ear_u in (left_ear_u, right_ear_u):
        d = _ellipse_dist(u - ear_u, v, *ear_scale)
        img = _paint(img, _coverage(d - 0.8), _OUTLINE)
        img = _paint(img, _coverage(d), skin)

    # Hair cap slightly larger than the head, above the hairline, then head with outline, then hair front.
    head_d = _ellipse_dist(u, v, b(rx), b(ry))
    hair_edge = v - (b(hairline) + 0.08 * b(ry) * torch.cos(u / b(rx) * 3.0 + b(shift) / b(rx) * 4))
    cap = _coverage(torch.maximum(_ellipse_dist(u, v, b(rx) * 1.07, b(ry) * 1.07), hair_edge))
    img = _paint(img, cap, hair)
    img = _paint(img, _coverage(head_d - 0.9) * (1 - cap), _OUTLINE)
    img = _paint(img, _coverage(head_d), skin)
    img = _paint(img, _coverage(torch.maximum(head_d, hair_edge)), hair)

    # Eyes: outlined sclera whose height follows eye_open, iris + pupil clipped to it.
    eye_centres = []
    for side, scale in ((-1.0, 1 - 0.35 * yaw), (1.0, 1 + 0.35 * yaw)):
        ew = eye_w * scale.clamp(0.55, 1.45)
        eh = (eye_w * eye_open).clamp_min(0.6 * s / 64)
        eu = side * eye_dx * scale.clamp(0.55, 1.45) + shift
        eye_centres.append((eu, eye_v))
        du, dv = u - b(eu), v - b(eye_v)
        sclera_d = _ellipse_dist(du, dv, b(ew), b(eh))
        img = _paint(img, _coverage(sclera_d - 0.9), _OUTLINE)
        img = _paint(img, _coverage(sclera_d), _SCLERA)
        pu = b(gaze_x * 0.35 * ew)
        pv = b(gaze_y * 0.30 * eh)
        ring = ((du - pu).square() + (dv - pv).square()).sqrt()
        img = _paint(img, _coverage(torch.maximum(ring - b(0.62 * ew), sclera_d)), iris)
        img = _paint(img, _coverage(torch.maximum(ring - b(0.32 * ew), sclera_d)), _PUPIL)

    # Nose: a darker blob.
    nose_d = _ellipse_dist(u - b(nose_u), v - b(nose_v), b(nose_r), b(nose_r) * 1.2)
    img = _paint(img, _coverage(nose_d), nose_color)

    # Mouth: lips are parabolas through the corners; the mouth interior fills between them.
    t = ((u - b(shift)) / b(mouth_w)).clamp(-1.5, 1.5)
    bump = (1 - t.square()).clamp_min(0)
    base = b(mouth_v) + b(smile) * (bump - 1)
    upper = base - b(mouth_h) * bump
    lower = base + b(mouth_h) * bump
    across = (u - b(shift)).abs() - b(mouth_w)
    inside = torch.maximum(torch.maximum(upper - v, v - lower), across)
    line = torch.maximum(torch.minimum((v - upper).abs(), (v - lower).abs()) - 0.6, across)
    img = _paint(img, _coverage(inside), _MOUTH)
    img = _paint(img, _coverage(line), _OUTLINE)

    # Keypoints in local coordinates → image pixels.
    zero = torch.zeros_like(rx)
    local = torch.stack([
        torch.stack([zero, -ry], 1),
        torch.stack([zero, ry], 1),
        torch.stack([left_ear_u[:, 0, 0] - ear_r * 0.5, zero], 1),
        torch.stack([right_ear_u[:, 0, 0] + ear_r * 0.5, zero], 1),
        torch.stack(eye_centres[0], 1),
        torch.stack(eye_centres[1], 1),
        torch.stack([nose_u, nose_v], 1),
        torch.stack([shift - mouth_w, mouth_v - smile], 1),
        torch.stack([shift + mouth_w, mouth_v - smile], 1),
        torch.stack([shift, mouth_v - mouth_h], 1),
        torch.stack([shift, mouth_v + mouth_h], 1),
    ], dim=1)
    kx = cx[:, None] + cos_r[:, None] * local[..., 0] - sin_r[:, None] * local[..., 1]
    ky = cy[:, None] + sin_r[:, None] * local[..., 0] + cos_r[:, None] * local[..., 1]
    keypoints = torch.stack([kx, ky], dim=-1)
    return img.clamp(0, 1) * 2 - 1, keypoints


def render_z(z: torch.Tensor, resolution: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the face a latent z decides through `params_from_z` (the generator's training target)."""
    return render(params_from_z(z), resolution=resolution)


def render_seeds(seed: int, n: int, resolution: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n faces deterministic in `seed`: returns (z, images, keypoints)."""
    z = sample_z(n, seed)
    img, kp = render_z(z, resolution=resolution)
    return z, img, kp
