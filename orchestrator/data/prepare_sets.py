"""``zoobench data prepare --dataset NAME --from PATH ...``: an evaluation set from the files its authors publish.

Each ``--from`` is an archive as distributed (a tar of any compression, read as a stream, a pipe
too; a zip, read member by member) or its extracted folder (copied, or hard-linked with ``link``).
:class:`~.layouts.Layout` says where each file goes below ``OUT`` (``<wnid>/<file>``, or
``<corruption>/<severity>/<wnid>/<file>``); files that do not belong are listed, never written.
Nothing is written outside ``OUT``: an archive member with an absolute or ``..`` path, a link
member and a special file are refused (listed); a folder's symlink to outside it is refused as for
val. Only files Pillow recognises as images are placed. Every file is written atomically and a
re-run skips identical files, so an interrupted run resumes; an unreadable or truncated archive is
one :class:`DataError` line naming it. The result is then counted against the set's known totals
(:func:`~.counts.count_check`); :meth:`SetReport.problem` says in one line when it is not what
was asked for. ``imagenet-val`` goes to :func:`~.prepare.prepare`, as ``--val-tar``/``--val-dir``.
"""
from __future__ import annotations

import os
import stat
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from zoobench_contract.dataset import DataError, check_image_bytes

from ..paths import MANIFEST_DIR
from .counts import CountReport, count_check
from .datasets import Dataset, load_datasets
from .layouts import Layout, Placed, Roots, unsafe_path
from .prepare import PrepareReport, Progress, exc_reason, list_names, place_bytes, place_source, prepare, \
    stream_tar, walk_files

VAL = "imagenet-val"  # prepared by .prepare from the val tar and the shipped ground truth


@dataclass
class SetReport:
    """What one :func:`prepare_set` run did, and what ``out`` holds now (:attr:`counts`)."""

    out: Path
    dataset: str
    sources: list[str]
    written: int = 0  # files copied or extracted
    linked: int = 0  # hard links made
    symlinked: int = 0  # symbolic links made (hard link impossible)
    skipped: int = 0  # identical file already in place
    replaced: list[str] = field(default_factory=list)  # a different file was in place and was replaced
    unknown: list[str] = field(default_factory=list)  # files that are not files of the set (left out)
    outside: list[str] = field(default_factory=list)  # files of classes the set does not have (left out)
    repeated: list[str] = field(default_factory=list)  # a second file for a destination (first kept)
    not_images: list[str] = field(default_factory=list)  # files of the set whose bytes are no image (left out)
    refused: list[str] = field(default_factory=list)  # unsafe archive members, links out of a source folder
    conflicts: list[str] = field(default_factory=list)  # class folder met under two roots of a tar (left out)
    reasons: dict[str, str] = field(default_factory=dict)  # one line per not_images / refused / conflicts entry
    counts: Optional[CountReport] = None
    seconds: float = 0.0

    @property
    def refused_links(self) -> list[str]:  # the name prepare's placing helpers record into
        return self.refused

    @property
    def placed(self) -> int:
        return self.written + self.linked + self.symlinked + self.skipped

    def leave_out(self, names: list[str], name: str, reason: str) -> None:
        """Record ``name`` in ``names`` (not_images, refused or conflicts) with its one-line reason."""
        names.append(name)
        self.reasons[name] = reason

    def summary(self) -> str:
        lines = [f"prepared {self.dataset} in {self.out} from {', '.join(self.sources)} in {self.seconds:.1f}s",
                 f"  written {self.written}, hard-linked {self.linked}, symlinked {self.symlinked}, "
                 f"already in place {self.skipped}"]
        lines += [f"  {line}" for line in (self.counts.lines() if self.counts else [])]
        for label, names in (("archive members or links refused (nothing written)", self.refused),
                             ("files that are not images (left out)", self.not_images),
                             ("files whose class folder is in two folders of the source (left out)", self.conflicts),
                             (f"files of classes {self.dataset} does not have (left out)", self.outside),
                             (f"files that are not {self.dataset} files (left out)", self.unknown),
                             ("files met twice for one destination (first kept)", self.repeated),
                             ("replaced a different file already in place", self.replaced)):
            if names:
                lines.append(f"  {len(names)} {label}{list_names(names)}")
        return "\n".join(lines)

    def problem(self, allow_incomplete: bool = False) -> Optional[str]:
        """One line when files of the set were left out, or ``out`` is not the set as known (missing
        parts are accepted with ``allow_incomplete``); None when the result is what was asked for."""
        for names, what in ((self.refused, "archive member(s) or link(s) refused"),
                            (self.not_images, "file(s) left out, not images"),
                            (self.conflicts, "file(s) left out, their class folder is in two folders of the source")):
            if names:
                return f"{len(names)} {what} (first: {self.reasons[names[0]]}); see the list above"
        return self.counts.problem(allow_incomplete) if self.counts else None


