"""Optional FFHQ-style face alignment for face models: crop and rotate a photo the way FFHQ was made.

FFHQ images were cut from photos along a square whose orientation and size come from 68-point facial
landmarks (eyes and mouth corners), so a face model inverts a photo far better after the same crop. The
landmarks come from dlib's 68-point shape predictor (`align.dat` in the Hub repo DragGan/DragGan-Models)
when dlib is installed; without it, alignment is simply unavailable and `prepare_image`'s centre crop is
used. Callers can also pass landmarks from any other detector.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from ..checkpoints.hub import HubRef, fetch_from_hub
from ..errors import FaceAlignmentUnavailable, PhotoError

PREDICTOR_REF = HubRef("DragGan/DragGan-Models", "align.dat")


def face_alignment_available() -> bool:
    """Whether dlib can be imported (the landmark model may still need a download)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """Source corners (upper-left, lower-left, lower-right, upper-right) of the FFHQ crop, as [4, 2] (x, y).

    The square is centred a little below the eyes (10% of the way to the mouth), is oriented along the
    eye line corrected by the eye-mouth axis, and is four eye distances or 3.6 eye-mouth distances wide,
    whichever is larger.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    assert lm.shape == (68, 2), f"need 68 (x, y) landmarks, got {lm.shape}"
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])     # eye line, averaged with the face axis
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])                                          # x turned 90°, pointing down
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def align_face(image: Image.Image, output_size: int, landmarks: np.ndarray | None = None,
               predictor_path: str | Path | None = None) -> Image.Image:
    """The FFHQ-style crop of `image` (RGB), `output_size` px square.

    Landmarks default to dlib's detection (`FaceAlignmentUnavailable` without dlib or its model, ValueError
    when no face is found). Areas outside the photo are filled by mirroring it, as FFHQ's padding did.
    """
    image = image.convert("RGB")
    if landmarks is None:
        landmarks = detect_landmarks(image, predictor_path)
    quad = ffhq_quad(landmarks)
    side = np.hypot(*(quad[3] - quad[0]))
    shrink = int(np.floor(side / output_size * 0.5))
    if shrink > 1:                                        # pre-shrink large faces so the warp does not alias
        size = (max(1, round(image.width / shrink)), max(1, round(image.height / shrink)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        quad = quad / shrink
    arr = np.asarray(image)
    height, width = arr.shape[:2]
    pad = int(np.ceil(max(0.0, -quad.min(), quad[:, 0].max() - width, quad[:, 1].max() - height))) + 2
    arr = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return Image.fromarray(arr).transform((output_size, output_size), Image.Transform.QUAD,
                                          tuple((quad + pad).flatten()), Image.Resampling.BILINEAR)


@functools.lru_cache(maxsize=2)
def _predictor(path: str):
    import dlib
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


def detect_landmarks(image: Image.Image, predictor_path: str | Path | None = None) -> np.ndarray:
    """68 (x, y) landmarks of the largest face, by dlib; the model is fetched from the Hub when no path is given."""
    if not face_alignment_available():
        raise FaceAlignmentUnavailable("face alignment needs dlib (pip install dlib)")
    if predictor_path is None:
        try:
            predictor_path = fetch_from_hub(PREDICTOR_REF)
        except Exception as exc:
            raise FaceAlignmentUnavailable(f"the landmark model is unavailable ({exc})") from exc
    detector, predictor = _predictor(str(predictor_path))
    arr = np.asarray(image.convert("RGB"))
    faces = list(detector(arr, 1))
    if not faces:
        raise PhotoError("no face found in the photo; switch face alignment off to use a centre crop")
    face = max(faces, key=lambda r: r.width() * r.height())
    shape = predictor(arr, face)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
