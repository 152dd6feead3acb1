"""What is under the pixel cache root, for ``zoobench cache list|clear``: every folder with its state,
and the removal of only those caches zoobench can prove it made (the ownership checks of pixelcache)."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from zoobench_contract.pixelcache import CACHE_SCHEMA

from ..errors import NotACache
from .layout import PARTIAL_SUFFIX
from .pixelcache import not_ours, pixels_problem, read_index, remove_own
from .plan import PixelConfig


@dataclass(frozen=True)
class Entry:
    """One folder under the cache root, as ``zoobench cache list`` shows it."""

    key: str
    path: Path
    state: str  # complete | partial | broken (zoobench's, unusable) | foreign (not zoobench's: never removed)
    config: str
    pillow: str
    n_images: int | None
    size: int
    created: str
    why: str = ""  # for a foreign folder: why zoobench cannot prove it made it


def folder_size(path: Path) -> int:
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def _entry(path: Path) -> Entry:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.lstat().st_mtime))
    foreign = not_ours(path)
    if foreign is not None:
        return Entry(path.name, path, "foreign", "?", "?", None, 0 if path.is_symlink() else folder_size(path),
                     created, foreign)
    index = read_index(path) if not path.name.endswith(PARTIAL_SUFFIX) else None
    key = path.name.removesuffix(PARTIAL_SUFFIX)
    if index is None:
        state = "partial" if path.name.endswith(PARTIAL_SUFFIX) else "broken"
        return Entry(key, path, state, "?", "?", None, folder_size(path), created)
    config = index.get("config") if isinstance(index.get("config"), dict) else {}
    n = index.get("n_images") if isinstance(index.get("n_images"), int) else None
    try:
        pc = PixelConfig(int(config["resize_size"]), int(config["crop_size"]), str(config["interpolation"]))
        text = pc.describe()
        ok = n is not None and index.get("schema") == CACHE_SCHEMA and pixels_problem(path, n, pc.crop_size) is None
    except (KeyError, TypeError, ValueError):
        text, ok = "?", False
    return Entry(key, path, "complete" if ok else "broken", text, str(index.get("pillow", "?")), n,
                 folder_size(path), str(index.get("created") or created))


def list_caches(root: Path) -> list[Entry]:
    """Every folder under ``root`` (complete, partial, broken, or foreign: not zoobench's), by key."""
    if not root.is_dir():
        return []
    return sorted((_entry(p) for p in root.iterdir() if (p.is_dir() or p.is_symlink()) and not p.name.startswith(".")),
                  key=lambda e: (e.key, e.path.name))


@dataclass
class Clearing:
    """What ``zoobench cache clear`` removes (or, dry, would remove) and what it leaves alone."""

    removed: list[Entry] = field(default_factory=list)
    left: list[Entry] = field(default_factory=list)


def clear(root: Path, keys: list[str], everything: bool, dry_run: bool = False) -> Clearing:
    """Remove the caches named by ``keys`` (complete and partial folders), or all of zoobench's.
    Raises KeyError naming the first key that matches no folder, and :class:`NotACache` for a key
    naming a folder zoobench did not make, before removing anything. Foreign folders are never removed."""
    entries = list_caches(root)
    if not everything:
        unknown = [k for k in keys if not any(e.key == k for e in entries)]
        if unknown:
            raise KeyError(unknown[0])
        entries = [e for e in entries if e.key in keys]
        foreign = [e for e in entries if e.state == "foreign"]
        if foreign:
            raise NotACache(f"{foreign[0].path} is not a pixel cache zoobench made ({foreign[0].why}); "
                            "`zoobench cache clear` removes only its own caches: remove it yourself if you mean to")
    done = Clearing()
    for e in entries:
        if e.state == "foreign":
            done.left.append(e)
            continue
        if not dry_run:
            try:
                remove_own(e.path)
            except (NotACache, OSError) as exc:  # changed since it was listed
                done.left.append(Entry(e.key, e.path, "foreign", e.config, e.pillow, e.n_images, e.size, e.created,
                                       str(exc) if isinstance(exc, NotACache) else str(exc.strerror or exc)))
                continue
        done.removed.append(e)
    return done
