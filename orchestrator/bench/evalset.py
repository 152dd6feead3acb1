"""Which evaluation set a bench runs on, as its jobs carry it: the set's name, the class subset its
logits are restricted to, whether only the subset's images are read, and whether the data folder is
a generated set (``zoobench data corrupt``).

:class:`EvalSet` is made once per bench from ``manifests/datasets.yaml`` and the data folder; it
gives the ``predict run``/``predict cache`` arguments, its part of the resume key, the results
sub-folder its runs go to, and the files a run reads (:meth:`EvalSet.select`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoobench_contract.classsets import images_of, load_subset
from zoobench_contract.dataset import GENERATED_FILE, list_images

from ..data.datasets import Dataset, DatasetsManifest, results_slot
from ..errors import BenchError


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set as a bench runs it."""

    name: str
    classes: str | None = None  # a class subset shipped by the contract (predict run --classes)
    classes_sha256: str | None = None
    subset_images: bool = False
    generated: bool = False
    slot: str | None = None  # results sub-folder (None: the results folder itself, the default set)
    preprocess: tuple[tuple[str, Any], ...] = ()  # the set's preprocessing overrides (datasets.yaml), as items

    def preprocess_of(self, model_override: dict[str, Any]) -> dict[str, Any]:
        """A model's preprocessing override with the set's on top; a set's ``crop_fraction`` wins over the
        model's ``resize_size`` (else the contract would keep the model's resize)."""
        mine = dict(self.preprocess)
        merged = {k: v for k, v in model_override.items() if not ("crop_fraction" in mine and k == "resize_size")}
        return {**merged, **mine}

    def args(self, with_name: bool = True) -> list[str]:
        """The ``predict run`` arguments (``with_name=False``: those ``predict cache`` takes too)."""
        out = ["--dataset", self.name] if with_name else []
        if self.classes:
            out += ["--classes", self.classes]
        if self.subset_images:
            out.append("--subset-images")
        return out

    def request(self) -> dict[str, Any]:
        """Its part of a run's resume key."""
        return {"name": self.name, "classes": self.classes, "classes_sha256": self.classes_sha256,
                "subset_images": self.subset_images}

    def select(self, data: Path) -> list[str]:
        """The files a run of this set reads below ``data`` (what ``predict run`` lists, the same way)."""
        paths = list_images(data)
        if self.subset_images and self.classes:
            paths = images_of(paths, load_subset(self.classes))
            if not paths:
                raise BenchError(f"{data}: no image lies in a folder of the classes of {self.classes} (dataset "
                                 f"{self.name} reads only those); pass the ImageNet val folder (wnid folders)")
        return paths

    def describe(self) -> str:
        text = self.name + (" (generated)" if self.generated else "")
        return text + (f", logits restricted to {self.classes}" if self.classes else "")


def is_generated(data: Path) -> bool:
    return (Path(data) / GENERATED_FILE).is_file()


def evalset_for(manifest: DatasetsManifest, name: str | None, data: Path | None) -> EvalSet:
    """The :class:`EvalSet` of ``--dataset name`` (None: the default set) on ``data`` (None: the sample)."""
    name, dataset = manifest.get(name)
    generated = data is not None and is_generated(data)
    check_layout(name, dataset, data, generated)
    return make_evalset(manifest, name, generated)


def make_evalset(manifest: DatasetsManifest, name: str, generated: bool) -> EvalSet:
    dataset = manifest.datasets[name]
    subset = load_subset(dataset.class_subset) if dataset.class_subset else None
    return EvalSet(name, dataset.class_subset, subset.sha256 if subset else None, dataset.subset_images, generated,
                   results_slot(name, generated, manifest.default),
                   tuple(sorted(dataset.preprocessing.model_dump(mode="json", exclude_none=True).items())))


def check_layout(name: str, dataset: Dataset, data: Path | None, generated: bool) -> None:
    """One line when ``data`` cannot be the set ``name`` as laid out: a generated corruption set benched as
    another set, a corruption set without its corruption folders, integer folders not yet prepared."""
    if data is None:
        if dataset.layout == "corruption":
            raise BenchError(f"--dataset {name} needs --data: make a set from the sample with `zoobench data corrupt "
                             "--data .cache/sample --out DIR` or prepare the official one (`zoobench data prepare`)")
        return
    if generated and dataset.layout != "corruption":
        raise BenchError(f"--data {data}: a generated corruption set ({GENERATED_FILE}); bench it with --dataset "
                         "imagenet-c, never as another set")
    top = sorted(p.name for p in Path(data).iterdir() if p.is_dir() and not p.name.startswith("."))
    if dataset.layout == "corruption":
        known = set(dataset.all_corruptions)
        unknown = [t for t in top if t not in known]
        if unknown or not top:
            what = f"folder {unknown[0]!r} is not a corruption" if unknown else "it has no corruption folders"
            raise BenchError(f"--data {data}: {what} of {name} (CORRUPTION/SEVERITY/WNID/ layout); prepare it with "
                             f"`zoobench data prepare --dataset {name}` or make one with `zoobench data corrupt`")
    elif top and all(t.isdigit() for t in top):
        raise BenchError(f"--data {data}: integer class folders ({top[0]}, ...); map them to wnids first with "
                         f"`zoobench data prepare --dataset {name} --from {data} --out DIR`")


def evalset_offline(manifest_dir: Path, name: str | None) -> EvalSet | None:
    """The set of ``--dataset`` for a bench whose data this host cannot see (``k8s render``): no layout
    check, never generated (a generated set is benched here or on Slurm); None for the default set."""
    from ..data.datasets import load_datasets

    manifest = load_datasets(manifest_dir)
    name, _ = manifest.get(name)
    return None if name == manifest.default else make_evalset(manifest, name, False)


def counts_note(manifest: DatasetsManifest, evalset: EvalSet | None, data: Path | None) -> str | None:
    """One line when ``data`` is not the whole official set (a subset is benched as it is, and said so);
    None for the default set, a generated set or a set read from val (both subsets by design)."""
    from ..data.counts import count_check

    if evalset is None or data is None or evalset.generated or evalset.subset_images:
        return None
    report = count_check(data, evalset.name, manifest.datasets[evalset.name])
    if report.complete:
        return None
    first = report.incomplete[0].head() if report.incomplete else f"{len(report.missing_sets)} set(s) missing"
    return (f"{evalset.name} in {data} is not the whole set ({first}); it is benched on the images it holds, "
            "so its figures are not those of the full set")
