"""ReaL labels (Beyer et al. 2020) for ``--labels real``: each validation image's set of accepted
classes, matched to prediction paths by the val file number in ``ILSVRC2012_val_NNNNNNNN``.

The data ship as ``orchestrator/data/real_labels.json.gz`` (Apache-2.0; source, licence and
checksum in ``orchestrator/data/REAL_LABELS.md``).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np

from ..errors import LabelError
from .truth import Truth

REAL_FILE = "real_labels.json.gz"
REAL_SHA256 = "d83e9bff374c631aae8439eb064c7019acc56e1b3bc3f56b8380c2a710b0220b"  # of the upstream real.json
SOURCE = "https://github.com/google-research/reassessed-imagenet"
N_VAL = 50_000
VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d{8})(?!\d)", re.IGNORECASE)
FIX = ("--labels real scores ImageNet validation images only, found by the number in their original file "
       "name (ILSVRC2012_val_00000001.JPEG...); keep those names or rank without --labels real")


@lru_cache(maxsize=1)
def real_sets() -> np.ndarray:
    """(50000, L) int16: row ``i`` = the ReaL classes of ILSVRC2012_val_{i+1:08d}, padded with -1."""
    raw = gzip.decompress(resources.files("orchestrator.data").joinpath(REAL_FILE).read_bytes())
    if hashlib.sha256(raw).hexdigest() != REAL_SHA256:
        raise RuntimeError(f"{REAL_FILE}: checksum differs from the published real.json; reinstall zoobench")
    lists = json.loads(raw)
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter((c for row in lists for c in row), dtype=np.int16, count=int(lengths.sum()))
    sets = np.full((len(lists), int(lengths.max())), -1, dtype=np.int16)
    rows = np.repeat(np.arange(len(lists)), lengths)
    cols = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    sets[rows, cols] = flat
    return sets


def val_numbers(paths: Sequence[str]) -> np.ndarray:
    """1-based val file number of each path (from the last ``ILSVRC2012_val_NNNNNNNN`` in its file name, any case)."""
    out = np.empty(len(paths), dtype=np.int64)
    for i, path in enumerate(paths):
        name = str(path).replace("\\", "/").rpartition("/")[2]
        found = VAL_NUMBER.findall(name)
        if not found:
            raise LabelError(f"no ReaL label for {str(path)!r}: its file name has no ILSVRC2012_val_NNNNNNNN "
                             f"number; {FIX}")
        number = int(found[-1])
        if not 1 <= number <= N_VAL:
            raise LabelError(f"no ReaL label for {str(path)!r}: val file number {number} is outside "
                             f"1..{N_VAL}; {FIX}")
        out[i] = number
    return out


def real_truth(paths: Sequence[str]) -> Truth:
    """The ReaL :class:`Truth` of ``paths``: images without a ReaL label are not scored."""
    sets = real_sets()[val_numbers(paths) - 1]
    keep = sets[:, 0] >= 0
    if not keep.any():
        raise LabelError(f"none of the {len(paths)} images has a ReaL label (the raters found none for "
                         f"{len(paths)} of these val files); rank them without --labels real")
    kept = sets[keep]
    width = int((kept >= 0).sum(axis=1).max())
    return Truth("real", keep, kept[:, :width].astype(np.int64))
