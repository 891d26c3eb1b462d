"""Exported PNGs say what they are: text metadata read back with Pillow, and the visible "AI Generated" mark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from draggan.export import MARK_TEXT, SOFTWARE, add_ai_mark, png_metadata, save_png


def _image(h: int = 128, w: int = 96) -> np.ndarray:
    rng = np.random.RandomState(0)
    return rng.randint(40, 200, size=(h, w, 3)).astype(np.uint8)


def test_generated_image_metadata_names_model_seed_points_and_says_ai_generated(tmp_path) -> None:
    image = _image()
    path = save_png(image, tmp_path / "out.png", model="ffhq-512", seed=7,
                    points=[((10, 20), (30, 40)), (1.5, 2, 3, 4)])
    with Image.open(path) as png:
        text, pixels = dict(png.text), np.asarray(png.convert("RGB"))
    assert text["Software"] == SOFTWARE and text["AI"] == "AI-generated"
    assert text["DigitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert text["Model"] == "ffhq-512" and text["Seed"] == "7"
    assert json.loads(text["Points"]) == [[10, 20, 30, 40], [1.5, 2, 3, 4]]
    assert "generated" in text["Description"]
    np.testing.assert_array_equal(pixels, image), "a generated image is not marked unless asked"


def test_edited_photo_says_ai_edited_and_is_marked_by_default(tmp_path) -> None:
    image = _image()
    path = save_png(image, tmp_path / "photo.png", model="ffhq-512", edited_photo=True)
    with Image.open(path) as png:
        text, pixels = dict(png.text), np.asarray(png.convert("RGB"))
    assert text["AI"] == "AI-edited" and text["DigitalSourceType"].endswith("/compositeWithTrainedAlgorithmicMedia")
    assert "Seed" not in text and "Points" not in text
    changed = np.argwhere((pixels != image).any(axis=-1))
    assert len(changed) > 0, "the visible mark is on by default for edited photos"
    h, w = image.shape[:2]
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    assert y0 > h * 0.8 and x0 > w * 0.3 and y1 < h and x1 < w, "small, in the bottom-right corner"
    assert len(changed) < 0.1 * h * w


def test_the_mark_can_be_switched_off_for_photos_and_on_for_generated_images(tmp_path) -> None:
    image = _image()
    off = save_png(image, tmp_path / "off.png", edited_photo=True, mark=False)
    on = save_png(image, tmp_path / "on.png", mark=True)
    with Image.open(off) as png:
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), image)
    with Image.open(on) as png:
        assert (np.asarray(png.convert("RGB")) != image).any() and png.text["AI"] == "AI-generated"


def test_old_two_argument_call_still_writes_the_same_pixels_with_provenance(tmp_path) -> None:
    image = _image(64, 64)
    path = save_png(image, tmp_path / "plain.png")
    with Image.open(path) as png:
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), image)
        assert png.text["Software"] == SOFTWARE and "Model" not in png.text


@pytest.mark.parametrize("shape", [(64, 64), (512, 256), (1024, 1024)])
def test_mark_scales_with_the_image_and_keeps_it_unchanged_elsewhere(shape) -> None:
    image = _image(*shape)
    marked = add_ai_mark(image)
    assert marked.shape == image.shape and marked.dtype == np.uint8 and image is not marked
    rows = np.argwhere((marked != image).any(axis=-1))[:, 0]
    height = rows.max() - rows.min() + 1
    assert 8 <= height <= max(24, shape[0] // 8)
    assert (marked[: shape[0] // 2] == image[: shape[0] // 2]).all()
    assert add_ai_mark(image, MARK_TEXT).tobytes() == marked.tobytes()


def test_malformed_points_are_refused() -> None:
    with pytest.raises(ValueError, match="drag pair"):
        png_metadata(points=[(1, 2, 3)])
