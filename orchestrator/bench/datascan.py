"""Scan a validation folder once on the host, before any container starts.

Every file a bench will read is decoded with the runners' own reader (so a file that passes here
passes in ``predict run``) and hashed. On a root host the containers read the data as the images'
user (uid 1000), so each file must also be readable, and each folder from the data folder down
listable, by that user: a file that is not is a problem here, before any container starts
(checked on every scan, never cached; the data folder's own parents are not checked, since in a
container the mount point's parents belong to the image). Results are cached per file, keyed by (relative path,
size, mtime_ns, mode, owner), so a second bench on an unchanged folder reads nothing again; a
changed or re-permissioned file changes its key, so it is read again and the data digest
changes with it.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from zoobench_contract.dataset import DataError, read_image, set_digest
from zoobench_contract.outputs import atomic_write

CACHE_VERSION = 2  # 2: the key holds mode, uid and gid too
READ, LIST = 0o4, 0o5  # permission bits a file (r) and a folder (r, x) need


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


def stat_or_none(path: Path) -> os.stat_result | None:
    """``os.stat(path)`` (links followed), or None when it fails."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _key(st: os.stat_result | None) -> str | None:
    return None if st is None else f"{st.st_size}:{st.st_mtime_ns}:{st.st_mode:o}:{st.st_uid}:{st.st_gid}"


def allows(st: os.stat_result, uid: int, gid: int, bits: int) -> bool:
    """Whether ``uid:gid`` (no supplementary groups, no ACLs) has permission ``bits`` on a file
    with stat ``st``: the owner bits apply to its owner, the group bits to its group, else the others'."""
    if uid == 0:
        return True
    shift = 6 if st.st_uid == uid else 3 if st.st_gid == gid else 0
    return (st.st_mode >> shift) & bits == bits


class ReaderAccess:
    """Can the containers' user ``uid:gid`` list every folder from ``root`` down to a file and read it?"""

    def __init__(self, root: Path, uid: int, gid: int) -> None:
        self.root, self.uid, self.gid = Path(root), uid, gid
        self._folders: dict[str, str | None] = {}

    def problem(self, relpath: str, st: os.stat_result | None) -> str | None:
        """One line saying why that user cannot read ``relpath`` (stat ``st``), or None."""
        parts = PurePosixPath(relpath).parts
        for depth in range(len(parts)):
            why = self._folder("/".join(parts[:depth]))
            if why:
                return why
        if st is None or allows(st, self.uid, self.gid, READ):
            return None  # a file that cannot be stat'ed is reported by the read itself
        return f"not readable by the containers' user (uid {self.uid}): mode {_mode(st)}; chmod a+r it"

    def _folder(self, relpath: str) -> str | None:
        if relpath not in self._folders:
            folder = self.root / relpath
            st = stat_or_none(folder)
            self._folders[relpath] = None if st is None or allows(st, self.uid, self.gid, LIST) else (
                f"folder {folder} is not listable by the containers' user (uid {self.uid}): "
                f"mode {_mode(st)}; chmod a+rx it")
        return self._folders[relpath]


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):03o}"


def reader_access(root: Path) -> ReaderAccess | None:
    """The check for a root host, where containers read as the images' user (see
    ``containers.container_user``); None elsewhere: there they read as this user, as the scan does."""
    if os.getuid() != 0:
        return None
    from .containers import IMAGE_UID

    return ReaderAccess(root, IMAGE_UID, IMAGE_UID)


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
    stats = {p: stat_or_none(root / p) for p in relpaths}
    keys = {p: _key(st) for p, st in stats.items()}
    access = reader_access(root)
    records: dict[str, FileRecord] = {}
    todo = []
    for p in relpaths:
        hit = cached.get(p)
        denied = access.problem(p, stats[p]) if access else None
        if denied:
            records[p] = FileRecord(None, denied)
        elif keys[p] is not None and hit and hit[0] == keys[p]:
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
        merged = {**cached, **{p: [keys[p], records[p].sha256, records[p].problem] for p in todo if keys[p]}}
        try:
            atomic_write(cache_path, lambda f: f.write(json.dumps({"version": CACHE_VERSION, "files": merged})),
                         mode="w", fsync=False)
        except OSError:
            pass  # a cache that cannot be written only costs a re-read next time
    return ScanResult(root, records, len(todo))
