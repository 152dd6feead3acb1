"""Pretrained weights carried by file to a host with no network (an air-gapped cluster).

``plan_export`` says which files of the weights cache a profile's jobs read (and which are not
there); ``write_export`` copies them into a new folder with ``weights-manifest.json`` (each file's
path, size and sha256, and which image/model/weights choice needs it), made beside it and renamed
into place, so a failed export leaves nothing. ``import_weights`` reads that manifest, checks every
file, then adds the missing ones to the weights cache all-or-nothing: it never replaces a file that
is already there with different content. The CLI (``zoobench weights export/import``) only prints.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zoobench_contract.dataset import file_sha256

from ..errors import WeightsError, first_line
from .plan import Job

MANIFEST_FILE = "weights-manifest.json"
FORMAT = "zoobench-weights/1"
CHUNK = 1 << 20
FIX_EXPORT = "copy the export folder again, or export it again with `zoobench weights export`"


class Need(BaseModel):
    """One job that reads a file: the image, the model and its ``--weights`` choice."""

    model_config = ConfigDict(extra="forbid")
    image: str
    model: str
    weights: str


class WeightsFile(BaseModel):
    """One exported file: its path under the weights cache (POSIX, relative), size and sha256."""

    model_config = ConfigDict(extra="forbid")
    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    needed_by: list[Need]

    @field_validator("path")
    @classmethod
    def relative(cls, value: str) -> str:
        parts = PurePosixPath(value).parts
        if (not parts or value.startswith("/") or "\\" in value or any(p in ("..", ".") for p in parts)
                or value != PurePosixPath(value).as_posix() or value == MANIFEST_FILE):
            raise ValueError(f"{value!r} is not a relative path inside the weights cache")
        return value


class WeightsManifest(BaseModel):
    """``weights-manifest.json``: what ``zoobench weights export`` wrote, for ``import`` to check."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["zoobench-weights/1"]
    profile: str
    created: str
    files: list[WeightsFile]

    @model_validator(mode="after")
    def unique(self) -> "WeightsManifest":
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("a file is listed twice")
        return self


