"""Sort the ILSVRC-2012 validation images into ``OUT/<wnid>/<file>`` synset folders.

The source is the official ``ILSVRC2012_img_val.tar`` (read as a stream: no second copy of
the archive on disk) or a folder of the val JPEGs (copied, or hard-linked with ``link``).
Labels come from the shipped ground truth (:mod:`.ground_truth`), so nothing is downloaded.
Only files Pillow recognises as images are placed (the rest are listed in ``not_images``), and
nothing outside the source folder is read: a symlink whose target lies outside it is refused
(``refused_links``); links made with ``link`` point at the real file inside it. Every file is
written atomically (temp file + rename); running again skips identical files, so an
interrupted run resumes. :meth:`PrepareReport.problem` says, in one line, when the result is
not what was asked for (files left out, or fewer than all 50,000 images). The reading and placing
helpers (:func:`stream_tar`, :func:`walk_files`, :func:`place_bytes`, :func:`place_source`) are shared
with :mod:`.prepare_sets`, which prepares the other evaluation sets the same way.
"""
from __future__ import annotations

import filecmp
import os
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Optional, Protocol

from zoobench_contract.dataset import DataError, check_image_bytes, read_regular
from zoobench_contract.outputs import atomic_write

from .ground_truth import N_VAL, val_ground_truth

Progress = Callable[[int], None]
SHOW = 10  # names listed per problem in summary()


class Placing(Protocol):
    """What the placing helpers record into: :class:`PrepareReport`, and the report of any other set."""

    out: Path
    written: int
    linked: int
    symlinked: int
    skipped: int
    replaced: list[str]
    not_images: list[str]

    @property
    def refused_links(self) -> list[str]: ...

    def leave_out(self, names: list[str], name: str, reason: str) -> None: ...


@dataclass
class PrepareReport:
    """What one :func:`prepare` run did, and whether ``out`` now holds the full val set."""

    out: Path
    source: str
    written: int = 0  # files copied or extracted
    linked: int = 0  # hard links made
    symlinked: int = 0  # symbolic links made (hard link impossible, e.g. across filesystems)
    skipped: int = 0  # identical file already in place
    replaced: list[str] = field(default_factory=list)  # a different file was in place and was replaced
    unknown: list[str] = field(default_factory=list)  # source files that are not ImageNet val images
    repeated: list[str] = field(default_factory=list)  # val names met twice in the source (first kept)
    missing: list[str] = field(default_factory=list)  # val images absent from ``out`` after the run
    not_images: list[str] = field(default_factory=list)  # val names whose bytes are no image (left out)
    refused_links: list[str] = field(default_factory=list)  # symlinks out of the source folder (left out)
    reasons: dict[str, str] = field(default_factory=dict)  # one line per not_images / refused_links entry
    classes: int = 0  # synset folders holding at least one val image
    seconds: float = 0.0

    @property
    def placed(self) -> int:
        return self.written + self.linked + self.symlinked + self.skipped

    @property
    def present(self) -> int:
        return N_VAL - len(self.missing)

    @property
    def full(self) -> bool:
        """True when ``out`` holds all 1000 classes x 50 images."""
        return not self.missing

    def summary(self) -> str:
        lines = [f"prepared {self.out} from {self.source} in {self.seconds:.1f}s",
                 f"  written {self.written}, hard-linked {self.linked}, symlinked {self.symlinked}, "
                 f"already in place {self.skipped}"]
        if self.full:
            lines.append(f"  complete: 1000 classes x 50 images ({N_VAL} files)")
        else:
            lines.append(f"  incomplete: {self.present} of {N_VAL} val images in {self.classes} of 1000 classes; "
                         f"{len(self.missing)} missing{list_names(self.missing)}")
        for label, names in (("val names that are not images (left out)", self.not_images),
                             ("symlinks out of the source folder (refused)", self.refused_links),
                             ("not ImageNet val files (left out)", self.unknown),
                             ("val names met twice in the source (first kept)", self.repeated),
                             ("replaced a different file already in place", self.replaced)):
            if names:
                lines.append(f"  {len(names)} {label}{list_names(names)}")
        return "\n".join(lines)

    def problem(self, allow_incomplete: bool = False) -> Optional[str]:
        """One line when the run left val files out, or (unless ``allow_incomplete``) ``out`` is not
        the full val set; None when the result is what was asked for."""
        for names, what in ((self.refused_links, "symlink(s) out of the source folder refused"),
                            (self.not_images, "val file(s) left out, not images")):
            if names:
                return f"{len(names)} {what} (first: {self.reasons[names[0]]}); see the list above"
        if self.full or allow_incomplete:
            return None
        hint = ("the archive may be truncated; download it again" if self.source.startswith("tar ")
                else "the folder lacks val images")
        return (f"incomplete: {self.present} of {N_VAL} val images in {self.out} ({len(self.missing)} missing, "
                f"first {self.missing[0]}); {hint}, or pass --allow-incomplete to keep a subset")

    def leave_out(self, names: list[str], name: str, reason: str) -> None:
        """Record ``name`` in ``names`` (not_images or refused_links) with its one-line reason."""
        names.append(name)
        self.reasons[name] = reason


