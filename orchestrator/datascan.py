"""Scan a validation folder once on the host, before any container starts.

Every file a bench will read is decoded with the runners' own reader (so a file that passes here
passes in ``predict run``) and hashed. Results are cached per file, keyed by (relative path, size,
mtime_ns), so a second bench on an unchanged folder reads nothing again; a changed file changes
its key, so it is read again and the data digest changes with it.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from zoobench_contract.dataset import DataError, read_image, set_digest
from zoobench_contract.outputs import atomic_write

CACHE_VERSION = 1


@dataclass(frozen=True)
class FileRecord:
    """One scanned file: its sha256, or the one-line reason it cannot be used."""

    sha256: str | None
    problem: str | None = None


@dataclass
class ScanResult:
    root: Path
    records: dict[str, FileRecord]
    reread: int  # files actually read this time (the rest came from the cache)

    @property
    def problems(self) -> list[tuple[str, str]]:
        return sorted((p, r.problem) for p, r in self.records.items() if r.problem)

    def digest(self, relpaths: list[str]) -> str:
        """The data digest ``predict run`` records for exactly these files."""
        return set_digest((p, self.records[p].sha256 or "") for p in relpaths)


def _inspect(root: Path, relpath: str) -> FileRecord:
    path = root / relpath
    if path.is_symlink() and not path.exists():
        return FileRecord(None, f"symlink to {os.readlink(path)}, which does not exist")
    try:
        loaded = read_image(root, relpath)
    except DataError as exc:
        return FileRecord(None, str(exc).removeprefix(f"{path}: "))
    except Exception as exc:  # noqa: BLE001 - whatever a decoder raises is a bad file, never a crash
        return FileRecord(None, f"not a readable image ({type(exc).__name__}: {exc})")
    loaded.image.close()
    return FileRecord(loaded.sha256)


def _key(root: Path, relpath: str) -> str | None:
    try:
        st = os.stat(root / relpath)
    except OSError:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"


def _cache_file(cache_dir: Path, root: Path) -> Path:
    return cache_dir / f"{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]}.json"


def _load_cache(path: Path) -> dict[str, list]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return raw.get("files", {}) if raw.get("version") == CACHE_VERSION else {}


def scan(root: Path, relpaths: list[str], cache_dir: Path | None, workers: int = 4,
         progress: Callable[[int, int], None] | None = None) -> ScanResult:
    """Decode and hash ``relpaths`` below ``root``, reusing cached records of unchanged files."""
    root = Path(root)
    cache_path = _cache_file(cache_dir, root) if cache_dir else None
    cached = _load_cache(cache_path) if cache_path else {}
    keys = {p: _key(root, p) for p in relpaths}
    records: dict[str, FileRecord] = {}
    todo = []
    for p in relpaths:
        hit = cached.get(p)
        if keys[p] is not None and hit and hit[0] == keys[p]:
            records[p] = FileRecord(hit[1], hit[2])
        else:
            todo.append(p)
    done = len(records)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for p, rec in zip(todo, pool.map(lambda rp: _inspect(root, rp), todo)):
            records[p] = rec
            done += 1
            if progress:
                progress(done, len(relpaths))
    if cache_path and todo:
        merged = {**cached, **{p: [keys[p], r.sha256, r.problem] for p, r in records.items() if keys[p]}}
        try:
            atomic_write(cache_path, lambda f: f.write(json.dumps({"version": CACHE_VERSION, "files": merged})),
                         mode="w", fsync=False)
        except OSError:
            pass  # a cache that cannot be written only costs a re-read next time
    return ScanResult(root, records, len(todo))
