"""Class subsets: scoring a 1000-class model on a set that has only some of the ImageNet classes.

ImageNet-R and ImageNet-A keep 200 classes each (two different lists, 86 shared). Their authors
score a 1000-class model by restricting its logits to those classes *before* the arg-max
(Hendrycks' ``eval.py``; timm ``validate.py --valid-labels``), which no top-5 over 1000 classes can
reproduce afterwards. :func:`load_subset` reads a shipped list by name (``imagenet-r``,
``imagenet-a``: ``imagenet_<x>_wnids.txt`` beside this module, with their source in the header) or
a user's file (one wnid or class index per line, ``#`` comments); :func:`restrict` masks the other
classes out, so softmax and top-k see only the subset and the indices stay 1000-class indices.
:func:`images_of` keeps the files whose class folder is in a subset (the "clean" val images of
those classes).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from .dataset import DataError
from .imagenet import NUM_CLASSES, wnid_to_index, wnids

SHIPPED = {"imagenet-r": "imagenet_r_wnids.txt", "imagenet-a": "imagenet_a_wnids.txt"}


@dataclass(frozen=True)
class ClassSubset:
    """A set of ImageNet-1k classes: its name, sorted class indices and the sha256 of its list."""

    name: str
    indices: tuple[int, ...]
    sha256: str

    @property
    def wnids(self) -> tuple[str, ...]:
        every = wnids()
        return tuple(every[i] for i in self.indices)

    def record(self) -> dict[str, object]:
        """What run.json says about it."""
        return {"name": self.name, "n": len(self.indices), "sha256": self.sha256}


def canonical_sha256(indices: Sequence[int]) -> str:
    """sha256 of the subset as sorted wnids, one per line: equal for equal subsets, however written."""
    every = wnids()
    return hashlib.sha256("".join(f"{every[i]}\n" for i in sorted(indices)).encode()).hexdigest()


def _parse(text: str, where: str) -> tuple[int, ...]:
    index = wnid_to_index()
    found: set[int] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        item = raw.split("#", 1)[0].strip()
        if not item:
            continue
        if item.isdigit() and int(item) < NUM_CLASSES:
            found.add(int(item))
        elif item in index:
            found.add(index[item])
        else:
            raise DataError(f"{where} line {n}: {item!r} is neither an ImageNet-1k wnid nor a class index 0..999; "
                            "fix the line")
    if not found:
        raise DataError(f"{where}: no classes listed; give one wnid (n01440764) or class index per line")
    return tuple(sorted(found))


def load_subset(name_or_file: str) -> ClassSubset:
    """A shipped subset by name (``imagenet-r``, ``imagenet-a``) or a file of wnids / class indices."""
    if name_or_file in SHIPPED:
        text = resources.files(__package__).joinpath(SHIPPED[name_or_file]).read_text(encoding="utf-8")
        indices = _parse(text, f"{__package__}/{SHIPPED[name_or_file]}")
        return ClassSubset(name_or_file, indices, canonical_sha256(indices))
    path = Path(name_or_file)
    if not path.is_file():
        raise DataError(f"--classes {name_or_file}: neither a shipped subset ({', '.join(SHIPPED)}) nor a file; "
                        "pass one of them or a file with one wnid per line")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--classes {path}: cannot read ({type(exc).__name__}); pass a UTF-8 text file") from None
    indices = _parse(text, str(path))
    return ClassSubset(path.name, indices, canonical_sha256(indices))


def restrict(logits: np.ndarray, subset: ClassSubset | None) -> np.ndarray:
    """``logits`` (N x 1000) with every class outside ``subset`` set to -inf (a copy; float32 or wider)."""
    if subset is None:
        return logits
    out = np.full_like(logits, -np.inf, dtype=np.result_type(logits.dtype, np.float32))
    keep = np.asarray(subset.indices)
    out[:, keep] = logits[:, keep]
    return out


def class_of(path: str) -> str | None:
    """The wnid of a relative image path: its deepest folder that is an ImageNet-1k wnid."""
    index = wnid_to_index()
    return next((p for p in reversed(PurePosixPath(path).parts[:-1]) if p in index), None)


def images_of(paths: Sequence[str], subset: ClassSubset) -> list[str]:
    """The paths whose class folder (:func:`class_of`) is in ``subset``, in their order."""
    keep = set(subset.wnids)
    return [p for p in paths if class_of(p) in keep]