def list_names(names: list[str]) -> str:
    """``: a, b, c ... and N more`` (the first :data:`SHOW` of ``names``)."""
    more = f" ... and {len(names) - SHOW} more" if len(names) > SHOW else ""
    return ": " + ", ".join(names[:SHOW]) + more


def prepare(out: Path, val_tar: Optional[Path] = None, val_dir: Optional[Path] = None, link: bool = False,
            progress: Optional[Progress] = None) -> PrepareReport:
    """Fill ``out/<wnid>/`` from ``val_tar`` or ``val_dir`` (exactly one); ``progress(n)`` per source file."""
    t0 = time.perf_counter()
    if (val_tar is None) == (val_dir is None):
        raise DataError("give exactly one source: --val-tar ILSVRC2012_img_val.tar or --val-dir FOLDER")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if val_tar is not None:
        val_tar = Path(val_tar)
        if link:
            raise DataError("--link needs --val-dir; files from a tar are always extracted")
        if not val_tar.exists() or val_tar.is_dir():  # a pipe is fine: the tar is read as a stream
            raise DataError(f"{val_tar}: no such file; pass the path of ILSVRC2012_img_val.tar with --val-tar")
        report = PrepareReport(out, f"tar {val_tar}")
        _from_tar(val_tar, out, report, progress)
    else:
        val_dir = Path(val_dir)  # type: ignore[arg-type]
        if not val_dir.is_dir():
            raise DataError(f"{val_dir}: no such folder; pass the folder of ILSVRC2012_val_*.JPEG with --val-dir")
        if out.exists() and out.resolve() == val_dir.resolve():
            raise DataError(f"{out}: --out must differ from --val-dir")
        report = PrepareReport(out, f"folder {val_dir}")
        _from_dir(val_dir, out, link, report, progress)
    if report.placed == 0 and not (report.not_images or report.refused_links):
        raise DataError(f"{report.source.split(' ', 1)[1]}: no ILSVRC2012 val images in it "
                        f"({len(report.unknown)} other files); is this the validation set?")
    _tally(out, report)
    report.seconds = time.perf_counter() - t0
    return report


def _from_tar(tar_path: Path, out: Path, report: PrepareReport, progress: Optional[Progress]) -> None:
    truth = val_ground_truth()
    seen: set[str] = set()

    def visit(member: tarfile.TarInfo, read: Callable[[], bytes]) -> None:
        name = PurePosixPath(member.name).name
        if name not in truth:
            report.unknown.append(member.name)
        elif name in seen:
            report.repeated.append(member.name)
        else:
            seen.add(name)
            data = read()
            try:
                check_image_bytes(data, f"{tar_path} member {member.name}")
            except DataError as exc:
                report.leave_out(report.not_images, member.name, str(exc))
            else:
                place_bytes(data, out / truth[name] / name, report)

    stream_tar(tar_path, visit, progress)


TarVisit = Callable[[tarfile.TarInfo, Callable[[], bytes]], None]


def stream_tar(tar_path: Path, visit: TarVisit, progress: Optional[Progress] = None, files_only: bool = True) -> int:
    """Read the tar at ``tar_path`` as a stream (any compression; a pipe works, nothing seeks) and call
    ``visit(member, read)`` for each file member (each member at all unless ``files_only``); ``read()``
    gives the member's bytes, during the call only. ``progress(n)`` after each file. Returns the number of
    files. An unreadable or truncated archive, and a failed write under the destination, raise one
    :class:`DataError` line naming the file; what was written before is kept (a re-run resumes)."""
    n = 0
    try:
        stream = tarfile.open(tar_path, mode="r|*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{tar_path}: not a readable tar archive ({exc_reason(exc)}); check the download") from None

    def read_member(member: tarfile.TarInfo) -> bytes:
        fobj = stream.extractfile(member)
        return fobj.read() if fobj is not None else b""

    with stream:
        try:
            for member in stream:
                is_file = member.isfile()
                if files_only and not is_file:
                    continue
                n += is_file
                visit(member, lambda: read_member(member))  # noqa: B023 - called before the loop moves on
                if progress and is_file:
                    progress(n)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataError(f"{tar_path}: archive is damaged or truncated after {n} files ({exc_reason(exc)}); "
                            "files written so far are kept, fix the archive and run again") from None
        except OSError as exc:
            if exc.filename:  # writing under out failed
                raise DataError(f"{exc.filename}: cannot write ({exc.strerror}); check free space "
                                "and permissions, then run again to resume") from None
            raise DataError(f"{tar_path}: read failed after {n} files ({exc_reason(exc)}); "
                            "run again to resume") from None
    return n


