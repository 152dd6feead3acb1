"""Model settings and bench profiles, read from YAML and validated with pydantic (``validate``, also
used for images.yaml by ``images.manifest``).

Every error names the file, the field and the fix, on one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zoobench_contract.cli import PRECISIONS

from .errors import ManifestError
from .paths import MANIFEST_DIR


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


MEMORY_PATTERN = r"^[1-9][0-9]*[bkmgBKMG]?$"  # docker's syntax: 512m, 8g


class PreprocessingOverride(Strict):
    """The fields of the contract's Preprocessing a manifest may override, each typed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    crop_size: int | None = Field(default=None, ge=1)
    resize_size: int | None = Field(default=None, ge=1)
    crop_fraction: float | None = Field(default=None, gt=0, le=1)
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] | None = None
    mode: Literal["meanstd", "tf", "caffe", "raw"] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: Literal["rgb", "bgr"] | None = None

    @field_validator("crop_fraction", "mean", "std", mode="before")
    @classmethod
    def _numbers_from_ints(cls, v: Any) -> Any:  # strict mode would refuse 1 for 1.0
        if isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, list):
            return tuple(float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v)
        return v

    @model_validator(mode="after")
    def _crop_fits(self) -> "PreprocessingOverride":
        if self.crop_size and self.resize_size and self.crop_size > self.resize_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than resize_size {self.resize_size}")
        return self


class ModelSettings(Strict):
    """Per (image, model) settings; every field optional."""

    preprocessing: PreprocessingOverride = Field(default_factory=PreprocessingOverride)
    batch_size: int | None = Field(default=None, ge=1)
    timeout_s: int | None = Field(default=None, ge=1)
    memory: str | None = Field(default=None, pattern=MEMORY_PATTERN)
    note: str | None = None

    @property
    def preprocess(self) -> dict[str, Any]:
        """The override as given (unset fields left out), in JSON types."""
        return self.preprocessing.model_dump(mode="json", exclude_none=True)


class Defaults(Strict):
    batch_size: int = Field(default=32, ge=1)
    timeout_s: int = Field(default=3600, ge=1)
    memory: str | None = Field(default=None, pattern=MEMORY_PATTERN)


class ModelsManifest(Strict):
    defaults: Defaults = Field(default_factory=Defaults)
    models: dict[str, ModelSettings] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _keys_are_image_slash_model(cls, v: dict[str, ModelSettings]) -> dict[str, ModelSettings]:
        for key in v:
            if key.count("/") != 1 or not all(key.split("/")):
                raise ValueError(f"key {key!r} must be IMAGE/MODEL, e.g. pytorch/resnet50")
        return v

    def settings(self, image: str, model: str) -> ModelSettings:
        return self.models.get(f"{image}/{model}", ModelSettings())


ModelList = Union[Literal["all"], list[str]]
Precision = Literal["fp32", "tf32", "bf16"]


class Profile(Strict):
    description: str = ""
    data: Literal["sample", "required"] = "required"
    weights: Union[str, dict[str, str]] = "imagenet"
    precision: Union[Precision, dict[str, Precision]] = "fp32"
    limit: int | None = Field(default=None, ge=1)
    datasets: list[str] | None = Field(default=None, min_length=1)  # the sets `zoobench run` benches (datasets.yaml)
    models: dict[str, ModelList]

    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, v: Any) -> Any:  # one clear message instead of one per Union member
        for p in v.values() if isinstance(v, dict) else [v]:
            if p not in PRECISIONS:
                raise ValueError(f"{p!r} is not one of {'|'.join(PRECISIONS)}")
        return v

    def weights_for(self, image: str) -> str:
        if isinstance(self.weights, str):
            return self.weights
        return self.weights.get(image, "imagenet")

    def precision_for(self, image: str) -> str:
        if isinstance(self.precision, str):
            return self.precision
        return self.precision.get(image, "fp32")


class ProfilesManifest(Strict):
    profiles: dict[str, Profile]


def _load_yaml(path: Path, error: type[Exception]) -> Any:
    if not path.is_file():
        raise error(f"{path}: manifest not found; restore it from git or pass --manifests DIR")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise error(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None


def validate(path: Path, schema: type[BaseModel], error: type[Exception] = ManifestError) -> Any:
    """``path``'s YAML as ``schema``; any problem is one ``error`` line naming the file and the field."""
    raw = _load_yaml(path, error)
    try:
        return schema.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise error(f"{path}: field {field}: {err['msg']}{more}; see the comments at the top of the file") from None


def load_models(manifest_dir: Path = MANIFEST_DIR) -> ModelsManifest:
    return validate(manifest_dir / "models.yaml", ModelsManifest)


def load_profiles(manifest_dir: Path = MANIFEST_DIR) -> ProfilesManifest:
    return validate(manifest_dir / "profiles.yaml", ProfilesManifest)


def get_profile(name: str, manifest_dir: Path = MANIFEST_DIR) -> Profile:
    profiles = load_profiles(manifest_dir).profiles
    if name not in profiles:
        raise ManifestError(
            f"unknown profile {name!r}; {manifest_dir / 'profiles.yaml'} defines: {', '.join(sorted(profiles))}"
        )
    return profiles[name]
