"""The shared Pillow pixel pipeline: torchvision's Resize/CenterCrop semantics and Keras' modes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zoobench_contract.preprocessing import (
    Preprocessing,
    center_crop,
    normalize,
    preprocess,
    resize_short_side,
    to_rgb,
)


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size, expect", [((500, 375), (341, 256)), ((375, 500), (256, 341)), ((256, 300), (256, 300))])
def test_resize_short_side_truncates_long_side(size, expect):
    assert resize_short_side(noise(*size), 256, "bilinear").size == expect


def test_center_crop_offsets_match_torchvision_rounding():
    img = Image.fromarray(np.arange(9 * 7, dtype=np.uint8).reshape(7, 9))
    crop = np.asarray(center_crop(img, 4))
    # torchvision: top = int(round((7 - 4) / 2)) = 2, left = int(round((9 - 4) / 2)) = 2 (half to even)
    np.testing.assert_array_equal(crop, np.asarray(img)[2:6, 2:6])
    with pytest.raises(ValueError, match="smaller than the crop"):
        center_crop(img, 10)


def test_modes():
    px = np.array([[[0, 127, 255]]], dtype=np.uint8)
    tf = normalize(px, Preprocessing(mode="tf"))
    np.testing.assert_allclose(tf[0, 0], [-1.0, 127 / 127.5 - 1, 1.0], rtol=1e-6)
    caffe = normalize(px, Preprocessing(mode="caffe", channel_order="bgr"))
    np.testing.assert_allclose(caffe[0, 0], [255 - 103.939, 127 - 116.779, 0 - 123.68], rtol=1e-5)
    ms = normalize(px, Preprocessing())
    np.testing.assert_allclose(ms[0, 0], (px[0, 0] / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5)
    raw_bgr = normalize(px, Preprocessing(mode="raw", channel_order="bgr"))
    np.testing.assert_array_equal(raw_bgr[0, 0], [255, 127, 0])
    assert ms.dtype == np.float32 and ms.flags.c_contiguous


def test_to_rgb_conversions():
    rgb = noise(8, 6)
    assert to_rgb(rgb) is rgb
    np.testing.assert_array_equal(np.asarray(to_rgb(rgb.convert("CMYK"))), np.asarray(rgb.convert("CMYK").convert("RGB")))
    grey = rgb.convert("L")
    g16 = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    np.testing.assert_array_equal(np.asarray(to_rgb(g16)), np.asarray(grey.convert("RGB")))
    clear = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(to_rgb(clear)).tolist()[0][0] == [255, 255, 255], "transparent pixels composite over white"


def test_preprocess_shape_and_determinism():
    p = Preprocessing(crop_size=224, resize_size=256, interpolation="bicubic")
    a, b = preprocess(noise(500, 375), p), preprocess(noise(500, 375), p)
    assert a.shape == (224, 224, 3)
    np.testing.assert_array_equal(a, b)


def test_override_and_validation():
    p = Preprocessing.from_crop_fraction(299, 0.875, interpolation="bicubic")
    assert (p.crop_size, p.resize_size) == (299, 341)
    q = p.override({"crop_size": 224, "crop_fraction": 0.95})
    assert (q.crop_size, q.resize_size) == (224, 235)
    assert Preprocessing.from_dict(q.to_dict()) == q
    with pytest.raises(ValueError, match="unknown field"):
        Preprocessing.from_dict({"crop": 1})
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="cubic")
    with pytest.raises(ValueError, match="crop_size"):
        Preprocessing(crop_size=300, resize_size=256)
