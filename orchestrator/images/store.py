"""Images as files on a shared folder (``docker save`` / ``docker load``), for cluster nodes that
cannot build or pull them: ``zoobench images export --to DIR`` once, then every node loads what it
lacks (``zoobench images load DIR``, or a Slurm task given ``--images-dir DIR``). A loaded image
keeps its image id, so runs on every node match the same finished-run records.

A tar is trusted by what it holds, never by its name: its ``manifest.json`` (``docker save``) and/or
OCI ``index.json`` are read (not its layers) before it is skipped by an export or loaded, and a tar
holding another image, or none, is exported again or refused in one line naming the file; after
``docker load`` the loaded image's id must be the one the tar's manifest names."""
from __future__ import annotations

import contextlib
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from docker.errors import DockerException, ImageNotFound
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..errors import ImageStoreError, first_line
from .build import image_exists, tag_file_stem

SUFFIX = ".tar"
CHUNK = 8 << 20
MAX_META = 16 << 20  # a manifest.json / index.json larger than this is no docker save's
NAME_ANNOTATION = "io.containerd.image.name"  # an OCI index entry's image name (docker.io/NAME:TAG)
_DIGEST = re.compile(r"([0-9a-f]{64})(\.json)?$")  # Config: "<hex>.json" or "blobs/sha256/<hex>"


class _SavedImage(BaseModel):
    """One image of ``docker save``'s manifest.json."""

    Config: str
    RepoTags: list[str] | None = None


class _IndexEntry(BaseModel):
    digest: str
    annotations: dict[str, str] = {}


class _Index(BaseModel):
    """An OCI image layout's index.json (newer Docker writes it beside manifest.json)."""

    manifests: list[_IndexEntry]


_SAVED = TypeAdapter(list[_SavedImage])


@dataclass(frozen=True)
class TarImage:
    """What an image tar holds: its tags, and the ids a loaded copy may have (the config digest; with
    an OCI index also the manifest digests, the id under Docker's containerd image store)."""

    tags: tuple[str, ...]
    ids: frozenset[str]

    def __str__(self) -> str:
        return ", ".join(self.tags) or "no tagged image"


def tar_name(tag: str) -> str:
    """``zoobench/pytorch:cpu-0123abcd`` -> ``zoobench_pytorch_cpu-0123abcd.tar`` (tags are content hashes)."""
    return tag_file_stem(tag) + SUFFIX


def _why(exc: BaseException) -> str:
    return first_line(getattr(exc, "explanation", None) or exc, type(exc).__name__)[:200]


def _not_an_image(path: Path, why: str) -> ImageStoreError:
    return ImageStoreError(f"{path} is not an image tar ({why}); delete it and export the image again with "
                           f"`zoobench images export --to {path.parent}`")