@dataclass
class ExportPlan:
    """``files``: path under the cache -> the jobs that read it; ``missing``: one line per file (or
    job) that cannot be exported; ``nothing``: why other jobs need no file -> IMAGE/MODEL names."""

    files: dict[str, list[Need]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    nothing: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ImportReport:
    """What ``import_weights`` did, as paths under the weights cache."""

    added: list[WeightsFile] = field(default_factory=list)
    had: list[WeightsFile] = field(default_factory=list)


def plan_export(jobs: list[Job], cache: Path, listing: Callable[[str], dict[str, dict[str, Any]]],
                fetch_hint: str) -> ExportPlan:
    """The files of ``cache`` the jobs read; ``listing(image)`` is the image's `predict list` (to tell
    bundled weights from a file the image does not name); ``fetch_hint`` is the command to suggest."""
    plan = ExportPlan()
    for job in jobs:
        name = f"{job.image}/{job.model}"
        if not job.weights.startswith("imagenet"):
            plan.nothing.setdefault(f"{job.weights} weights", []).append(name)
        elif job.weights_file is not None:
            plan.files.setdefault(job.weights_file, []).append(Need(image=job.image, model=job.model,
                                                                    weights=job.weights))
            if not (cache / job.weights_file).is_file() and len(plan.files[job.weights_file]) == 1:
                plan.missing.append(f"{name}: {cache / job.weights_file} is not in the weights cache; run "
                                    f"`{fetch_hint} --model {name}` first")
        elif listing(job.image).get(job.model, {}).get("weights_bundled"):
            plan.nothing.setdefault("bundled in the image", []).append(name)
        else:
            plan.missing.append(f"{name}: the image's `predict list` names no weights file for --weights "
                                f"{job.weights}, so it cannot be exported; rebuild the image")
    return plan


def copy_hashed(src: Path, dst: Path) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (a new file, mode 0644, synced); its size and sha256 as read."""
    digest, size = hashlib.sha256(), 0
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    dst.chmod(0o644)
    return size, digest.hexdigest()


def write_export(plan: ExportPlan, cache: Path, dest: Path, profile: str) -> WeightsManifest:
    """``plan.files`` and the manifest into the new folder ``dest`` (absent or empty), all or nothing."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise WeightsError(f"--to {dest}: exists and is not an empty folder; give a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        files = []
        for rel, needs in sorted(plan.files.items()):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            size, sha = copy_hashed(cache / rel, work / rel)
            files.append(WeightsFile(path=rel, size=size, sha256=sha, needed_by=needs))
        manifest = WeightsManifest(format=FORMAT, profile=profile, files=files,
                                   created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        (work / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        for folder in [work, *(p for p in work.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
        if dest.exists():
            dest.rmdir()
        work.rename(dest)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise WeightsError(f"--to {dest}: could not write the export ({exc.strerror or first_line(exc)}); "
                           "nothing was exported") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def read_manifest(src: Path) -> WeightsManifest:
    """``src/weights-manifest.json``, validated; one line when it is missing or not one."""
    path = src / MANIFEST_FILE
    if not path.is_file():
        raise WeightsError(f"{src}: no {MANIFEST_FILE} in it; give the folder `zoobench weights export --to` made")
    try:
        return WeightsManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "the file"
        raise WeightsError(f"{path}: not a zoobench weights manifest ({where}: {err['msg']}); {FIX_EXPORT}") from None
    except OSError as exc:
        raise WeightsError(f"{path}: unreadable ({exc.strerror}); {FIX_EXPORT}") from None


def check_source(src: Path, entry: WeightsFile, hashed: bool = True) -> None:
    """The exported file as the manifest describes it (size, then sha256 unless ``hashed`` is False),
    or one line naming it."""
    path = src / entry.path
    if not path.is_file():
        raise WeightsError(f"{path}: listed in {MANIFEST_FILE} but missing; {FIX_EXPORT}")
    size = path.stat().st_size
    if size != entry.size:
        raise WeightsError(f"{path}: {size} bytes, {MANIFEST_FILE} says {entry.size}; {FIX_EXPORT}")
    if hashed:
        check_sha256(path, file_sha256(path), entry)


def check_sha256(path: Path, found: str, entry: WeightsFile) -> None:
    if found != entry.sha256:
        raise WeightsError(f"{path}: sha256 {found[:16]}... is not the {entry.sha256[:16]}... of {MANIFEST_FILE} "
                           f"(damaged or changed); {FIX_EXPORT}")


def import_weights(src: Path, cache: Path) -> ImportReport:
    """Check every file of the export ``src``, then add those ``cache`` lacks; a file the cache holds
    with other content is refused (one line), and on any failure the cache is left as it was."""
    manifest = read_manifest(src)
    report = ImportReport()
    for entry in manifest.files:
        target = cache / entry.path
        if target.is_symlink() or target.exists():
            if not target.is_file() or file_sha256(target) != entry.sha256:
                raise WeightsError(f"{target}: already in the weights cache with other content than {src / entry.path}; "
                                   "move it aside to import this one (or keep it and do not import)")
            report.had.append(entry)
        else:
            report.added.append(entry)
    had = {entry.path for entry in report.had}
    for entry in manifest.files:  # the sha256 of a file to add is checked as it is copied
        check_source(src, entry, hashed=entry.path in had)
    _Filling(cache).fill(src, report.added)
    return report


class _Filling:
    """Files added to the cache all or nothing: each copied to a temporary name beside its target and
    checked, then all linked into place (never over an existing file); undone on any failure."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.made_dirs: list[Path] = []
        self.staged: list[tuple[Path, Path]] = []
        self.placed: list[Path] = []

    def fill(self, src: Path, entries: Iterable[WeightsFile]) -> None:
        try:
            for entry in entries:
                self._stage(src, entry)
            for temp, target in self.staged:
                os.link(temp, target)  # FileExistsError rather than replacing a file that appeared meanwhile
                self.placed.append(target)
        except BaseException as exc:
            self._undo()
            if isinstance(exc, OSError):
                raise WeightsError(f"{self.cache}: could not add the weights ({exc.strerror or first_line(exc)}"
                                   f"{f': {exc.filename}' if exc.filename else ''}); the weights cache is as it was") from None
            raise
        finally:
            for temp, _ in self.staged:
                temp.unlink(missing_ok=True)

    def _stage(self, src: Path, entry: WeightsFile) -> None:
        target = self.cache / entry.path
        self._mkdirs(target.parent)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        os.close(fd)
        temp = Path(name)
        temp.unlink()
        self.staged.append((temp, target))
        size, sha = copy_hashed(src / entry.path, temp)
        check_sha256(src / entry.path, sha, entry)
        if size != entry.size:
            raise WeightsError(f"{src / entry.path}: changed while it was imported; {FIX_EXPORT}")

    def _mkdirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir()
            self.made_dirs.append(d)

    def _undo(self) -> None:
        for target in self.placed:
            target.unlink(missing_ok=True)
        for temp, _ in self.staged:
            temp.unlink(missing_ok=True)
        for d in reversed(self.made_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
