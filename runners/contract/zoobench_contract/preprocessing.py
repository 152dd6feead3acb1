"""Preprocessing as data, and the one deterministic Pillow pixel pipeline every runner uses.

A model's :class:`Preprocessing` says how a photo becomes the array the network sees:
resize the short side, centre-crop, scale, normalise. The same code runs in every image,
so two frameworks given the same parameters see bit-identical pixels.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
from PIL import Image

Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
Mode = Literal["meanstd", "tf", "caffe", "raw"]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Preprocessing:
    """How to turn a photo into a network input.

    - ``resize_size``: the short side is resized to this many pixels (torchvision ``Resize(int)``).
    - ``crop_size``: the centre crop, square, that the network sees.
    - ``interpolation``: Pillow filter for the resize.
    - ``mode``: ``meanstd`` ((x/255 - mean) / std), ``tf`` (x/127.5 - 1), ``caffe``
      (BGR, minus the ImageNet BGR mean, 0..255 scale) or ``raw`` (0..255, the model rescales).
    - ``mean``/``std``: used by ``meanstd`` only, on the 0..1 scale, RGB order.
    - ``channel_order``: ``rgb`` or ``bgr`` of the array handed to the network.
    """

    crop_size: int = 224
    resize_size: int = 256
    interpolation: Interpolation = "bilinear"
    mode: Mode = "meanstd"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: Literal["rgb", "bgr"] = "rgb"

    def __post_init__(self) -> None:
        if self.crop_size <= 0 or self.resize_size < self.crop_size:
            raise ValueError(
                f"preprocessing: need 0 < crop_size <= resize_size, got crop_size={self.crop_size}, "
                f"resize_size={self.resize_size}"
            )
        if self.interpolation not in _RESAMPLE:
            raise ValueError(
                f"preprocessing.interpolation: {self.interpolation!r} is not one of {sorted(_RESAMPLE)}"
            )
        if self.mode not in ("meanstd", "tf", "caffe", "raw"):
            raise ValueError(f"preprocessing.mode: {self.mode!r} is not one of meanstd, tf, caffe, raw")
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"preprocessing.channel_order: {self.channel_order!r} is not rgb or bgr")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def crop_fraction(self) -> float:
        return self.crop_size / self.resize_size

    @classmethod
    def from_crop_fraction(cls, crop_size: int, crop_fraction: float = 0.875, **kw: Any) -> "Preprocessing":
        """timm-style: resize to ``floor(crop_size / crop_fraction)`` then crop ``crop_size``."""
        return cls(crop_size=crop_size, resize_size=int(math.floor(crop_size / crop_fraction)), **kw)

    def pixel_config(self) -> dict[str, Any]:
        """What the uint8 crop depends on (with the Pillow version): the pixel cache's key."""
        return {"resize_size": self.resize_size, "crop_size": self.crop_size, "interpolation": self.interpolation}

    def normalisation(self) -> "Normalisation":
        """The per-channel affine map from the uint8 RGB crop to this model's input."""
        return Normalisation.of(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["crop_fraction"] = round(self.crop_fraction, 6)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"crop_fraction"}
        if unknown:
            raise ValueError(f"preprocessing: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: (tuple(v) if k in ("mean", "std") else v) for k, v in d.items() if k in known})

    def override(self, changes: dict[str, Any]) -> "Preprocessing":
        """A copy with some fields replaced (a manifest entry's own parameters)."""
        if not changes:
            return self
        merged = {**self.to_dict(), **changes}
        merged.pop("crop_fraction", None)
        if "crop_fraction" in changes and "resize_size" not in changes:
            merged["resize_size"] = int(math.floor(merged["crop_size"] / changes["crop_fraction"]))
        return Preprocessing.from_dict(merged)


@dataclass(frozen=True)
class Normalisation:
    """``out[..., c] = pixels[..., order[c]] * scale[c] + offset[c]`` on float32: every ``mode`` and
    ``channel_order`` as three numbers per channel, so a backend can normalise uint8 batches on its
    device (4x fewer bytes to copy than float32) with one multiply-add."""

    order: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]

    @classmethod
    def of(cls, p: "Preprocessing") -> "Normalisation":
        order = (2, 1, 0) if p.channel_order == "bgr" else (0, 1, 2)
        if p.mode == "meanstd":
            scale = tuple(1.0 / (255.0 * p.std[c]) for c in order)
            offset = tuple(-p.mean[c] / p.std[c] for c in order)
        elif p.mode == "tf":
            scale, offset = (1 / 127.5,) * 3, (-1.0,) * 3
        elif p.mode == "caffe":  # the ImageNet mean is subtracted in BGR order, whatever the output order
            mean_rgb = CAFFE_MEAN_BGR[::-1]
            scale, offset = (1.0,) * 3, tuple(-mean_rgb[c] for c in order)
        else:
            scale, offset = (1.0,) * 3, (0.0,) * 3
        return cls(order, scale, offset)  # type: ignore[arg-type]

    @property
    def identity_order(self) -> bool:
        return self.order == (0, 1, 2)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ...xHxWx3 -> float32 with the same map, on the host (what backends do on device)."""
        x = pixels.astype(np.float32)
        if not self.identity_order:
            x = x[..., list(self.order)]
        return np.ascontiguousarray(x * np.asarray(self.scale, np.float32) + np.asarray(self.offset, np.float32))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: CMYK, greyscale, palette, alpha and 16-bit included."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "F":
        arr8 = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Composite over white, as browsers and photo viewers do; dropping alpha exposes junk pixels.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_short_side(img: Image.Image, size: int, interpolation: str) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image: short side to ``size``, long side truncated."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return img.resize((new_w, new_h), _RESAMPLE[interpolation])


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``CenterCrop(size)``: offsets rounded half to even as ``int(round(x))``."""
    w, h = img.size
    if w < size or h < size:
        raise ValueError(f"image {w}x{h} is smaller than the crop {size}")
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def normalize(pixels: np.ndarray, p: Preprocessing) -> np.ndarray:
    """uint8 (...x)HxWx3 RGB -> float32 in the model's scale and channel order (the host path,
    ``predict run --normalise host``; :class:`Normalisation` is the same map as a multiply-add)."""
    x = pixels.astype(np.float32)
    if p.mode == "meanstd":
        x = (x / 255.0 - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)
    elif p.mode == "tf":
        x = x / 127.5 - 1.0
    elif p.mode == "caffe":
        x = x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, np.float32)
        return np.ascontiguousarray(x if p.channel_order == "bgr" else x[..., ::-1], dtype=np.float32)
    if p.channel_order == "bgr":
        x = x[..., ::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def crop_pixels(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """Decoded image -> uint8 crop (HxWx3 RGB), before any normalisation."""
    img = to_rgb(img)
    img = resize_short_side(img, p.resize_size, p.interpolation)
    return np.asarray(center_crop(img, p.crop_size), dtype=np.uint8)


def preprocess(img: Image.Image, p: Preprocessing) -> np.ndarray:
    """Decoded image -> float32 HxWx3 network input."""
    return normalize(crop_pixels(img, p), p)


__all__ = [
    "Preprocessing",
    "Normalisation",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_rgb",
    "resize_short_side",
    "center_crop",
    "normalize",
    "crop_pixels",
    "preprocess",
]
