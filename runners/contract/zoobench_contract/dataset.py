"""Finding, reading and fingerprinting the images of a validation folder."""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DataError(ValueError):
    """The data folder or one of its files cannot be used; the message says which and why."""


def list_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of every ``.jpg/.jpeg/.png`` below ``root`` (any depth, any case),
    in sorted order. Hidden files and folders are skipped."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist; pass an existing folder with --data")
    if not root.is_dir():
        raise DataError(f"{root}: is not a folder; pass the folder that holds the images with --data")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    found.sort()
    if not found:
        raise DataError(
            f"{root}: no images found (.jpg/.jpeg/.png, any depth); "
            "point --data at the validation folder (zoobench data sample makes a small one)"
        )
    return found


@dataclass(frozen=True)
class LoadedImage:
    """One decoded file and the sha256 of its bytes."""

    path: str
    image: Image.Image
    sha256: str


def read_image(root: str | Path, relpath: str) -> LoadedImage:
    """Read and fully decode one file; raise :class:`DataError` with a one-line reason."""
    full = Path(root, relpath)
    try:
        data = full.read_bytes()
    except OSError as exc:
        raise DataError(f"{full}: cannot read ({exc.strerror or exc}); check permissions") from None
    if not data:
        raise DataError(f"{full}: empty file (0 bytes); replace or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except Exception as exc:  # Pillow raises many types for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{full}: not a readable image ({reason}); replace or remove it") from None
    return LoadedImage(relpath, img, hashlib.sha256(data).hexdigest())


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
