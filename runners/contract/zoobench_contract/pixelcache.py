"""The pixel cache: the uint8 centre crops of a data set, decoded once per pixel configuration.

A crop depends only on the file, on ``(resize_size, crop_size, interpolation)`` and on the Pillow
version, so every model that shares them can read one memory-mapped array instead of decoding
the images again. ``predict cache`` writes a folder with

- ``pixels.npy``: N x C x C x 3 uint8, rows in ``paths`` order (written first, renamed into place);
- ``index.json``: ``paths``, ``sha256`` per file, ``config``, ``pillow``, ``contract``, ``data_digest``,
  ``n_images``, and the sha256 of every chunk of :data:`CHUNK_ROWS` rows of ``pixels.npy``
  (``chunk_sha256``) with ``pixels_digest`` over them all; written last, atomically: a folder
  without it is incomplete and never read.

``predict run --pixels DIR`` reads batches from it with the same :class:`~zoobench_contract.loader.Batch`
as the decoding loader, so its outputs are byte-identical to a run that decodes. Every chunk is
checked against its digest the first time it is read: an altered cache is one ``DataError`` line,
never a wrong prediction, and run.json records the ``pixels_digest`` of the cache it read.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import PIL

from .dataset import DataError, set_digest
from .loader import Batch, iter_batches
from .outputs import write_json
from .preprocessing import Preprocessing

PIXELS_FILE = "pixels.npy"
INDEX_FILE = "index.json"
CACHE_SCHEMA = 2  # 2: chunk digests (schema 1 caches are refused: they cannot be verified)
CHUNK_ROWS = 256  # rows hashed together: 38.5 MB at 224 px, 196 chunks for the 50,000 val images


def chunk_digest(block: np.ndarray) -> str:
    """sha256 of a C-contiguous block of rows (what the index stores per chunk)."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(block)).cast("B")).hexdigest()


