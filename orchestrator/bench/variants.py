"""Which variant of each image a bench runs: ``--variant cuda,mxnet=cpu`` is the default variant (cuda
with ``--gpus``, else cpu) and IMAGE=VARIANT overrides, parsed and checked here, the one place.

A job whose image runs a CPU-only variant (:func:`runs_on_gpu` false) gets no GPU and ``--device cpu``
even when the bench has ``--gpus``: that is how models of an image that cannot serve the host's GPUs
still run, on the CPU, beside the others.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import BenchError
from ..images.manifest import VARIANT_RE, ImageSpec, VariantSpec


@dataclass(frozen=True)
class ImageVariants:
    """The default variant and the per-image overrides of one bench."""

    default: str
    overrides: tuple[tuple[str, str], ...] = ()
    implicit: tuple[str, ...] = ()  # images in ``overrides`` only because they lack the default variant

    def of(self, image: str) -> str:
        return dict(self.overrides).get(image, self.default)

    def text(self) -> str:
        return ",".join([self.default, *(f"{i}={v}" for i, v in self.overrides if i not in self.implicit)])

    def spec(self, specs: dict[str, ImageSpec], image: str) -> VariantSpec:
        """The variant ``image`` runs in this bench, from images.yaml (``specs``)."""
        return specs[image].variant(self.of(image))

    def with_override(self, image: str, variant: str) -> "ImageVariants":
        """These variants with ``image`` run as ``variant`` (for the way out a refusal names)."""
        return ImageVariants(self.default, tuple(sorted({**dict(self.overrides), image: variant}.items())),
                             tuple(i for i in self.implicit if i != image))


def default_variant(gpus: object) -> str:
    """The variant of every image when ``--variant`` is not given: cuda when GPUs are asked for, else cpu."""
    return "cuda" if gpus else "cpu"


def runs_on_gpu(variant: VariantSpec) -> bool:
    """A variant uses a GPU unless it is the CPU-only one: no ``gpu:`` build and named cpu."""
    return variant.gpu is not None or variant.name != "cpu"


def parse_variants(text: str | None, gpus: list[str], specs: dict[str, ImageSpec]) -> ImageVariants:
    """``--variant DEFAULT[,IMAGE=VARIANT...]`` checked against images.yaml (``specs``); one line naming
    the bad part otherwise. No ``--variant``: cuda with ``--gpus``, else cpu. An image without the default
    variant but with a cpu one (openvino: no cuda) runs its cpu variant, as if IMAGE=cpu were given."""
    option = f"--variant {text}"
    parts = [p.strip() for p in (text or "").split(",")]
    if text is not None and (not parts[0] or "=" in parts[0]):
        raise BenchError(f"{option}: start with the variant of every image, then IMAGE=VARIANT overrides, "
                         "e.g. --variant cuda,mxnet=cpu")
    default = parts[0] if text is not None else default_variant(gpus)
    overrides: dict[str, str] = {}
    implicit: list[str] = []
    for part in parts[1:]:
        image, eq, variant = (s.strip() for s in part.partition("="))
        if not eq or not image or not variant:
            raise BenchError(f"{option}: {part!r} is not IMAGE=VARIANT; write e.g. --variant cuda,mxnet=cpu")
        if image not in specs:
            raise BenchError(f"{option}: no image {image!r} in images.yaml (it has {', '.join(sorted(specs))})")
        if image in overrides:
            raise BenchError(f"{option}: {image} is given twice; give each image once")
        overrides[image] = variant
    for variant in [default, *overrides.values()]:
        if not VARIANT_RE.match(variant):
            raise BenchError(f"{option}: {variant!r} is not a variant name; use e.g. cpu or cuda")
    for image, spec in sorted(specs.items()):
        variant = overrides.get(image, default)
        if image not in overrides and spec.serving(variant) != variant:
            overrides[image] = "cpu"  # an image without the default variant (openvino has no cuda) runs on the CPU
            implicit.append(image)
            continue
        if variant not in spec.variants:
            raise BenchError(f"{option}: image {image} has no variant {variant!r} in images.yaml "
                             f"(it has {', '.join(sorted(spec.variants))})")
    return ImageVariants(default, tuple(sorted(overrides.items())), tuple(implicit))
