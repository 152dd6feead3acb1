"""Inspect a validation folder before a benchmark: what it is, and every file that may hurt it.

Each image is read and fully decoded with the runners' own reader
(:func:`zoobench_contract.dataset.read_image`), so a file that fails here fails in
``predict run`` too; on a root host a file the containers' user cannot read is unreadable too
(:mod:`orchestrator.datascan`). Errors break a benchmark (unreadable files, images filed under the
wrong or a non-ImageNet class); warnings are files every runner handles the same way
(``to_rgb``: CMYK, greyscale, palette, alpha, 16-bit) or that are worth knowing about
(duplicates, a PNG named ``.JPEG``). The content hash is the one ``predict run`` records.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional

from zoobench_contract.dataset import DataError, list_images, read_image, read_regular, set_digest
from zoobench_contract.imagenet import class_names, is_wnid, wnid_to_index

from ..bench.datascan import ReaderAccess, reader_access, stat_or_none
from .ground_truth import N_VAL, val_ground_truth

ERROR, WARNING = "error", "warning"
# kind -> (severity, what it means); the order is the order of summary().
KINDS: dict[str, tuple[str, str]] = {
    "unreadable": (ERROR, "cannot be read or decoded (predict run stops on it)"),
    "not_wnid_folder": (ERROR, "no folder on the path is an ImageNet wnid (no label to score against)"),
    "wrong_folder": (ERROR, "ImageNet val file filed under the wrong class"),
    "no_class_folder": (WARNING, "image not inside a class folder (no label unless rank gets --labels)"),
    "duplicate": (WARNING, "same bytes as another file"),
    "format_mismatch": (WARNING, "file content does not match its suffix"),
    "cmyk": (WARNING, "CMYK colour (converted to RGB)"),
    "greyscale": (WARNING, "greyscale (converted to RGB)"),
    "palette": (WARNING, "palette colours (converted to RGB)"),
    "alpha": (WARNING, "alpha channel (composited over white)"),
    "16bit": (WARNING, "16 bits per sample (scaled to 8 bits)"),
}
FULL, SUBSET, OTHER = "full ImageNet val", "ImageNet val subset", "other"
_GREY = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_PALETTE = {"P", "PA"}
_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
_FORMAT_BY_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Issue:
    """One problem: ``path`` is relative to the checked folder (a folder name for folder issues)."""

    kind: str
    path: str
    detail: str = ""

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]


@dataclass
class CheckReport:
    root: str
    n_images: int
    n_classes: int  # ImageNet classes that hold images (by folder name, as rank labels them)
    kind: str  # FULL, SUBSET or OTHER
    digest: Optional[str]  # set_digest over (relpath, sha256); None when a file could not be read at all
    issues: list[Issue] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)  # Pillow mode -> images
    seconds: float = 0.0

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        """False when a benchmark on this folder would fail or score against wrong labels."""
        return not self.errors

    def by_kind(self, kind: str) -> list[Issue]:
        return [i for i in self.issues if i.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["issues"] = [{**asdict(i), "severity": i.severity} for i in self.issues]
        d["ok"] = self.ok
        d["n_errors"], d["n_warnings"] = len(self.errors), len(self.warnings)
        return d

    def summary(self, limit: Optional[int] = 50) -> str:
        """Readable report; at most ``limit`` files per problem kind (None: all)."""
        modes = ", ".join(f"{m} {n}" for m, n in sorted(self.modes.items(), key=lambda kv: -kv[1]))
        lines = [f"{self.root}: {self.n_images} images in {self.n_classes} ImageNet classes ({self.kind})",
                 f"  content hash {self.digest or 'unavailable (unreadable files)'}",
                 f"  colour modes: {modes or 'none decoded'}  ({self.seconds:.1f}s)"]
        for kind, (severity, meaning) in KINDS.items():
            found = self.by_kind(kind)
            if not found:
                continue
            lines.append(f"{severity}: {len(found)} {meaning}")
            shown = found if limit is None else found[:limit]
            lines += [f"  {i.path}" + (f": {i.detail}" if i.detail else "") for i in shown]
            if len(found) > len(shown):
                lines.append(f"  ... and {len(found) - len(shown)} more (all with --json)")
        verdict = "ok" if self.ok else "NOT usable for a benchmark until the errors are fixed"
        lines.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s): {verdict}")
        return "\n".join(lines)


@dataclass
class _FileInfo:
    relpath: str
    sha256: Optional[str]
    mode: Optional[str]
    issues: list[Issue]


def check(root: Path, workers: int = 2, progress: Optional[Callable[[int, int], None]] = None) -> CheckReport:
    """Decode every image below ``root`` and report the set; raises :class:`DataError` only when
    ``root`` is missing, holds no images, or holds a FIFO or other special file named like one
    (:func:`list_images`). ``progress(done, total)`` after each file."""
    t0 = time.perf_counter()
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass the validation folder to check")
    relpaths = list_images(root)
    access = reader_access(root)
    infos: list[_FileInfo] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for info in pool.map(lambda rp: _inspect(root, rp, access), relpaths):
            infos.append(info)
            if progress:
                progress(len(infos), len(relpaths))
    issues = [i for info in infos for i in info.issues]
    issues += _structure_issues(relpaths)
    issues += _duplicate_issues(infos)
    order = list(KINDS)
    issues.sort(key=lambda i: (order.index(i.kind), i.path))
    digest = set_digest((i.relpath, i.sha256) for i in infos) if all(i.sha256 for i in infos) else None
    return CheckReport(
        root=str(root), n_images=len(relpaths), n_classes=len({w for w in map(folder_label, relpaths) if w}),
        kind=_classify(relpaths),
        digest=digest, issues=issues, modes=dict(Counter(i.mode for i in infos if i.mode)),
        seconds=time.perf_counter() - t0,
    )


def _inspect(root: Path, relpath: str, access: Optional[ReaderAccess] = None) -> _FileInfo:
    """Never raises: a bad file, or one the containers' user cannot read, becomes an ``unreadable`` issue."""
    denied = access.problem(relpath, stat_or_none(root / relpath)) if access else None
    if denied:
        return _FileInfo(relpath, _sha_or_none(root / relpath), None, [Issue("unreadable", relpath, denied)])
    try:
        loaded = read_image(root, relpath)
    except DataError as exc:
        return _FileInfo(relpath, _sha_or_none(root / relpath), None,
                         [Issue("unreadable", relpath, _reason(exc, root))])
    except Exception as exc:  # noqa: BLE001 - whatever a decoder raises, report it, never crash
        return _FileInfo(relpath, _sha_or_none(root / relpath), None,
                         [Issue("unreadable", relpath, f"{type(exc).__name__}: {exc}")])
    img = loaded.image
    mode, fmt = img.mode, img.format
    issues: list[Issue] = []
    if mode == "CMYK":
        issues.append(Issue("cmyk", relpath))
    if mode in _GREY:
        issues.append(Issue("greyscale", relpath, f"mode {mode}"))
    if mode in _PALETTE:
        issues.append(Issue("palette", relpath, f"mode {mode}"))
    if mode in _ALPHA or (mode in _PALETTE and "transparency" in img.info):
        issues.append(Issue("alpha", relpath, f"mode {mode}" + (" with transparency" if mode == "P" else "")))
    if mode.startswith("I;16") or mode == "I":
        issues.append(Issue("16bit", relpath, f"mode {mode}"))
    elif fmt == "PNG" and _png_bit_depth(root / relpath) == 16:
        issues.append(Issue("16bit", relpath, f"16-bit PNG, decoded as mode {mode}"))
    expected = _FORMAT_BY_SUFFIX.get(PurePosixPath(relpath).suffix.lower())
    if expected and fmt and fmt != expected:
        issues.append(Issue("format_mismatch", relpath, f"{fmt} data in a {PurePosixPath(relpath).suffix} file"))
    img.close()
    return _FileInfo(relpath, loaded.sha256, mode, issues)