def pixels_digest(shape: tuple[int, ...], chunk_rows: int, chunks: list[str]) -> str:
    """The digest of a whole cache, from its shape and chunk digests (no pixel is read again)."""
    blob = json.dumps({"shape": list(shape), "chunk_rows": chunk_rows, "chunks": chunks}, sort_keys=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def contract_version() -> str:
    try:
        return version("zoobench-contract")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "source"


def build(root: Path, paths: list[str], prep: Preprocessing, out: Path, workers: int | None = None,
          on_progress: Callable[[int, int, float], None] | None = None, chunk: int = 64) -> dict[str, Any]:
    """Decode ``paths`` below ``root`` into ``out/pixels.npy``, then write ``out/index.json``."""
    out.mkdir(parents=True, exist_ok=True)
    size = prep.crop_size
    tmp = out / f".{PIXELS_FILE}.tmp"
    pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    digests: list[str] = []
    chunks: list[str] = []
    start = time.perf_counter()
    try:
        for batch in iter_batches(root, paths, prep, chunk, workers=workers):
            pixels[len(digests):len(digests) + len(batch.paths)] = batch.pixels
            digests.extend(batch.sha256)
            complete = len(digests) if len(digests) == len(paths) else len(digests) // CHUNK_ROWS * CHUNK_ROWS
            while len(chunks) * CHUNK_ROWS < complete:  # hash each chunk once all its rows are written
                chunks.append(chunk_digest(pixels[len(chunks) * CHUNK_ROWS:(len(chunks) + 1) * CHUNK_ROWS]))
            if on_progress:
                on_progress(len(digests), len(paths), len(digests) / max(time.perf_counter() - start, 1e-9))
        pixels.flush()
    except BaseException:
        del pixels
        tmp.unlink(missing_ok=True)
        raise
    del pixels
    os.replace(tmp, out / PIXELS_FILE)
    index = {
        "schema": CACHE_SCHEMA,
        "paths": paths,
        "sha256": digests,
        "config": prep.pixel_config(),
        "pillow": PIL.__version__,
        "contract": contract_version(),
        "data_digest": set_digest(zip(paths, digests)),
        "n_images": len(paths),
        "chunk_rows": CHUNK_ROWS,
        "chunk_sha256": chunks,
        "pixels_digest": pixels_digest((len(paths), size, size, 3), CHUNK_ROWS, chunks),
        "seconds": time.perf_counter() - start,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out / INDEX_FILE, index)
    return index


@dataclass
class PixelCache:
    """A complete cache folder, checked against the run that wants to read it."""

    folder: Path
    index: dict[str, Any]
    pixels: np.ndarray  # memory-mapped, read-only
    rows: dict[str, int]
    verified: set[int] = field(default_factory=set)  # chunks checked against their digest

    @classmethod
    def open(cls, folder: Path, prep: Preprocessing, paths: list[str]) -> "PixelCache":
        """Raise :class:`DataError` (one line) unless the cache is complete and fits this run."""
        index_path = folder / INDEX_FILE
        if not index_path.is_file():
            raise DataError(f"--pixels {folder}: no {INDEX_FILE}, the cache is incomplete; rebuild it "
                            "(zoobench cache clear) or run without --pixels")
        try:
            index = json.loads(index_path.read_text())
            pixels = np.load(folder / PIXELS_FILE, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"--pixels {folder}: unreadable ({type(exc).__name__}: {exc}); rebuild it") from None
        want, have = prep.pixel_config(), index.get("config")
        if have != want:
            raise DataError(f"--pixels {folder}: built for {have}, this model needs {want}; use the cache of "
                            "its pixel configuration or run without --pixels")
        if index.get("pillow") != PIL.__version__:
            raise DataError(f"--pixels {folder}: built with Pillow {index.get('pillow')}, this image has "
                            f"{PIL.__version__}; rebuild the cache with this image")
        n = int(index.get("n_images", -1))
        chunks, rows_per = index.get("chunk_sha256"), index.get("chunk_rows")
        if index.get("schema") != CACHE_SCHEMA or not isinstance(chunks, list) or not isinstance(rows_per, int) \
                or rows_per < 1 or len(chunks) != math.ceil(max(n, 0) / rows_per):
            raise DataError(f"--pixels {folder}: {INDEX_FILE} has no chunk digests (schema {index.get('schema')}, "
                            f"this image reads schema {CACHE_SCHEMA}), so it cannot be verified; rebuild it "
                            "(zoobench cache clear) or run without --pixels")
        size = prep.crop_size
        if pixels.shape != (n, size, size, 3) or pixels.dtype != np.uint8 or len(index.get("paths", [])) != n:
            raise DataError(f"--pixels {folder}: {PIXELS_FILE} is {pixels.dtype}{pixels.shape}, the index says "
                            f"{n} images of {size}x{size}; rebuild it")
        rows = {p: i for i, p in enumerate(index["paths"])}
        absent = [p for p in paths if p not in rows]
        if absent:
            raise DataError(f"--pixels {folder}: {len(absent)} image(s) of --data are not in the cache "
                            f"(first: {absent[0]}); rebuild it for this data")
        return cls(folder, index, pixels, rows)

    @property
    def digest(self) -> str:
        return str(self.index["pixels_digest"])

    def verify_rows(self, rows: list[int]) -> None:
        """Check every not yet verified chunk holding ``rows`` against its digest (DataError if altered)."""
        per, want = self.index["chunk_rows"], self.index["chunk_sha256"]
        for c in sorted({r // per for r in rows} - self.verified):
            if chunk_digest(self.pixels[c * per:(c + 1) * per]) != want[c]:
                raise DataError(f"--pixels {self.folder}: rows {c * per}-{min((c + 1) * per, len(self.rows)) - 1} "
                                f"of {PIXELS_FILE} do not match their digest in {INDEX_FILE} (the cache was altered "
                                "after it was built); remove it (zoobench cache clear) or run without --pixels")
            self.verified.add(c)

    def iter_batches(self, paths: list[str], batch_size: int) -> Iterator[Batch]:
        """Batches in ``paths`` order, as the decoding loader yields them; each chunk of the cache
        is verified against its digest before its first row is used."""
        sha = self.index["sha256"]
        for i in range(0, len(paths), batch_size):
            chunk = paths[i:i + batch_size]
            rows = [self.rows[p] for p in chunk]
            self.verify_rows(rows)
            contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
            block = self.pixels[rows[0]:rows[0] + len(rows)] if contiguous else self.pixels[rows]
            yield Batch(chunk, np.ascontiguousarray(block), [sha[r] for r in rows])
