"""The pixel cache, orchestrator side: decode each image set once per pixel configuration.

A model's uint8 centre crop depends only on the file, on (resize_size, crop_size, interpolation)
and on the Pillow version. Jobs that share all of these and the same image set (data digest and
``--limit``) form a group; every group of two jobs or more gets one cache, built by ``predict
cache`` inside a runner image (the contract's own Pillow code), under ``ROOT/<key>/``:
``pixels.npy`` (N x C x C x 3 uint8) and ``index.json`` (written last: its presence means
complete). A build goes into ``<key>.partial/`` and is renamed into place only once it is valid;
a cache that does not match (config, Pillow, digest, size, chunk digests) is never used. Whatever
goes wrong with a cache is one ``note:`` line and the models decode the images themselves.

Nothing else is ever deleted: a folder is removed (by ``zoobench cache clear`` or to rebuild a key)
only when zoobench can prove it made it: its name is a cache key, it holds only the files a build
writes, and its marker (``zoobench-cache.json``, written first by the build) or, for caches of
older releases, its own index gives back that key. Anything else is left alone with one line.
Listing and clearing the caches (``zoobench cache list|clear``) is :mod:`.cachestore`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from zoobench_contract.outputs import write_json
from zoobench_contract.pixelcache import CACHE_SCHEMA, INDEX_FILE, PIXELS_FILE

from ..errors import NotACache, first_line
from ..paths import PIXEL_CACHE
from .layout import PARTIAL_SUFFIX, PIXELS_MOUNT
from .mounts import Bind
from .plan import Job, PixelConfig

ROOT_ENV = "ZOOBENCH_PIXEL_CACHE"
DEFAULT_ROOT = PIXEL_CACHE
MARKER_FILE = "zoobench-cache.json"  # written first into every build: what proves zoobench made a folder
KEY_NAME = re.compile(r"^[0-9a-f]{16}(\.partial)?$")
BUILD_TEMP = re.compile(r"^\.(pixels\.npy|index\.json|zoobench-cache\.json)(\..*)?\.tmp$")
LOCK_FILE = ".lock"
MOUNT = PIXELS_MOUNT  # where a job sees its cache
MARGIN = 0.05  # free space needed on top of the cache's size
INDEX_BYTES_PER_IMAGE = 200  # path + sha256 in index.json, a generous estimate
SLACK_BYTES = 64 * 1024  # .npy header, the rest of index.json


def cache_root() -> Path:
    """Where caches live: ``$ZOOBENCH_PIXEL_CACHE`` or ``.cache/pixels`` of the checkout."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def cache_key(config: PixelConfig, pillow: str, data_digest: str, limit: int | None) -> str:
    """First 16 hex of sha256 over what makes a cache: config, Pillow version, data digest, limit."""
    blob = json.dumps({"config": config.as_dict(), "pillow": pillow, "data_digest": data_digest, "limit": limit},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def expected_bytes(n_images: int, config: PixelConfig) -> int:
    """Disk space a cache of ``n_images`` takes (pixels, index, headers)."""
    return n_images * (config.row_bytes + INDEX_BYTES_PER_IMAGE) + SLACK_BYTES


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB"


def size_text(n_bytes: float) -> str:
    """Decimal units, as disks are sold: 7.53 GB, 903.2 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{int(n_bytes)} B"


def space_note(config: PixelConfig, needed: int, free: int) -> str | None:
    """None when ``free`` covers ``needed`` plus the margin, else the note that says why not."""
    if free >= needed * (1 + MARGIN):
        return None
    return (f"no pixel cache for {config.describe()}: needs {gb(needed * (1 + MARGIN))}, {gb(free)} free; "
            "the models decode the images themselves")


# ---------------------------------------------------------------- checking a cache folder

def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a .npy header, without reading the data."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
        if fortran:
            raise ValueError("Fortran order")
        return tuple(shape), dtype, fh.tell()


def pixels_problem(folder: Path, n_images: int, crop_size: int) -> str | None:
    """Why ``folder/pixels.npy`` is not an n x C x C x 3 uint8 array of exactly the right size."""
    path = folder / PIXELS_FILE
    try:
        shape, dtype, offset = npy_layout(path)
        size = path.stat().st_size
    except (OSError, ValueError, SyntaxError) as exc:
        return f"{PIXELS_FILE} unreadable ({type(exc).__name__})"
    want = (n_images, crop_size, crop_size, 3)
    if shape != want or dtype != np.uint8:
        return f"{PIXELS_FILE} is {dtype}{shape}, expected uint8{want}"
    if size != offset + n_images * crop_size * crop_size * 3:
        return f"{PIXELS_FILE} is {size} bytes, expected {offset + n_images * crop_size * crop_size * 3} (truncated?)"
    return None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is absent, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_index(folder: Path) -> dict[str, Any] | None:
    return read_json(folder / INDEX_FILE)


def content_problem(folder: Path, config: PixelConfig, pillow: str, data_digest: str, n_images: int) -> str | None:
    """Why the files of ``folder`` are not a complete cache made for exactly this (None: they are)."""
    if not (folder / INDEX_FILE).is_file():
        return f"incomplete: no {INDEX_FILE}"
    index = read_index(folder)
    if index is None:
        return f"{INDEX_FILE} unreadable"
    checks = [("config", index.get("config"), config.as_dict()), ("pillow", index.get("pillow"), pillow),
              ("data_digest", index.get("data_digest"), data_digest), ("n_images", index.get("n_images"), n_images)]
    for name, have, want in checks:
        if have != want:
            return f"{name} {have!r} in {INDEX_FILE}, expected {want!r}"
    paths = index.get("paths")
    if not isinstance(paths, list) or len(paths) != n_images:
        return f"{INDEX_FILE} lists {len(paths) if isinstance(paths, list) else 'no'} paths, expected {n_images}"
    if index.get("schema") != CACHE_SCHEMA or not isinstance(index.get("chunk_sha256"), list):
        return f"built without chunk digests (schema {index.get('schema')!r}), so it cannot be verified"
    return pixels_problem(folder, n_images, config.crop_size)


def problem(folder: Path, config: PixelConfig, pillow: str, data_digest: str, n_images: int) -> str | None:
    """None when ``folder`` is a usable cache for exactly this; a ``.partial`` folder never is."""
    if folder.name.endswith(PARTIAL_SUFFIX):
        return "a partial build"
    return content_problem(folder, config, pillow, data_digest, n_images)


def write_marker(folder: Path, key: str, limit: int | None) -> None:
    """The first file of a build: what later proves that zoobench made ``folder`` and for which key."""
    write_json(folder / MARKER_FILE, {"made_by": "zoobench", "key": key, "limit": limit,
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _index_key(index: dict[str, Any], limit: int | None) -> str | None:
    try:
        config = PixelConfig(int(index["config"]["resize_size"]), int(index["config"]["crop_size"]),
                             str(index["config"]["interpolation"]))
        return cache_key(config, str(index["pillow"]), str(index["data_digest"]), limit)
    except (KeyError, TypeError, ValueError):
        return None


def not_ours(folder: Path) -> str | None:
    """Why zoobench cannot prove it made ``folder`` (None: it did, and may remove it)."""
    if folder.is_symlink():
        return "a symbolic link"
    if not folder.is_dir():
        return "not a folder"
    if not KEY_NAME.match(folder.name):
        return "its name is not a cache key"
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    own = {PIXELS_FILE, INDEX_FILE, MARKER_FILE}
    foreign = [n for n in names if n not in own and not BUILD_TEMP.match(n)]
    if foreign:
        return f"it holds {foreign[0]!r}, which no cache build writes"
    if any(not (folder / n).is_file() or (folder / n).is_symlink() for n in names):
        return "it holds something that is not a plain file"
    key = folder.name.removesuffix(PARTIAL_SUFFIX)
    marker = read_json(folder / MARKER_FILE)
    index = read_index(folder)
    if marker is not None:
        if marker.get("made_by") != "zoobench" or marker.get("key") != key:
            return f"its {MARKER_FILE} names another key"
        if index is not None and not folder.name.endswith(PARTIAL_SUFFIX) and _index_key(index, marker.get("limit")) != key:
            return f"its {INDEX_FILE} does not give back its key"
        return None
    if MARKER_FILE in names:
        return f"its {MARKER_FILE} is unreadable"
    if index is not None:  # a cache of an earlier release: its own index must give back the key
        n = index.get("n_images") if isinstance(index.get("n_images"), int) else None
        return None if key in (_index_key(index, None), _index_key(index, n)) else \
            f"its {INDEX_FILE} does not give back its key"
    return None if folder.name.endswith(PARTIAL_SUFFIX) or not names else f"no {MARKER_FILE} and no {INDEX_FILE}"


def remove_own(folder: Path) -> None:
    """Remove a folder zoobench made (checked again now): its files one by one, then the folder.
    Never a recursive delete: what is not a build's file stays, and the folder with it."""
    why = not_ours(folder)
    if why is not None:
        raise NotACache(f"{folder} is not a pixel cache zoobench made ({why}); left alone")
    for name in os.listdir(folder):
        (folder / name).unlink(missing_ok=True)
    folder.rmdir()


def discard(folder: Path, note: Callable[[str], None]) -> bool:
    """Remove ``folder`` when zoobench made it (True; also when it is not there), else one note (False)."""
    if not folder.exists() and not folder.is_symlink():
        return True
    try:
        remove_own(folder)
        return True
    except (NotACache, OSError) as exc:
        note(str(exc) if isinstance(exc, NotACache) else f"cannot remove {folder}: {exc.strerror or exc}")
        return False


def still_there(folder: Path) -> bool:
    """Cheap check before each container: a cache deleted mid-bench is not mounted."""
    return (folder / INDEX_FILE).is_file() and (folder / PIXELS_FILE).is_file()


# ---------------------------------------------------------------- grouping jobs

@dataclass
class Group:
    """Jobs that can share one cache; built with the image of the first job."""

    config: PixelConfig
    pillow: str
    data_digest: str
    limit: int | None
    n_images: int
    tag: str
    jobs: list["Job"] = field(default_factory=list)

    @property
    def key(self) -> str:
        return cache_key(self.config, self.pillow, self.data_digest, self.limit)

    @property
    def needed_bytes(self) -> int:
        return expected_bytes(self.n_images, self.config)


def group_jobs(jobs: list["Job"], pillow_of: Callable[[str], str], digests: dict[int | None, str],
               counts: dict[int | None, int], min_jobs: int = 2) -> list[Group]:
    """Groups of at least ``min_jobs`` jobs sharing pixel config, Pillow version and image set."""
    groups: dict[tuple[Any, ...], Group] = {}
    for job in jobs:
        if job.pixels is None:
            continue
        pillow = pillow_of(job.tag)
        key = (job.pixels, pillow, digests[job.limit], job.limit)
        if key not in groups:
            groups[key] = Group(job.pixels, pillow, digests[job.limit], job.limit, counts[job.limit], job.tag)
        groups[key].jobs.append(job)
    return [g for g in groups.values() if len(g.jobs) >= min_jobs]


def mount_conflict(binds: list[Bind]) -> str | None:
    """The data bind that would collide with the cache's mount point, if any."""
    for b in binds:
        if b.target == MOUNT or b.target.startswith(MOUNT + "/") or MOUNT.startswith(b.target.rstrip("/") + "/"):
            return b.target
    return None


# ---------------------------------------------------------------- building

Builder = Callable[[Group, Path], "str | None"]  # fills the partial folder; None = ok, else the reason


@contextlib.contextmanager
def build_lock(root: Path, waiting: Callable[[], None]) -> Iterator[None]:
    """One build at a time per cache folder, across benches (an flock that dies with its holder)."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure(group: Group, root: Path, builder: Builder, note: Callable[[str], None],
           say: Callable[[str], None]) -> Path | None:
    """The folder of a valid cache for ``group`` (reused or built now), or None after one note."""
    final = root / group.key
    if problem(final, group.config, group.pillow, group.data_digest, group.n_images) is None:
        say(f"pixel cache {group.config.describe()}: reusing {group.key} ({group.n_images} images, "
            f"{len(group.jobs)} models)")
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        with build_lock(root, lambda: say(f"pixel cache {group.key}: waiting for another bench building one")):
            if problem(final, group.config, group.pillow, group.data_digest, group.n_images) is None:
                say(f"pixel cache {group.config.describe()}: reusing {group.key} (built by another bench)")
                return final
            why = space_note(group.config, group.needed_bytes, shutil.disk_usage(root).free)
            if why:
                note(why)
                return None
            return _build(group, root, builder, note, say)
    except OSError as exc:
        note(f"no pixel cache for {group.config.describe()}: {exc.strerror or exc} ({exc.filename or root}); "
             "the models decode the images themselves")
        return None


def _build(group: Group, root: Path, builder: Builder, note: Callable[[str], None],
           say: Callable[[str], None]) -> Path | None:
    """Build into ``<key>.partial``, check it like any cache, rename it into place; no partial is left.
    A folder in the way that zoobench did not make is left alone, and then there is no cache."""
    final, partial = root / group.key, root / (group.key + PARTIAL_SUFFIX)
    why_not = f"no pixel cache for {group.config.describe()}: the models decode the images themselves"
    if not discard(partial, lambda m: note(f"{m}; {why_not}")):
        return None
    say(f"pixel cache {group.config.describe()}: building {group.key} ({group.n_images} images, "
        f"{size_text(group.needed_bytes)}) for {len(group.jobs)} models")
    try:
        partial.mkdir(parents=True)
        write_marker(partial, group.key, group.limit)
        try:
            reason = builder(group, partial)
        except Exception as exc:  # noqa: BLE001 - a failed build is a note, never a failed bench
            first = first_line(exc)
            reason = f"{type(exc).__name__}: {first}"
        if reason is None:
            wrong = content_problem(partial, group.config, group.pillow, group.data_digest, group.n_images)
            reason = f"it wrote an unusable cache: {wrong}" if wrong else None
        if reason is not None:
            note(f"no pixel cache for {group.config.describe()}: the build failed ({reason}); "
                 "the models decode the images themselves")
            return None
        if not discard(final, lambda m: note(f"{m}; {why_not}")):  # an invalid cache under the same key
            return None
        partial.rename(final)
        return final
    finally:
        if partial.is_dir() and not partial.is_symlink():
            discard(partial, note)
