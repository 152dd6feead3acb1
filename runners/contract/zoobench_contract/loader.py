"""Parallel decode + resize + crop to uint8, overlapped with inference, identical in every framework.

Pillow releases the GIL while it decodes and resizes, so a thread pool gives real
parallelism without forking a framework process. Batches are produced ahead of the
consumer (bounded prefetch), so decoding the next batch overlaps compute on this one.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .dataset import read_image
from .preprocessing import Preprocessing, crop_pixels


@dataclass(frozen=True)
class Batch:
    paths: list[str]
    pixels: np.ndarray  # N x H x W x 3 uint8 RGB: the centre crops, not yet normalised
    sha256: list[str]


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0))))


def _load_one(root: Path, relpath: str, p: Preprocessing) -> tuple[np.ndarray, str]:
    loaded = read_image(root, relpath)
    return crop_pixels(loaded.image, p), loaded.sha256


def iter_batches(
    root: str | Path,
    paths: list[str],
    preprocessing: Preprocessing,
    batch_size: int,
    workers: int | None = None,
    prefetch_batches: int = 2,
) -> Iterator[Batch]:
    """Yield batches in ``paths`` order; any bad file raises ``DataError`` naming it."""
    root = Path(root)
    workers = workers or default_workers()
    chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[list[str], list[Future]]] = deque()

        def submit(chunk: list[str]) -> None:
            pending.append((chunk, [pool.submit(_load_one, root, rp, preprocessing) for rp in chunk]))

        next_chunk = 0
        try:
            while next_chunk < len(chunks) and len(pending) < prefetch_batches + 1:
                submit(chunks[next_chunk])
                next_chunk += 1
            while pending:
                chunk, futures = pending.popleft()
                results = [f.result() for f in futures]
                if next_chunk < len(chunks):
                    submit(chunks[next_chunk])
                    next_chunk += 1
                yield Batch(chunk, np.stack([r[0] for r in results]), [r[1] for r in results])
        finally:
            for _, futures in pending:
                for f in futures:
                    f.cancel()