def folder_label(relpath: str) -> Optional[str]:
    """The wnid a path is labelled with: its deepest folder named like an ImageNet class (as rank does)."""
    return next((part for part in reversed(PurePosixPath(relpath).parts[:-1]) if is_wnid(part)), None)


def _structure_issues(relpaths: list[str]) -> list[Issue]:
    """Images in no class folder or in a folder that is not a wnid, and val files under another class."""
    truth = val_ground_truth()
    names, index = class_names(), wnid_to_index()
    issues: list[Issue] = []
    unlabelled: Counter[str] = Counter()
    for rp in relpaths:
        path = PurePosixPath(rp)
        if len(path.parts) == 1:
            issues.append(Issue("no_class_folder", rp))
            continue
        label = folder_label(rp)
        if label is None:
            unlabelled[path.parent.as_posix() + "/"] += 1
            continue
        expected = truth.get(path.name)
        if expected and label != expected:
            issues.append(Issue("wrong_folder", rp, f"ground truth is {expected} ({names[index[expected]]}), "
                                                    f"not {label} ({names[index[label]]})"))
    issues += [Issue("not_wnid_folder", folder, f"{n} image(s)") for folder, n in sorted(unlabelled.items())]
    return issues


def _duplicate_issues(infos: list[_FileInfo]) -> list[Issue]:
    groups: dict[str, list[str]] = defaultdict(list)
    for info in infos:
        if info.sha256:
            groups[info.sha256].append(info.relpath)
    return [Issue("duplicate", other, f"same bytes as {paths[0]}")
            for paths in groups.values() if len(paths) > 1 for other in paths[1:]]


def _classify(relpaths: list[str]) -> str:
    truth = val_ground_truth()
    names = [PurePosixPath(p).name for p in relpaths]
    if not all(n in truth for n in names):
        return OTHER
    return FULL if len(names) == N_VAL and len(set(names)) == N_VAL else SUBSET


def _png_bit_depth(path: Path) -> Optional[int]:
    """Bit depth from a PNG header (Pillow reads 48/64-bit RGB(A) PNGs as 8-bit modes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    return head[24] if len(head) == 26 and head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" else None


def _sha_or_none(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(read_regular(path)).hexdigest()
    except DataError:
        return None


def _reason(exc: DataError, root: Path) -> str:
    """read_image's one-line message without the leading file path (the issue names the file)."""
    text = str(exc)
    head, sep, rest = text.partition(": ")
    return rest if sep and head.startswith(str(root)) else text