def prepare_from(out: Path, dataset: Optional[str], sources: list[Path], val_tar: Optional[Path] = None,
                 val_dir: Optional[Path] = None, link: bool = False, manifests: Optional[Path] = None,
                 progress: Optional[Progress] = None) -> Union[PrepareReport, SetReport]:
    """``data prepare``'s options to the right preparer: the old ``--val-tar``/``--val-dir`` form, or
    ``--dataset NAME --from PATH...`` (``imagenet-val`` to :func:`~.prepare.prepare`)."""
    if dataset is None:
        if sources:
            raise DataError("--from needs --dataset NAME (imagenet-v2, imagenet-r, imagenet-a, imagenet-sketch, "
                            "imagenet-c, imagenet-val)")
        return prepare(out, val_tar=val_tar, val_dir=val_dir, link=link, progress=progress)
    if val_tar is not None or val_dir is not None:
        raise DataError("--dataset takes its source with --from; --val-tar/--val-dir are the form without --dataset")
    name, spec = load_datasets(manifests or MANIFEST_DIR).get(dataset)
    if not sources:
        raise DataError(f"--dataset {name} needs --from PATH: {spec.archive} as distributed, or its extracted folder")
    if name == VAL:
        if len(sources) != 1:
            raise DataError(f"--dataset {VAL} takes one --from (ILSVRC2012_img_val.tar or the folder of its JPEGs)")
        src = Path(sources[0])
        return prepare(out, val_dir=src, link=link, progress=progress) if src.is_dir() else \
            prepare(out, val_tar=src, link=link, progress=progress)
    if spec.subset_images:
        raise DataError(f"--dataset {name} is read from the prepared val folder ({spec.class_subset} classes): "
                        f"prepare that with --dataset {VAL} --from ILSVRC2012_img_val.tar and bench it with "
                        f"--dataset {name}")
    return prepare_set(out, name, spec, [Path(s) for s in sources], link=link, progress=progress)


@dataclass
class _Run:
    """The state of one :func:`prepare_set` call, shared by its sources."""

    report: SetReport
    layout: Layout
    link: bool
    progress: Optional[Progress]
    seen: set[str] = field(default_factory=set)  # destinations placed by this run
    n: int = 0  # source files met

    def tick(self) -> None:
        self.n += 1
        if self.progress:
            self.progress(self.n)

    def destination(self, roots: Roots, name: str, where: str) -> Optional[Path]:
        """Where the source file ``name`` goes, or None after recording why it does not."""
        report, placed = self.report, self.layout.place(name)
        if not isinstance(placed, Placed):
            if placed.kind == "unsafe":
                report.leave_out(report.refused, name, f"{where}: {placed.reason}; refused, nothing written")
            else:
                (report.outside if placed.kind == "outside" else report.unknown).append(name)
            return None
        conflict = roots.conflict(placed)
        if conflict:
            report.leave_out(report.conflicts, name, f"{where}: {conflict}; pass the set's own folder")
            return None
        if placed.dest in self.seen:
            report.repeated.append(name)
            return None
        self.seen.add(placed.dest)
        return report.out / placed.dest

    def store(self, data: bytes, name: str, where: str, dest: Path) -> None:
        """Place ``data`` at ``dest`` when it is an image; list it as not an image otherwise."""
        try:
            check_image_bytes(data, where)
        except DataError as exc:
            self.report.leave_out(self.report.not_images, name, str(exc))
            return
        place_bytes(data, dest, self.report)


def prepare_set(out: Path, name: str, dataset: Dataset, sources: list[Path], link: bool = False,
                progress: Optional[Progress] = None) -> SetReport:
    """Fill ``out`` with the set ``name`` from ``sources`` (archives or folders), then count it."""
    t0 = time.perf_counter()
    out = Path(out)
    kinds = _check_sources(out, sources, link, dataset)
    run = _Run(SetReport(out, name, [f"{kind} {src}" for src, kind in zip(sources, kinds)]), Layout(name, dataset),
               link, progress)
    for src, kind in zip(sources, kinds):  # refuse a source mixing two sets before anything is written
        if kind != "tar":
            _prescan(run.layout, src, _names_of(src, kind, out))
    for src, kind in zip(sources, kinds):
        {"tar": _from_tar, "zip": _from_zip, "folder": _from_folder}[kind](run, src)
    report = run.report
    if report.placed == 0 and not (report.not_images or report.refused or report.conflicts):
        others = len(report.unknown) + len(report.outside)
        hint = "; pass each archive of the folder with --from" if any(
            n.lower().endswith((".tar", ".tar.gz", ".tgz", ".zip")) for n in report.unknown) else ""
        raise DataError(f"{', '.join(map(str, sources))}: no files of {name} in it ({others} other files; expected "
                        f"{dataset.archive}){hint}")
    report.counts = count_check(out, name, dataset)
    report.seconds = time.perf_counter() - t0
    return report


