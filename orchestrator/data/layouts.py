"""Where a file of an evaluation set, as its authors distribute it, goes in the prepared folder.

:class:`Layout` maps the path of an archive member (or of a file below a source folder) to its
destination below ``OUT``, by the set's ``layout`` in manifests/datasets.yaml:

- ``wnid``: ``.../<wnid>/<file>`` -> ``<wnid>/<file>`` (ImageNet-R, -A, -Sketch, val);
- ``integer``: ``.../<k>/<file>`` -> ``<wnids()[k]>/<file>``, ``k`` read as a number (folder ``10`` is
  class index 10, never the 3rd folder of a string sort);
- ``corruption``: ``.../<corruption>/<severity>/<wnid>/<file>`` -> the same path (ImageNet-C).

Any number of leading folders is accepted: the layout is matched on the end of the path, and the
folders above it are the member's *root*. A file that does not belong gets a :class:`Skipped` with
a one-line reason: ``unsafe`` (absolute path, ``..``: never written), ``outside`` (an ImageNet class
the set does not have) or ``unknown`` (anything else: a README, a hidden file, a stray folder).
:class:`Roots` notices one layout folder found under two roots (``imagenet-a/n01498041`` and
``imagenet-r/n01498041`` in one source), which would mix two sets into one folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal, Optional, Union

from zoobench_contract.classsets import load_subset
from zoobench_contract.dataset import IMAGE_SUFFIXES
from zoobench_contract.imagenet import NUM_CLASSES, wnid_to_index, wnids

from .datasets import Dataset

SkipKind = Literal["unsafe", "outside", "unknown"]


@dataclass(frozen=True)
class Placed:
    """A file of the set: ``dest`` below OUT, its layout folder ``key`` and the ``root`` above it."""

    dest: str  # e.g. n01440764/x.jpg or gaussian_noise/3/n01440764/ILSVRC2012_val_00000293.JPEG
    key: str  # the class wnid, or corruption/severity
    root: str  # the folders above the layout ("" when it starts at the top)


@dataclass(frozen=True)
class Skipped:
    """A file that is not placed, and why (one line)."""

    kind: SkipKind
    reason: str


def unsafe_path(name: str) -> Optional[str]:
    """Why an archive member name could write outside the destination (None when it cannot)."""
    if not name:
        return "empty path"
    if name.startswith("/"):
        return "absolute path"
    if "\\" in name:
        return "backslash in the path"
    if ".." in name.split("/"):
        return "'..' in the path"
    return None


def class_wnids(dataset: Dataset) -> Optional[tuple[str, ...]]:
    """The wnids of the set's classes: its class subset, all 1000, or None when the manifest does not say."""
    if dataset.class_subset is not None:
        return load_subset(dataset.class_subset).wnids
    return wnids() if dataset.classes == NUM_CLASSES else None


def class_index(folder: str) -> Optional[int]:
    """``folder`` as a class index 0..999 written in decimal (``7``, not ``007``), else None."""
    if folder.isdigit() and folder == str(int(folder)) and int(folder) < NUM_CLASSES:
        return int(folder)
    return None


def severity_of(folder: str, severities: int) -> Optional[int]:
    """``folder`` as a severity 1..``severities``, else None."""
    if folder.isdigit() and folder == str(int(folder)) and 1 <= int(folder) <= severities:
        return int(folder)
    return None


class Layout:
    """Maps source paths of the set ``name`` to destinations below OUT (see the module docstring)."""

    def __init__(self, name: str, dataset: Dataset):
        self.name, self.dataset = name, dataset
        subset = class_wnids(dataset)
        self.classes = frozenset(subset) if dataset.class_subset is not None and subset else None
        self.corruptions = frozenset(dataset.all_corruptions)

    def place(self, name: str) -> Union[Placed, Skipped]:
        """Where the file ``name`` (a POSIX path relative to the source) goes, or why it does not."""
        unsafe = unsafe_path(name)
        if unsafe:
            return Skipped("unsafe", unsafe)
        parts = PurePosixPath(name).parts
        if any(p.startswith(".") for p in parts):
            return Skipped("unknown", "hidden file or folder")
        if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            return Skipped("unknown", "not an image file name (.jpg/.jpeg/.png)")
        if self.dataset.layout == "corruption":
            return self._corruption(parts)
        return self._class_folder(parts)

    def _class_folder(self, parts: tuple[str, ...]) -> Union[Placed, Skipped]:
        folder = parts[-2] if len(parts) >= 2 else ""
        index = class_index(folder) if self.dataset.layout == "integer" else None
        wnid = wnids()[index] if index is not None else folder
        if wnid not in wnid_to_index():
            form = "<0..999>" if self.dataset.layout == "integer" else "<wnid>"
            return Skipped("unknown", f"not in a class folder ({form}/FILE)")
        outside = self._outside(wnid)
        if outside:
            return outside
        return Placed(f"{wnid}/{parts[-1]}", wnid, "/".join(parts[:-2]))

    def _corruption(self, parts: tuple[str, ...]) -> Union[Placed, Skipped]:
        if len(parts) < 4:
            return Skipped("unknown", "not in a CORRUPTION/SEVERITY/WNID/ folder")
        corruption, severity, wnid, file = parts[-4:]
        if wnid not in wnid_to_index() or severity_of(severity, self.dataset.severities or 0) is None:
            return Skipped("unknown", f"not in a CORRUPTION/SEVERITY(1..{self.dataset.severities})/WNID/ folder")
        if corruption not in self.corruptions:
            return Skipped("unknown", f"corruption {corruption!r} is not one of {self.name}'s "
                                      "(manifests/datasets.yaml)")
        outside = self._outside(wnid)
        if outside:
            return outside
        return Placed(f"{corruption}/{severity}/{wnid}/{file}", f"{corruption}/{severity}", "/".join(parts[:-4]))

    def _outside(self, wnid: str) -> Optional[Skipped]:
        if self.classes is not None and wnid not in self.classes:
            return Skipped("outside", f"class {wnid} is not one of the {len(self.classes)} classes of {self.name}")
        return None


@dataclass
class Roots:
    """The root each layout folder was first met under, in one source."""

    first: dict[str, str] = field(default_factory=dict)

    def conflict(self, placed: Placed) -> Optional[str]:
        """One line when ``placed``'s layout folder was met under another root before, else None."""
        root = self.first.setdefault(placed.key, placed.root)
        if root == placed.root:
            return None
        return (f"{placed.key} is in two folders, {_shown(root)} and {_shown(placed.root)} "
                "(two copies or two sets in one source)")


def _shown(root: str) -> str:
    return f"{root}/" if root else "the top"
