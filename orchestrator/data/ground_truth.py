"""The ILSVRC-2012 validation labels shipped with zoobench: file name -> wnid, 50,000 rows.

``imagenet_val_ground_truth.csv.gz`` (header ``filename,wnid``, sorted by file name) was made
from ``imagenet_val_ground_truth_imagefolder_order.csv`` of the published reference
predictions (cgnorthcutt/benchmarking-keras-pytorch, labels from soumith's ``valprep.sh``).
"""
from __future__ import annotations

import csv
import gzip
import io
from functools import lru_cache
from importlib import resources

from zoobench_contract.imagenet import is_wnid

GROUND_TRUTH_FILE = "imagenet_val_ground_truth.csv.gz"
N_VAL = 50_000
PER_CLASS = 50


@lru_cache(maxsize=1)
def val_ground_truth() -> dict[str, str]:
    """``ILSVRC2012_val_00000001.JPEG`` -> ``n01751748`` for all 50,000 val images (do not modify)."""
    raw = resources.files(__package__).joinpath(GROUND_TRUTH_FILE).read_bytes()
    reader = csv.reader(io.StringIO(gzip.decompress(raw).decode("ascii")))
    header = next(reader, None)
    if header != ["filename", "wnid"]:
        raise RuntimeError(f"{GROUND_TRUTH_FILE}: header {header!r} is not filename,wnid; reinstall zoobench")
    table = {}
    for row in reader:
        if len(row) != 2 or not is_wnid(row[1]):
            raise RuntimeError(f"{GROUND_TRUTH_FILE}: bad row {row!r}; reinstall zoobench")
        table[row[0]] = row[1]
    if len(table) != N_VAL:
        raise RuntimeError(f"{GROUND_TRUTH_FILE}: {len(table)} unique files, expected {N_VAL}; reinstall zoobench")
    return table


def is_val_name(name: str) -> bool:
    """True for the file name (no folder) of one of the 50,000 val images."""
    return name in val_ground_truth()
