"""manifests/images.yaml, validated with pydantic: the images, their variants and build arguments.

An invalid manifest is one :class:`ImageManifestError` line naming the file, the field and the fix
(``manifests.validate`` words it); a valid one becomes frozen :class:`ImageSpec`s.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from zoobench_contract.gpubuild import GpuBuild, capability

from ..errors import ImageManifestError
from ..manifests import Strict, validate

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
VARIANT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")
PYTHON_RE = re.compile(r"^3\.\d+$")
BUILD_ARG_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
RESERVED_BUILD_ARGS = {"BASE_IMAGE", "FRAMEWORK", "PYTHON", "LOCK", "WHEELS_URL", "IMAGE_TAG", "GPU_ARCHS"}


def _inside_repository(value: str) -> str:
    if not value.strip():
        raise ValueError("expected a path; give a path relative to the repository root")
    if value.startswith("/") or ".." in Path(value).parts:
        raise ValueError(f"{value!r} is not inside the repository; give a path relative to the repository root, "
                         "without ..")
    return value.strip().rstrip("/")


def _build_args(raw: Any) -> tuple[tuple[str, str], ...]:
    """``build_args: {NAME: value}``: extra Dockerfile ARGs (e.g. SYSTEM_PACKAGES), strings only."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping of NAME: value, got {raw!r}; e.g. {{SYSTEM_PACKAGES: libgomp1}}")
    out: list[tuple[str, str]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not BUILD_ARG_RE.match(key):
            raise ValueError(f"{key!r} is not a Dockerfile ARG name; use upper-case letters, digits and _")
        if key in RESERVED_BUILD_ARGS:
            raise ValueError(f"{key} is set by zoobench itself; remove it "
                             f"(zoobench passes {', '.join(sorted(RESERVED_BUILD_ARGS))})")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"{key}: expected a string, got {value!r}; quote the value")
        out.append((key, str(value)))
    return tuple(sorted(out))


def _tag_names(named: dict[str, Any], pattern: re.Pattern[str], empty: str, what: str, allowed: str) -> dict[str, Any]:
    """``named`` when it is not empty and every key can stand in a Docker tag."""
    if not named:
        raise ValueError(empty)
    for name in named:
        if not pattern.match(name):
            raise ValueError(f"{what} name {name!r} is not usable in a Docker tag; use {allowed}")
    return named


RelPath = Annotated[str, AfterValidator(_inside_repository)]
BuildArgs = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_build_args)]


def _arch_list(pattern: re.Pattern[str], example: str) -> Any:
    def check(values: list[str]) -> list[str]:
        for value in values:
            if not pattern.match(value):
                raise ValueError(f"{value!r} is not an architecture; write e.g. {example}")
        return sorted(set(values), key=capability)
    return AfterValidator(check)


class GpuModel(Strict):
    """``gpu:`` of a cuda variant: what the framework in it was built for (the image's ``predict info``
    must report the same; the contract suite checks it)."""

    cuda: Annotated[str, Field(pattern=r"^\d+\.\d+$")]
    archs: Annotated[list[str], _arch_list(re.compile(r"^sm_\d{2,3}[a-z]?$"), "sm_80")]
    ptx: Annotated[list[str], _arch_list(re.compile(r"^compute_\d{2,3}[a-z]?$"), "compute_90")] = []


class VariantModel(Strict):
    lock: RelPath
    base_image: str
    python: str = "3.11"
    build_args: BuildArgs = ()
    gpu: GpuModel | None = None

    @field_validator("base_image")
    @classmethod
    def _base_reference(cls, v: str) -> str:
        if not v.strip() or any(c.isspace() for c in v):
            raise ValueError(f"expected offline, default or an image reference, got {v!r}; use offline "
                             "(images/base/build.sh), default (the Dockerfile's) or e.g. debian@sha256:...")
        return v

    @field_validator("python", mode="before")
    @classmethod
    def _python_version(cls, v: Any) -> Any:
        if not isinstance(v, str) or not PYTHON_RE.match(v):
            raise ValueError(f'{v!r} is not a Python version; write it as a quoted MAJOR.MINOR string, e.g. "3.11"')
        return v


class ImageModel(Strict):
    framework: Annotated[str, Field(min_length=1)]
    dockerfile: RelPath
    inputs: list[RelPath]
    variants: dict[str, VariantModel]
    build_args: BuildArgs = ()
    reads: Literal["onnx"] | None = None

    @field_validator("inputs")
    @classmethod
    def _some_inputs(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected a non-empty list of paths; list the folders the Dockerfile copies, "
                             "e.g. [runners/contract, runners/pytorch]")
        return v

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, VariantModel]) -> dict[str, VariantModel]:
        return _tag_names(v, VARIANT_RE, "expected a mapping of variants; declare at least cpu: "
                          "{lock: ..., base_image: offline}", "variant", "letters, digits, - _ . (e.g. cpu, cuda)")


class ImagesManifest(Strict):
    images: dict[str, ImageModel]

    @field_validator("images")
    @classmethod
    def _image_names(cls, v: dict[str, ImageModel]) -> dict[str, ImageModel]:
        return _tag_names(v, NAME_RE, "missing or empty; declare images: {NAME: {framework, dockerfile, inputs, "
                          "variants}}", "image", "lower-case letters, digits, - _ . (e.g. pytorch)")


@dataclass(frozen=True)
class VariantSpec:
    """One build flavour of an image (cpu, cuda)."""

    name: str
    lock: str
    base_image: str  # "offline", "default" or an image reference
    python: str = "3.11"
    build_args: tuple[tuple[str, str], ...] = ()
    gpu: GpuBuild | None = None  # what the variant's framework was built for; None: a CPU-only variant


@dataclass(frozen=True)
class ImageSpec:
    """One framework image as manifests/images.yaml declares it."""

    name: str
    framework: str
    dockerfile: str
    inputs: tuple[str, ...]
    variants: dict[str, VariantSpec]
    source: str = "manifests/images.yaml"
    build_args: tuple[tuple[str, str], ...] = ()
    reads: str | None = None  # a deployment runtime: the converted-model format it serves (`zoobench convert --to`)

    def serving(self, variant: str) -> str:
        """The variant this image runs when a bench asks for ``variant``: itself, or cpu for an image without
        it (openvino has no cuda variant: a cuda bench runs it on the CPU)."""
        return variant if variant in self.variants or "cpu" not in self.variants else "cpu"

    def variant(self, variant: str) -> VariantSpec:
        if variant not in self.variants:
            raise ImageManifestError(
                f"{self.source}: images.{self.name}.variants has no {variant!r}; "
                f"use --variant {' or '.join(sorted(self.variants))}")
        return self.variants[variant]


def gpu_build(gpu: GpuModel | None) -> GpuBuild | None:
    return None if gpu is None else GpuBuild(gpu.cuda, None, tuple(gpu.archs), tuple(gpu.ptx), source="manifest")


def load_manifest(path: Path) -> dict[str, ImageSpec]:
    """Read and validate manifests/images.yaml; image name -> spec."""
    manifest: ImagesManifest = validate(path, ImagesManifest, ImageManifestError)
    return {
        name: ImageSpec(
            name=name, framework=image.framework, dockerfile=image.dockerfile, inputs=tuple(image.inputs),
            variants={v: VariantSpec(v, var.lock, var.base_image, var.python, var.build_args, gpu_build(var.gpu))
                      for v, var in image.variants.items()},
            source=str(path), build_args=image.build_args, reads=image.reads)
        for name, image in manifest.images.items()
    }
