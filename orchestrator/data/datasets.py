"""The evaluation sets as data: ``manifests/datasets.yaml`` read and checked with pydantic.

Each :class:`Dataset` says how its files are laid out, how many images and classes it has, which
class subset a 1000-class model is restricted to (the contract's ``predict run --classes``), how it
is scored and which set is its clean reference. ImageNet val is the default; a new set is an entry
in the manifest. :func:`results_slot` is where a set's runs live in a results folder, so runs of
different sets (and a generated ImageNet-C beside the official one) are never mixed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from zoobench_contract.classsets import SHIPPED

from ..errors import ManifestError
from ..manifests import PreprocessingOverride, Strict, validate
from ..paths import MANIFEST_DIR

DATASETS_FILE = "datasets.yaml"
GENERATED_SUFFIX = "-generated"  # results slot of a generated set: imagenet-c-generated


class Dataset(Strict):
    """One evaluation set (manifests/datasets.yaml documents every field)."""

    title: str
    layout: Literal["wnid", "integer", "corruption"]
    images: int = Field(ge=1)
    classes: int = Field(ge=1, le=1000)
    per_class: int | None = Field(default=None, ge=1)
    class_subset: str | None = None
    subset_images: bool = False
    scoring: Literal["accuracy", "corruption"] = "accuracy"
    clean: str | None = None
    corruptions: list[str] = Field(default_factory=list)
    extra_corruptions: list[str] = Field(default_factory=list)
    severities: int | None = Field(default=None, ge=1)
    preprocessing: PreprocessingOverride = Field(default_factory=PreprocessingOverride)
    default: bool = False
    source: str
    archive: str
    licence: str
    reference: str

    @model_validator(mode="after")
    def _consistent(self) -> "Dataset":
        if self.class_subset is not None and self.class_subset not in SHIPPED:
            raise ValueError(f"class_subset {self.class_subset!r} is not shipped by the contract "
                             f"(known: {', '.join(SHIPPED)})")
        if self.subset_images and self.class_subset is None:
            raise ValueError("subset_images needs a class_subset")
        if (self.layout == "corruption") != bool(self.corruptions and self.severities):
            raise ValueError("layout corruption needs corruptions and severities (and only it has them)")
        if (self.layout == "corruption") != (self.scoring == "corruption"):
            raise ValueError("scoring corruption goes with layout corruption")
        if self.per_class is not None and self.per_class * self.classes != self.images:
            raise ValueError(f"per_class {self.per_class} x classes {self.classes} != images {self.images}")
        return self

    @property
    def all_corruptions(self) -> list[str]:
        return self.corruptions + self.extra_corruptions


class DatasetsManifest(Strict):
    datasets: dict[str, Dataset]

    @model_validator(mode="after")
    def _references(self) -> "DatasetsManifest":
        defaults = [n for n, d in self.datasets.items() if d.default]
        if len(defaults) != 1:
            raise ValueError(f"exactly one dataset must have default: true (found {len(defaults)})")
        for name, d in self.datasets.items():
            if d.clean is not None and d.clean not in self.datasets:
                raise ValueError(f"{name}.clean {d.clean!r} is not a dataset of this file")
            if name.endswith(GENERATED_SUFFIX):
                raise ValueError(f"{name}: names ending in {GENERATED_SUFFIX} are kept for generated sets")
        return self

    @property
    def default(self) -> str:
        return next(n for n, d in self.datasets.items() if d.default)

    def get(self, name: str | None, where: str = "--dataset") -> tuple[str, Dataset]:
        """(name, dataset); None gives the default. One line naming the known sets otherwise."""
        name = name or self.default
        if name not in self.datasets:
            raise ManifestError(f"{where} {name!r}: unknown dataset; manifests/{DATASETS_FILE} defines "
                                f"{', '.join(self.datasets)}")
        return name, self.datasets[name]


def load_datasets(manifest_dir: Path = MANIFEST_DIR) -> DatasetsManifest:
    return validate(Path(manifest_dir) / DATASETS_FILE, DatasetsManifest)


def results_slot(name: str, generated: bool, default: str) -> str | None:
    """The sub-folder of a results folder that holds a set's runs: none (the top) for the default set,
    the set's name for the others, ``NAME-generated`` for a generated set."""
    if generated:
        return name + GENERATED_SUFFIX
    return None if name == default else name
