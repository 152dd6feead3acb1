"""Does a folder hold the whole evaluation set? Counts against the known totals of manifests/datasets.yaml.

:func:`count_check` works on any folder laid out as the set is read (``<wnid>/`` class folders, for
the ``integer`` layout ``<0..999>/`` ones too; ``<corruption>/<severity>/<wnid>/`` for ImageNet-C),
whoever made it. It counts the image files (.jpg/.jpeg/.png, not hidden) in each class folder and
names what is missing: classes without an image, classes with fewer than ``per_class`` (where the
manifest sets it), corruption x severity sets without a folder, the total against the known one.
The extra corruptions are counted when their folder is there. It also names what does not belong
(folders that are no class or corruption of the set, more images than known), which a run would read
too. Decoding is :mod:`.check`'s job; this only counts, so it is quick enough to warn before a run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from zoobench_contract.dataset import IMAGE_SUFFIXES, DataError
from zoobench_contract.imagenet import wnid_to_index, wnids

from .datasets import Dataset
from .layouts import class_index, class_wnids, severity_of
from .prepare import SHOW, list_names


@dataclass
class SetCount:
    """The images of one set of class folders: the whole set, or one corruption x severity of ImageNet-C."""

    name: str  # "" for the whole set, "gaussian_noise/3" for one corruption x severity
    images: int
    known: int  # the known total (manifests/datasets.yaml)
    classes: int  # classes holding at least one image
    known_classes: int  # the number of classes the set has
    empty: list[str] = field(default_factory=list)  # classes of the set without an image (wnids)
    short: list[str] = field(default_factory=list)  # "wnid (n)": fewer than per_class images, at least one

    @property
    def complete(self) -> bool:
        return (self.images >= self.known and self.classes >= self.known_classes
                and not self.empty and not self.short)

    def head(self) -> str:
        """``29,950 of 30,000 images, 199 of 200 classes``."""
        return f"{self.images:,} of {self.known:,} images, {self.classes} of {self.known_classes} classes"

    def details(self, per_class: Optional[int], show: int = SHOW) -> list[str]:
        """What is missing, one item per kind, naming the first ``show`` classes."""
        out = []
        for names, what in ((self.empty, "without an image"), (self.short, f"with fewer than {per_class} images")):
            if names:
                more = f" ... and {len(names) - show} more" if len(names) > show else ""
                out.append(f"{len(names)} class(es) {what}: {', '.join(names[:show])}{more}")
        return out


@dataclass
class CountReport:
    """What :func:`count_check` found in ``folder`` for the set ``dataset``."""

    folder: Path
    dataset: str
    layout: str
    known: int  # the known number of images (of each corruption x severity set for ImageNet-C)
    per_class: Optional[int]
    sets: list[SetCount] = field(default_factory=list)
    missing_sets: list[str] = field(default_factory=list)  # corruption/severity without a folder
    extra_sets: list[str] = field(default_factory=list)  # sets of the extra corruptions, counted
    unexpected: list[str] = field(default_factory=list)  # folders that are no class / corruption of the set
    subset_of_folder: bool = False  # the set is read from a bigger folder (subset_images): others are fine

    @property
    def incomplete(self) -> list[SetCount]:
        return [s for s in self.sets if not s.complete]

    @property
    def over(self) -> list[SetCount]:
        return [s for s in self.sets if s.images > s.known]

    @property
    def complete(self) -> bool:
        return not self.missing_sets and not self.incomplete

    def lines(self) -> list[str]:
        """The counts, for a summary (a few lines, whatever the size of the set)."""
        if self.layout != "corruption":
            s = self.sets[0]
            state = "complete" if s.complete and not self.over else "incomplete" if not s.complete else "too many"
            out = [f"counts: {state}: {s.head()}"]
            out += [f"  {line}" for line in s.details(self.per_class)]
        else:
            out = self._corruption_lines()
        if self.unexpected and not self.subset_of_folder:
            out.append(f"{len(self.unexpected)} folder(s) that are no part of {self.dataset}{list_names(self.unexpected)}")
        return out

    def _corruption_lines(self) -> list[str]:
        done = len(self.sets) - len(self.incomplete)
        total = len(self.sets) + len(self.missing_sets)
        extra = f" ({len(self.extra_sets)} of them of the extra corruptions)" if self.extra_sets else ""
        out = [f"counts: {done} of {total} corruption x severity sets complete, {self.known:,} images each{extra}"]
        if self.missing_sets:
            out.append(f"  {len(self.missing_sets)} set(s) missing{list_names(self.missing_sets)}")
        for s in self.incomplete[:SHOW]:
            out.append(f"  {s.name}: " + "; ".join([s.head()] + s.details(self.per_class, 3)))
        if len(self.incomplete) > SHOW:
            out.append(f"  ... and {len(self.incomplete) - SHOW} more incomplete sets")
        for s in self.over[:SHOW]:
            out.append(f"  {s.name}: {s.images:,} images, more than the known {s.known:,}")
        return out

    def problem(self, allow_incomplete: bool = False) -> Optional[str]:
        """One line when the folder is not the set as known (missing parts unless ``allow_incomplete``;
        folders or images that do not belong, always); None when it is."""
        where = f"{self.dataset} in {self.folder}"
        if self.unexpected and not self.subset_of_folder:
            return (f"{where}: {len(self.unexpected)} folder(s) that are no part of the set (first "
                    f"{self.unexpected[0]}); a run would read them too: remove them or prepare into an empty --out")
        if self.over:
            s = self.over[0]
            return (f"{where}: {s.images:,} images{' in ' + s.name if s.name else ''}, more than the known "
                    f"{s.known:,} (manifests/datasets.yaml); other files are mixed in: prepare into an empty --out")
        if self.complete or allow_incomplete:
            return None
        parts = []
        if self.missing_sets:
            parts.append(f"{len(self.missing_sets)} corruption x severity set(s) missing, first {self.missing_sets[0]}")
        for s in self.incomplete[:1]:
            what = [s.head() + (f" in {s.name}" if s.name else "")]
            what += [f"{len(s.empty)} class(es) without an image, first {s.empty[0]}"] if s.empty else []
            what += [f"{len(s.short)} with fewer than {self.per_class}, first {s.short[0]}"] if s.short else []
            more = len(self.incomplete) - 1
            parts.append(", ".join(what) + (f" (and {more} more incomplete sets)" if more else ""))
        return (f"{where} is incomplete: {'; '.join(parts)}; the source may be truncated or not the whole "
                "release: check it, or pass --allow-incomplete to keep a subset")


def count_check(folder: Path, name: str, dataset: Dataset) -> CountReport:
    """Count the images of the set ``name`` in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    report = CountReport(folder, name, dataset.layout, dataset.images, dataset.per_class,
                         subset_of_folder=dataset.subset_images)
    if dataset.layout != "corruption":
        count, report.unexpected = _count_classes(folder, dataset, "", integer=dataset.layout == "integer")
        report.sets.append(count)
        return report
    known = set(dataset.all_corruptions)
    report.unexpected = [d for d in _folders(folder) if d not in known]
    present = set(_folders(folder))
    for corruption in dataset.all_corruptions:
        extra = corruption not in dataset.corruptions
        if extra and corruption not in present:
            continue
        severities = dataset.severities or 0
        report.unexpected += [f"{corruption}/{d}" for d in _folders(folder / corruption)
                              if severity_of(d, severities) is None]
        for severity in range(1, severities + 1):
            key = f"{corruption}/{severity}"
            if not (folder / key).is_dir():
                report.missing_sets.append(key)
                continue
            count, unexpected = _count_classes(folder / key, dataset, key, integer=False)
            report.sets.append(count)
            report.unexpected += [f"{key}/{d}" for d in unexpected]
            if extra:
                report.extra_sets.append(key)
    return report


