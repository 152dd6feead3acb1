"""Read-only bind mounts that make a data folder look in a container exactly as on the host.

The data folder is mounted at its own (resolved) host path, and every folder its symlinks point
into (``data prepare --link`` across filesystems makes absolute links; relative links may leave
the folder too) is mounted read-only at the same path, so every link resolves inside the
container as it does outside. Mount points that would hide part of the image (``/usr``,
``/tmp``...) are refused with one line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import MountError
from zoobench_contract.converted import CONVERTED_MOUNT

from .layout import OUT_MOUNT, WEIGHTS_MOUNT

# Container paths a data mount may not be, contain, or sit inside of (the runner image lives there).
PROTECTED = (CONVERTED_MOUNT, "/bin", "/etc", "/home/zoobench", "/lib", "/lib64", "/opt/venv", OUT_MOUNT, "/sbin", "/tmp",
             "/usr", WEIGHTS_MOUNT)
FORBIDDEN_UNDER = ("/dev", "/proc", "/sys", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/opt/venv",
                   WEIGHTS_MOUNT, OUT_MOUNT, CONVERTED_MOUNT)


@dataclass(frozen=True)
class Bind:
    """``source`` (host) mounted read-only at ``target`` (container)."""

    source: str
    target: str


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_target(target: str, what: str) -> None:
    """Refuse a mount point that would hide or sit inside the image's own files."""
    bad = target == "/" or any(_under(p, target) for p in PROTECTED) or any(_under(target, p) for p in FORBIDDEN_UNDER)
    if bad:
        raise MountError(f"{what} {target} cannot be mounted at the same path in a container (it would hide or "
                         "overlay the runner image's own files); move or link the data under another folder, "
                         "e.g. /data or /mnt")


def _link_targets(root: Path) -> tuple[set[str], list[str]]:
    """Folders (as named by the links) that symlinks below ``root`` point into, and dangling links."""
    targets: set[str] = set()
    dangling: list[str] = []
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        parent = os.path.realpath(dirpath)  # where the kernel resolves a relative link from
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                continue
            text = os.readlink(path)
            named = os.path.normpath(os.path.join(parent, text))
            if not os.path.exists(path):
                dangling.append(os.path.relpath(path, root))
                continue
            folder = named if os.path.isdir(path) else os.path.dirname(named)
            if not _under(folder, real_root):
                targets.add(folder)
    return targets, sorted(dangling)


def _collapse(folders: set[str]) -> list[str]:
    """Few mounts for many folders: per top-level folder, their common parent when that is mountable."""
    groups: dict[str, list[str]] = {}
    for f in folders:
        groups.setdefault(PurePosixPath(f).parts[1] if f != "/" else "/", []).append(f)
    out: set[str] = set()
    for members in groups.values():
        common = os.path.commonpath(members)
        try:
            check_target(common, "symlink target folder")
            out.add(common)
        except MountError:
            out.update(members)
    kept = sorted(out)
    return [f for f in kept if not any(o != f and _under(f, o) for o in kept)]


def data_binds(data_dir: Path) -> tuple[str, list[Bind], list[str]]:
    """(container path of the data folder, read-only binds, dangling symlinks relative to it)."""
    real = os.path.realpath(data_dir)
    check_target(real, "data folder")
    folders, dangling = _link_targets(Path(real))
    binds = [Bind(real, real)]
    for folder in _collapse(folders):
        if _under(folder, real):
            continue
        check_target(folder, f"symlink target folder (linked from {data_dir})")
        binds.append(Bind(folder, folder))
    return real, binds, dangling


def file_bind(path: Path, what: str) -> tuple[str, Bind]:
    """A single file (``--weights PATH``) mounted read-only at its own resolved path."""
    real = os.path.realpath(path)
    check_target(real, what)
    return real, Bind(real, real)
