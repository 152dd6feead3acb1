"""EfficientNet-Lite0's architecture as data (no framework imports).

Mirrors ``EfficientNet.from_name('efficientnet-lite0')`` of PyPI ``efficientnet-lite-pytorch`` 0.1.0,
itself the official TF ``efficientnet_lite_builder``: width and depth multipliers 1.0, ReLU6, no
squeeze-excitation, stem (32) and head (1280) not scaled, BatchNorm epsilon 1e-3, TF 'SAME' padding.
The Keras and MXNet builders and the checkpoint tests all read this table.
"""
from __future__ import annotations

from dataclasses import dataclass

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
DROPOUT = 0.2
IMAGE_SIZE = 224


@dataclass(frozen=True)
class Stage:
    """One row of the builder's block strings, e.g. ``r2_k3_s22_e6_i16_o24``."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


@dataclass(frozen=True)
class Block:
    """One MBConv block after expanding the stages (``_blocks.<index>`` in the PyTorch model)."""

    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def filters_mid(self) -> int:
        return self.filters_in * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


def blocks(stages: tuple[Stage, ...] = LITE0_STAGES) -> list[Block]:
    """Each stage's first block strides and changes width; its repeats keep both."""
    out: list[Block] = []
    for st in stages:
        for r in range(st.repeats):
            first = r == 0
            out.append(
                Block(
                    index=len(out),
                    kernel=st.kernel,
                    stride=st.stride if first else 1,
                    expand=st.expand,
                    filters_in=st.filters_in if first else st.filters_out,
                    filters_out=st.filters_out,
                )
            )
    return out


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def torch_state_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Every key of the PyTorch model's ``state_dict()`` with its shape, in module order."""
    shapes: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (STEM_FILTERS, 3, 3, 3)}
    shapes.update(_bn("_bn0", STEM_FILTERS))
    for b in blocks():
        p = f"_blocks.{b.index}"
        if b.expand != 1:
            shapes[f"{p}._expand_conv.weight"] = (b.filters_mid, b.filters_in, 1, 1)
            shapes.update(_bn(f"{p}._bn0", b.filters_mid))
        shapes[f"{p}._depthwise_conv.weight"] = (b.filters_mid, 1, b.kernel, b.kernel)
        shapes.update(_bn(f"{p}._bn1", b.filters_mid))
        shapes[f"{p}._project_conv.weight"] = (b.filters_out, b.filters_mid, 1, 1)
        shapes.update(_bn(f"{p}._bn2", b.filters_out))
    last = blocks()[-1].filters_out
    shapes["_conv_head.weight"] = (HEAD_FILTERS, last, 1, 1)
    shapes.update(_bn("_bn1", HEAD_FILTERS))
    shapes["_fc.weight"] = (num_classes, HEAD_FILTERS)
    shapes["_fc.bias"] = (num_classes,)
    return shapes


def layer_name(torch_module: str) -> str:
    """``_blocks.3._depthwise_conv`` -> ``blocks_3_depthwise_conv`` (the Keras layer's / Gluon block's name)."""
    return "_".join(part.lstrip("_") for part in torch_module.split("."))