def walk_files(src_dir: Path, out: Path) -> Iterator[tuple[Path, str]]:
    """(path, POSIX path relative to ``src_dir``) of every file below ``src_dir``, in sorted order;
    hidden files and folders, and the folder ``out`` (when it lies inside), are skipped."""
    out_real = os.path.realpath(out)
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) != out_real)
        for name in sorted(filenames):
            if not name.startswith("."):
                src = Path(dirpath, name)
                yield src, src.relative_to(src_dir).as_posix()


def _from_dir(val_dir: Path, out: Path, link: bool, report: PrepareReport, progress: Optional[Progress]) -> None:
    truth = val_ground_truth()
    seen: set[str] = set()
    src_real = os.path.realpath(val_dir)
    for n, (src, rel) in enumerate(walk_files(val_dir, out), 1):
        name = src.name
        if name not in truth:
            report.unknown.append(rel)
        elif name in seen:
            report.repeated.append(rel)
        else:
            seen.add(name)
            place_source(src, rel, src_real, out / truth[name] / name, link, report)
        if progress:
            progress(n)


def place_bytes(data: bytes, dest: Path, report: Placing) -> None:
    if dest.is_file() and dest.stat().st_size == len(data) and dest.read_bytes() == data:
        report.skipped += 1
        return
    if dest.exists() or dest.is_symlink():
        report.replaced.append(dest.relative_to(report.out).as_posix())
    atomic_write(dest, lambda f: f.write(data), fsync=False)
    report.written += 1


def place_source(src: Path, rel: str, src_real: str, dest: Path, link: bool, report: Placing) -> None:
    """Copy or link one val file of the source folder, unless it links out of the folder or is no image."""
    real = os.path.realpath(src)
    if os.path.commonpath([real, src_real]) != src_real:
        report.leave_out(report.refused_links, rel, f"{src} links to {real}, outside {src_real}; "
                         "copy the file into the folder or remove the link")
        return
    try:
        data = read_regular(real)
        check_image_bytes(data, src)
    except DataError as exc:
        report.leave_out(report.not_images, rel, str(exc))
        return
    try:
        if link:
            place_link(Path(real), dest, report)
        else:
            place_bytes(data, dest, report)
    except OSError as exc:
        raise DataError(f"{exc.filename or src}: cannot copy ({exc.strerror or exc}); check free space "
                        "and permissions, then run again to resume") from None


def place_link(src: Path, dest: Path, report: Placing) -> None:
    """Hard-link ``dest`` to ``src`` (a real path), or symlink it where a hard link is impossible."""
    if dest.exists():
        if _same(src, dest):
            report.skipped += 1
            return
        report.replaced.append(dest.relative_to(report.out).as_posix())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dest)
    _discard(tmp)
    try:
        try:
            os.link(src, tmp)
            kind = "linked"
        except OSError:  # another filesystem, or no hard links there
            os.symlink(src, tmp)
            kind = "symlinked"
        os.replace(tmp, dest)
    finally:
        _discard(tmp)
    setattr(report, kind, getattr(report, kind) + 1)


def _same(src: Path, dest: Path) -> bool:
    try:
        return os.path.samefile(src, dest) or filecmp.cmp(src, dest, shallow=False)
    except OSError:
        return False


def _tmp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.tmp")


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _tally(out: Path, report: PrepareReport) -> None:
    """Which val images ``out`` holds now, whatever run put them there."""
    by_class: dict[str, set[str]] = {}
    for name, wnid in val_ground_truth().items():
        by_class.setdefault(wnid, set()).add(name)
    missing: list[str] = []
    for wnid, names in by_class.items():
        folder = out / wnid
        present = set(os.listdir(folder)) & names if folder.is_dir() else set()
        report.classes += bool(present)
        missing.extend(names - present)
    report.missing = sorted(missing)


def exc_reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