def _check_sources(out: Path, sources: list[Path], link: bool, dataset: Dataset) -> list[str]:
    """The kind of each source (tar, zip, folder); one line for a missing one, --link with an archive..."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    kinds, seen = [], set()
    for src in sources:
        if not src.exists():
            raise DataError(f"{src}: no such file or folder; pass {dataset.archive} as distributed, or its "
                            "extracted folder, with --from")
        real = os.path.realpath(src)
        if real in seen:
            raise DataError(f"--from {src} is given twice; give each archive or folder once")
        seen.add(real)
        kind = "folder" if src.is_dir() else "zip" if _is_zip(src) else "tar"
        if kind == "folder" and out.exists() and os.path.samefile(src, out):
            raise DataError(f"{out}: --out must differ from --from {src}")
        if link and kind != "folder":
            raise DataError(f"--link needs folder sources; {src} is an archive, whose files are always extracted")
        kinds.append(kind)
    return kinds


def _is_zip(src: Path) -> bool:
    """A zip by its name, or by its content when it is a regular file (a pipe is read as a tar stream)."""
    if src.name.lower().endswith(".zip"):
        return True
    return stat.S_ISREG(src.stat().st_mode) and zipfile.is_zipfile(src)


def _names_of(src: Path, kind: str, out: Path) -> list[str]:
    if kind == "folder":
        return [rel for _, rel in walk_files(src, out)]
    with _open_zip(src) as zf:
        return [i.filename for i in zf.infolist() if _zip_refusal(i) is None and not i.is_dir()]


def _prescan(layout: Layout, src: Path, names: list[str]) -> None:
    """One line, before anything is written, when a class folder is in two folders of ``src``."""
    roots = Roots()
    for name in names:
        placed = layout.place(name)
        conflict = roots.conflict(placed) if isinstance(placed, Placed) else None
        if conflict:
            raise DataError(f"{src}: {conflict}; pass the folder of the set itself with --from")


def _from_tar(run: _Run, src: Path) -> None:
    roots = Roots()

    def visit(member: tarfile.TarInfo, read: Callable[[], bytes]) -> None:
        if member.isdir() and unsafe_path(member.name) is None:
            return
        run.tick()
        where = f"{src} member {member.name}"
        why = unsafe_path(member.name) or _tar_refusal(member)
        if why:
            run.report.leave_out(run.report.refused, member.name, f"{where}: {why}; refused, nothing written")
            return
        dest = run.destination(roots, member.name, where)
        if dest is not None:
            run.store(read(), member.name, where, dest)

    stream_tar(src, visit, files_only=False)


def _tar_refusal(member: tarfile.TarInfo) -> Optional[str]:
    if member.issym() or member.islnk():
        return f"a {'symbolic' if member.issym() else 'hard'} link member (to {member.linkname})"
    return None if member.isfile() else "not a regular file (a device or FIFO member)"


def _open_zip(src: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{src}: not a readable zip archive ({exc_reason(exc)}); the download may be truncated: "
                        "download it again") from None


def _zip_refusal(info: zipfile.ZipInfo) -> Optional[str]:
    why = unsafe_path(info.filename)
    if why:
        return why
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a symbolic link member"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file (a device or FIFO member)"
    return None


def _from_zip(run: _Run, src: Path) -> None:
    roots = Roots()
    with _open_zip(src) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            run.tick()
            name, where = info.filename, f"{src} member {info.filename}"
            why = _zip_refusal(info)
            if why:
                run.report.leave_out(run.report.refused, name, f"{where}: {why}; refused, nothing written")
                continue
            dest = run.destination(roots, name, where)
            if dest is None:
                continue
            try:
                data = zf.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError) as exc:
                raise DataError(f"{where}: damaged ({exc_reason(exc)}); files written so far are kept, "
                                "download the archive again and run again") from None
            try:
                run.store(data, name, where, dest)
            except OSError as exc:
                raise DataError(f"{exc.filename or dest}: cannot write ({exc.strerror or exc}); check free space "
                                "and permissions, then run again to resume") from None


def _from_folder(run: _Run, src: Path) -> None:
    roots, src_real = Roots(), os.path.realpath(src)
    for path, rel in walk_files(src, run.report.out):
        run.tick()
        dest = run.destination(roots, rel, str(path))
        if dest is not None:
            place_source(path, rel, src_real, dest, run.link, run.report)