def _meta_files(path: Path) -> dict[str, bytes]:
    """manifest.json and index.json of a tar, read without extracting anything else."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in ("manifest.json", "index.json") and member.isfile() and member.size <= MAX_META:
                    found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except tarfile.TarError:
        raise _not_an_image(path, "not a readable tar file") from None
    except OSError as exc:
        raise ImageStoreError(f"cannot read {path}: {exc.strerror or exc}; check the file and its folder") from None
    return found


def read_tar(path: Path) -> TarImage:
    """The tags and ids an image tar (``docker save``'s manifest.json, an OCI index.json) says it holds."""
    meta = _meta_files(path)
    tags: list[str] = []
    ids: set[str] = set()
    try:
        for saved in _SAVED.validate_json(meta["manifest.json"]) if "manifest.json" in meta else []:
            tags += saved.RepoTags or []
            digest = _DIGEST.search(saved.Config)
            if digest:
                ids.add(f"sha256:{digest.group(1)}")
        for entry in _Index.model_validate_json(meta["index.json"]).manifests if "index.json" in meta else []:
            ids.add(entry.digest)
            if NAME_ANNOTATION in entry.annotations:
                tags.append(entry.annotations[NAME_ANNOTATION].removeprefix("docker.io/"))
    except ValidationError as exc:
        raise _not_an_image(path, f"its manifest is not docker save's: {exc.errors()[0]['msg']}") from None
    if not ids:
        raise _not_an_image(path, "no manifest.json or index.json naming an image")
    return TarImage(tuple(dict.fromkeys(tags)), frozenset(ids))


def check_folder(folder: Path) -> None:
    """``folder`` exists (created if need be) and is writable; else one line naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ImageStoreError(f"--to {folder} is a file, not a folder; pass a folder path (it is created if "
                              "missing)") from None
    except OSError as exc:
        raise ImageStoreError(f"--to {folder}: cannot create it ({exc.strerror or exc}); pass a writable folder "
                              "on the shared filesystem") from None
    if not os.access(folder, os.W_OK):
        raise ImageStoreError(f"--to {folder} is not writable (read-only); make it writable or pass another folder")


def _built(client: Any, tag: str) -> Any | None:
    try:
        return client.images.get(tag)
    except ImageNotFound:
        return None


def _holds(path: Path, tag: str, image: Any | None) -> bool:
    """Whether ``path`` is a tar of ``tag`` (of this very image, by id, when it is built here)."""
    if not path.is_file():
        return False
    try:
        held = read_tar(path)
    except ImageStoreError:
        return False
    return tag in held.tags and (image is None or image.id in held.ids)


def _save(image: Any, tag: str, target: Path) -> None:
    """``docker save`` to a temp name beside ``target``, then renamed over it: never half a tar."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "wb") as f:
            for chunk in image.save(chunk_size=CHUNK, named=True):
                f.write(chunk)
        os.replace(partial, target)
    except OSError as exc:
        raise ImageStoreError(f"--to {target.parent}: cannot write {target.name} ({exc.strerror or exc}); free "
                              "space, make the folder writable or pass another folder") from None
    except DockerException as exc:
        raise ImageStoreError(f"docker save of {tag} failed ({_why(exc)}); check the engine and run again") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def export(client: Any, tags: list[str], folder: Path, say: Callable[[str], None] = lambda m: None) -> list[Path]:
    """Save each image into ``folder``; a tar already there that holds the image (its tag, and its id
    when the image is built here) is skipped, anything else at that name is replaced. Returns the paths."""
    check_folder(folder)
    paths = []
    for tag in tags:
        target = folder / tar_name(tag)
        paths.append(target)
        image = _built(client, tag)
        if _holds(target, tag, image):
            say(f"{tag}: {target} already there")
            continue
        if image is None:
            raise ImageStoreError(f"image {tag} is not built here; run `zoobench images build` first")
        if target.exists():
            say(f"{tag}: {target} does not hold this image; exporting it again")
        _save(image, tag, target)
        say(f"{tag}: saved {target} ({target.stat().st_size / 1e6:.0f} MB)")
    return paths


def _expected_tag(path: Path, held: TarImage, tag: str | None) -> str:
    """``tag``, or (None) the tag the file is named for; the tar must hold it."""
    named = tag or next((t for t in held.tags if tar_name(t) == path.name), None)
    if named is None or named not in held.tags:
        wanted = f"{named} (the image its name is for)" if named else "the image its file name is for"
        raise ImageStoreError(f"{path} holds {held}, not {wanted}; delete it and export the image again with "
                              f"`zoobench images export --to {path.parent}` where it is built")
    return named


def load(client: Any, path: Path, tag: str | None = None) -> list[str]:
    """``docker load`` one tar once it is known to hold ``tag`` (default: the image its file name is
    for, see :func:`tar_name`); the loaded image must have the id the tar's manifest names.
    Returns the tags it brought."""
    held = read_tar(path)
    expected = _expected_tag(path, held, tag)
    try:
        with open(path, "rb") as f:
            loaded = client.images.load(f)
    except OSError as exc:
        raise ImageStoreError(f"cannot read {path}: {exc.strerror or exc}; check the file and its folder") from None
    except DockerException as exc:  # ImageLoadError, APIError...
        raise ImageStoreError(f"{path}: docker load failed ({_why(exc)}); delete it and export the image again") \
            from None
    try:  # looked up by name: Podman reports what it loaded as localhost/NAME, the engine resolves NAME
        image = client.images.get(expected)
    except DockerException:
        image = None
    if image is None or image.id not in held.ids:
        got = f"image {image.id[:19]}..." if image is not None else "no image tagged so"
        raise ImageStoreError(f"{path}: docker load gave {got}, not {expected} with the id its manifest names; "
                              "delete it and export the image again")
    return [t for i in loaded for t in i.tags]


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
        load(client, path, tag)
        loaded.append(tag)
    return loaded


def load_all(client: Any, folder: Path) -> list[str]:
    """Load every exported image of ``folder`` (each tar must hold the image its name is for); returns
    the tags loaded (already present ones too)."""
    if not folder.is_dir():
        raise ImageStoreError(f"{folder} is not a folder; pass the folder `zoobench images export --to` wrote")
    tars = sorted(folder.glob(f"*{SUFFIX}"))
    if not tars:
        raise ImageStoreError(f"{folder} holds no image tar; fill it with `zoobench images export --to {folder}`")
    return [t for path in tars for t in load(client, path)]