def _count_classes(folder: Path, dataset: Dataset, name: str, integer: bool) -> tuple[SetCount, list[str]]:
    """The images in the class folders of ``folder``, and its folders that are no class of the set."""
    expected = class_wnids(dataset)
    index = wnid_to_index()
    allowed = set(expected) if expected is not None and dataset.class_subset else set(index)
    by_class: dict[str, int] = {}
    unexpected: list[str] = []
    for d in _folders(folder):
        k = class_index(d) if integer else None
        wnid = wnids()[k] if k is not None else d
        if wnid not in allowed:
            unexpected.append(d)
            continue
        by_class[wnid] = by_class.get(wnid, 0) + _images_in(folder / d)
    images = sum(by_class.values())
    count = SetCount(name, images, dataset.images, sum(1 for n in by_class.values() if n), dataset.classes)
    if expected is not None:  # else the manifest gives only the number of classes
        count.empty = [w for w in expected if not by_class.get(w)]
    if dataset.per_class:
        count.short = [f"{w} ({n})" for w, n in sorted(by_class.items(), key=lambda item: index[item[0]])
                       if 0 < n < dataset.per_class]
    return count, unexpected


def _folders(folder: Path) -> list[str]:
    """The sorted names of the visible sub-folders of ``folder`` (none when it is not a folder)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc}); check its permissions") from None


def _images_in(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if not e.name.startswith(".")
                       and e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc}); check its permissions") from None
