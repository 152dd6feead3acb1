"""Images as files on a shared folder (``docker save`` / ``docker load``), for cluster nodes that
cannot build or pull them: ``zoobench images export --to DIR`` once, then every node loads what it
lacks (``zoobench images load DIR``, or a Slurm task given ``--images-dir DIR``). A loaded image
keeps its image id, so runs on every node match the same finished-run records."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from docker.errors import APIError, ImageNotFound

from .images import image_exists, tag_file_stem

SUFFIX = ".tar"
CHUNK = 8 << 20


class ImageStoreError(RuntimeError):
    """An image cannot be exported or loaded (the message is one line naming the file and the fix)."""


def tar_name(tag: str) -> str:
    """``zoobench/pytorch:cpu-0123abcd`` -> ``zoobench_pytorch_cpu-0123abcd.tar`` (tags are content hashes)."""
    return tag_file_stem(tag) + SUFFIX


def export(client: Any, tags: list[str], folder: Path, say: Callable[[str], None] = lambda m: None) -> list[Path]:
    """Save each image into ``folder`` (written to a temp name, then renamed: never half a tar);
    an image whose tar is already there is skipped. Returns the tar paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for tag in tags:
        target = folder / tar_name(tag)
        paths.append(target)
        if target.is_file() and target.stat().st_size > 0:
            say(f"{tag}: {target} already there")
            continue
        try:
            image = client.images.get(tag)
        except ImageNotFound:
            raise ImageStoreError(f"image {tag} is not built here; run `zoobench images build` first") from None
        partial = target.with_name(f".{target.name}.partial")
        try:
            with open(partial, "wb") as f:
                for chunk in image.save(chunk_size=CHUNK, named=True):
                    f.write(chunk)
            os.replace(partial, target)
        except OSError as exc:
            raise ImageStoreError(f"cannot write {target}: {exc.strerror or exc}; free space or pick another --to") from None
        finally:
            partial.unlink(missing_ok=True)
        say(f"{tag}: saved {target} ({target.stat().st_size / 1e6:.0f} MB)")
    return paths


def load(client: Any, path: Path) -> list[str]:
    """``docker load`` one tar; returns the tags it brought."""
    try:
        with open(path, "rb") as f:
            loaded = client.images.load(f)
    except OSError as exc:
        raise ImageStoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    except APIError as exc:
        raise ImageStoreError(f"{path} is not a loadable image ({exc.explanation or exc}); export it again") from None
    return [t for image in loaded for t in image.tags]


def load_missing(client: Any, tags: list[str], folder: Path, strict: bool = True) -> list[str]:
    """Load from ``folder`` each of ``tags`` this engine lacks; returns those loaded. ``strict``: an
    image that is neither here nor in ``folder`` is an error (else it is left to be built)."""
    loaded = []
    for tag in tags:
        if image_exists(client, tag):
            continue
        path = folder / tar_name(tag)
        if not path.is_file():
            if not strict:
                continue
            raise ImageStoreError(f"image {tag} is not on this node and {path} does not exist; run "
                                  f"`zoobench images export --to {folder}` where the image is built")
        load(client, path)
        loaded.append(tag)
    return loaded


def load_all(client: Any, folder: Path) -> list[str]:
    """Load every exported image of ``folder``; returns the tags loaded (already present ones too)."""
    tars = sorted(folder.glob(f"*{SUFFIX}"))
    if not tars:
        raise ImageStoreError(f"{folder} holds no image tar; fill it with `zoobench images export --to {folder}`")
    return [t for path in tars for t in load(client, path)]
