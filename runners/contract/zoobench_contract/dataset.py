"""Finding, reading and fingerprinting the images of a validation folder.

Only regular files (or symlinks to them) are images: a FIFO, socket or device node named like an
image is refused in one line, and no read here can block on one. Every failure is a
:class:`DataError` whose message is one line naming the file.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
GENERATED_FILE = "zoobench-generated.json"  # at the top of a set `zoobench data corrupt` made: how it was made
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG
_OBJECT_REPR = re.compile(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>")
_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


class DataError(ValueError):
    """The data folder or one of its files cannot be used; the message says which and why."""


def list_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of every ``.jpg/.jpeg/.png`` below ``root`` (any depth, any case),
    in sorted order. Hidden files and folders are skipped. Raises :class:`DataError` naming the
    first entry with an image name that is not a regular file (a FIFO would block every reader)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist; pass an existing folder with --data")
    if not root.is_dir():
        raise DataError(f"{root}: is not a folder; pass the folder that holds the images with --data")
    found: list[str] = []
    special: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                relpath = Path(dirpath, name).relative_to(root).as_posix()
                kind = _special_kind(Path(dirpath, name))
                if kind is None:
                    found.append(relpath)
                else:
                    special.append((relpath, kind))
    found.sort()
    if special:
        special.sort()
        more = f" ({len(special) - 1} more such entries)" if len(special) > 1 else ""
        raise _not_regular(root / special[0][0], special[0][1], more)
    if not found:
        raise DataError(
            f"{root}: no images found (.jpg/.jpeg/.png, any depth); "
            "point --data at the validation folder (zoobench data sample makes a small one)"
        )
    return found


def _special_kind(path: Path, st: os.stat_result | None = None) -> str | None:
    """What ``path`` is when it is not a regular file ("a FIFO", ...); None for a regular file or
    for a path that cannot be stat'ed (a dangling link: reading it reports that)."""
    try:
        mode = (st or os.stat(path)).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else next((what for test, what in _SPECIAL if test(mode)), "a special file")


def _not_regular(path: str | Path, kind: str, more: str = "") -> DataError:
    return DataError(f"{path}: is {kind}, not a regular file{more}; only regular files are images, remove it")


def read_regular(path: str | Path) -> bytes:
    """The bytes of ``path``, never blocking; :class:`DataError` (one line) unless it is a readable
    regular file. ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            kind = _special_kind(Path(path), os.fstat(fd))
            if kind is not None:
                raise _not_regular(path, kind)
            os.set_blocking(fd, True)
            return f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or type(exc).__name__}); check permissions") from None


def _unreadable(exc: Exception, data: bytes) -> str:
    """Why Pillow refused ``data``, as one sentence without object reprs."""
    if isinstance(exc, UnidentifiedImageError):
        if data.startswith(_SIGNATURES):
            return "not a readable image (it starts like a JPEG or PNG but its header is damaged)"
        return f"not a readable image (its first bytes {data[:8]!r} are neither JPEG nor PNG)"
    text = _OBJECT_REPR.sub("", str(exc)).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return f"not a readable image ({reason})"


def _decode(data: bytes, where: str | Path, full: bool) -> Image.Image:
    """Open ``data`` with Pillow: fully decoded (``full``) or only verified; :class:`DataError` otherwise."""
    if not data:
        raise DataError(f"{where}: empty file (0 bytes); replace or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if full:
                img.load()
            else:
                img.verify()
    except Exception as exc:  # Pillow raises many types for bad files
        raise DataError(f"{where}: {_unreadable(exc, data)}; replace or remove it") from None
    return img


def check_image_bytes(data: bytes, where: str | Path) -> None:
    """Raise :class:`DataError` unless Pillow recognises ``data`` as an image (header and
    structure only, no full decode: cheap enough for every file of a 50,000-image copy)."""
    _decode(data, where, full=False).close()


@dataclass(frozen=True)
class LoadedImage:
    """One decoded file and the sha256 of its bytes."""

    path: str
    image: Image.Image
    sha256: str


def read_image(root: str | Path, relpath: str) -> LoadedImage:
    """Read and fully decode one regular file; raise :class:`DataError` with a one-line reason."""
    path = Path(root, relpath)
    data = read_regular(path)
    return LoadedImage(relpath, _decode(data, path, full=True), hashlib.sha256(data).hexdigest())


def set_digest(entries: Iterable[tuple[str, str]]) -> str:
    """Content hash of an image set: sha256 over sorted ``(relative path, file sha256)`` pairs.

    Two result folders are comparable only when this value is equal.
    """
    h = hashlib.sha256()
    for relpath, digest in sorted(entries):
        h.update(f"{relpath}\t{digest}\n".encode())
    return "sha256:" + h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_files(root: str | Path, relpaths: list[str], workers: int = 4) -> str:
    """:func:`set_digest` of files on disk, without decoding them (what ``predict run`` records)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(lambda rp: file_sha256(Path(root, rp)), relpaths))
    return set_digest(zip(relpaths, digests))
