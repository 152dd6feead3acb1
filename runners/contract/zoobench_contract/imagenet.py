"""The ImageNet-1k class index: the one loader the orchestrator and every runner use.

Class index ``k`` is the k-th wnid in sorted order (``0 = n01440764`` tench ...
``999 = n15075141`` toilet tissue), the order torchvision and Keras use. Names are
torchvision's ``_IMAGENET_CATEGORIES`` (0.29.1), which are unique ("crane bird" vs "crane",
"maillot tank suit" vs "maillot"). The table ships as ``imagenet_classes.tsv`` beside this
module: ``index<TAB>wnid<TAB>name``, one row per class.
"""
from __future__ import annotations

import functools
import re
from importlib import resources

NUM_CLASSES = 1000
TABLE = "imagenet_classes.tsv"
_WNID = re.compile(r"^n\d{8}$")


class ClassIndexError(RuntimeError):
    """The shipped class table is damaged (a packaging bug, not a user error)."""


@functools.lru_cache(maxsize=1)
def _table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    text = resources.files(__package__).joinpath(TABLE).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line]
    where = f"{__package__}/{TABLE}"
    if len(rows) != NUM_CLASSES:
        raise ClassIndexError(f"{where}: {len(rows)} rows, expected {NUM_CLASSES}; reinstall zoobench-contract")
    wnid_list, names = [], []
    for i, row in enumerate(rows):
        if len(row) != 3 or row[0] != str(i) or not _WNID.match(row[1]) or not row[2].strip():
            raise ClassIndexError(f"{where}: row {i + 1} is not 'index<TAB>wnid<TAB>name' with index {i}: {row!r}")
        wnid_list.append(row[1])
        names.append(row[2])
    if wnid_list != sorted(set(wnid_list)):
        raise ClassIndexError(f"{where}: wnids are not unique and sorted; reinstall zoobench-contract")
    return tuple(wnid_list), tuple(names)


def wnids() -> tuple[str, ...]:
    """The 1000 wnids in class-index order."""
    return _table()[0]


def class_names() -> tuple[str, ...]:
    """The 1000 human-readable names in class-index order."""
    return _table()[1]


@functools.lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    """``{"n01440764": 0, ...}``. Do not mutate the returned dict (it is cached)."""
    return {w: i for i, w in enumerate(wnids())}


def is_wnid(s: str) -> bool:
    """True when ``s`` is one of the 1000 ImageNet-1k wnids (not merely wnid-shaped)."""
    return s in wnid_to_index()


def class_name(wnid_or_index: str | int) -> str:
    """Name of a class given its wnid or index; ``KeyError``/``IndexError`` when unknown."""
    if isinstance(wnid_or_index, str):
        return class_names()[wnid_to_index()[wnid_or_index]]
    return class_names()[wnid_or_index]


__all__ = ["NUM_CLASSES", "ClassIndexError", "wnids", "class_names", "wnid_to_index", "is_wnid", "class_name"]
