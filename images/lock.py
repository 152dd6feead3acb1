"""Resolve a requirements .in file into a fully pinned, hash-checked lock (stdlib + pip only).

    python images/lock.py images/pytorch/requirements.in               # -> requirements.lock
    python images/lock.py images/keras/requirements-cuda.in -o images/keras/requirements-cuda.lock

Resolution runs `pip install --dry-run --ignore-installed --report` for CPython on
manylinux x86_64 (wheels only) once per --python-version (default 3.11, the Debian 12 bases'
Python; repeat the flag, e.g. for 3.12, to lock for several). Every package is pinned; a pin
that differs between Python versions gets a `python_version` marker. Each pin lists the sha256 of
EVERY file PyPI publishes for that version (so any interpreter/platform tag installs), plus the
hash of any locally indexed file that pip resolved to, when it is not among them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PYPI = "https://pypi.org/pypi"
DEFAULT_PYTHONS = ("3.11",)  # the images assert CPython 3.11 (Debian 12 bases)
DEFAULT_GLIBC = "2.35"  # bookworm has 2.36, Ubuntu 22.04 2.35, Ubuntu 24.04 2.39


class LockError(Exception):
    """A one-line, user-facing failure."""


@dataclass
class Pin:
    """One resolved distribution and where its hashes came from."""

    name: str
    version: str
    pythons: set[str] = field(default_factory=set)
    local_files: dict[str, str] = field(default_factory=dict)  # path -> sha256
    report_hashes: set[str] = field(default_factory=set)


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def platforms(glibc: str) -> list[str]:
    """manylinux tags from glibc 2.17 up to `glibc` (pip does not expand PEP 600 tags itself)."""
    major, minor = (int(p) for p in glibc.split("."))
    if major != 2 or minor < 17:
        raise LockError(f"--glibc {glibc}: expected 2.17 or newer")
    tags = [f"manylinux_2_{m}_x86_64" for m in range(minor, 16, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def resolve(req_in: Path, python: str, glibc: str) -> list[dict]:
    """Run pip's resolver for one Python version; return the report's `install` entries."""
    abi = "cp" + python.replace(".", "")
    with tempfile.TemporaryDirectory(prefix="zoobench-lock-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "-r", str(req_in), "--only-binary", ":all:",
               "--python-version", python, "--implementation", "cp",
               "--abi", abi, "--abi", "abi3", "--abi", "none"]
        for plat in platforms(glibc):
            cmd += ["--platform", plat]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
            if "unless installing via '--target'" in proc.stderr:
                raise LockError(f"{sys.executable}: its pip is too old to resolve for another platform with "
                                "--dry-run; upgrade it (pip install -U pip) or run .venv/bin/python images/lock.py")
            raise LockError(f"{req_in}: pip could not resolve for Python {python}: "
                            f"{errors[-1] if errors else proc.stderr.strip()[-300:]}")
        return json.loads(report.read_text())["install"]


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise LockError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError):
        return None


def pypi_hashes(name: str, version: str, cache: dict[str, dict | None]) -> set[str]:
    """sha256 of every file PyPI publishes for name==version (empty when PyPI is unreachable)."""
    data = _get_json(f"{PYPI}/{name}/{version}/json")
    if data is not None:
        return {u["digests"]["sha256"] for u in data.get("urls", [])}
    if name not in cache:  # some mirrors only serve the project document
        cache[name] = _get_json(f"{PYPI}/{name}/json")
    project = cache[name]
    if project is None:
        return set()
    for release, files in project.get("releases", {}).items():
        if same_version(release, version):  # PyPI keys releases by its own spelling: 13.0.3 for 13.0.3.0
            return {u["digests"]["sha256"] for u in files}
    return set()


def same_version(a: str, b: str) -> bool:
    """PEP 440 equality (pip's vendored packaging), falling back to string equality."""
    try:
        from pip._vendor.packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - pip always vendors packaging
        return a == b
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def collect(req_in: Path, pythons: list[str], glibc: str) -> dict[tuple[str, str], Pin]:
    """Resolve for every Python version and merge into pins keyed by (name, version)."""
    pins: dict[tuple[str, str], Pin] = {}
    for python in pythons:
        for item in resolve(req_in, python, glibc):
            meta, info = item["metadata"], item["download_info"]
            key = (canonical(meta["name"]), meta["version"])
            pin = pins.setdefault(key, Pin(*key))
            pin.pythons.add(python)
            sha = info.get("archive_info", {}).get("hashes", {}).get("sha256")
            if sha:
                pin.report_hashes.add(sha)
            url = info["url"]
            if url.startswith("file://"):
                path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
                if path.is_file() and str(path) not in pin.local_files:
                    pin.local_files[str(path)] = sha256_file(path)
    return pins


def render(pins: dict[tuple[str, str], Pin], pythons: list[str], command: str) -> tuple[str, list[str]]:
    """Lock text plus notes about hashes that did not come from pypi.org."""
    cache: dict[str, dict | None] = {}
    notes: list[str] = []
    lines = [
        "# zoobench lock: every package pinned, every file hash listed. Generated; do not edit.",
        f"# Regenerate: {command}",
        f"# Resolved for CPython {', '.join(pythons)} on manylinux x86_64 (wheels only).",
        "# Hashes: all files pypi.org publishes for each pin, plus any local index file that differs.",
        "",
    ]
    for key in sorted(pins):
        pin = pins[key]
        published = pypi_hashes(pin.name, pin.version, cache)
        local = set(pin.local_files.values()) | pin.report_hashes
        if not published:
            notes.append(f"{pin.name}=={pin.version}: not found on pypi.org; using local file hashes only")
        extra = sorted(local - published) if published else []
        for sha in extra:
            where = [p for p, h in pin.local_files.items() if h == sha] or ["pip report"]
            notes.append(f"{pin.name}=={pin.version}: local {Path(where[0]).name} sha256 {sha[:12]} "
                         "is not among pypi.org's files; included as well")
        hashes = sorted(published | local)
        if not hashes:
            raise LockError(f"{pin.name}=={pin.version}: no hash available (offline and not local)")
        marker = ""
        if pin.pythons != set(pythons):
            versions = " or ".join(f'python_version == "{p}"' for p in sorted(pin.pythons))
            marker = f" ; {versions}"
        lines.append(f"{pin.name}=={pin.version}{marker} \\")
        lines += [f"    --hash=sha256:{h} \\" for h in hashes[:-1]]
        lines.append(f"    --hash=sha256:{hashes[-1]}")
    for note in notes:
        lines.insert(4, f"# note: {note}")
    return "\n".join(lines) + "\n", notes


def verify(lock_text: str, pins: dict[tuple[str, str], Pin]) -> int:
    """Check that every local file pip resolved to has its sha256 in the lock; return the count."""
    listed = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", lock_text))
    checked = 0
    for pin in pins.values():
        for path, sha in pin.local_files.items():
            if sha not in listed:
                raise LockError(f"{path}: sha256 {sha} missing from the lock")
            checked += 1
    return checked


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements_in", type=Path)
    parser.add_argument("-o", "--output", type=Path, help="default: <input stem>.lock beside the input")
    parser.add_argument("--python-version", action="append", dest="pythons",
                        help=f"repeatable; default {' '.join(DEFAULT_PYTHONS)}")
    parser.add_argument("--glibc", default=DEFAULT_GLIBC, help=f"newest manylinux glibc (default {DEFAULT_GLIBC})")
    args = parser.parse_args(argv)
    pythons = args.pythons or list(DEFAULT_PYTHONS)
    req_in: Path = args.requirements_in
    out: Path = args.output or req_in.with_suffix(".lock")
    if not req_in.is_file():
        print(f"lock: {req_in}: no such file", file=sys.stderr)
        return 2
    command = " ".join(["python images/lock.py", shlex.quote(str(req_in))]
                       + (["-o", shlex.quote(str(args.output))] if args.output else [])
                       + [f"--python-version {p}" for p in (args.pythons or [])]
                       + ([f"--glibc {args.glibc}"] if args.glibc != DEFAULT_GLIBC else []))
    try:
        pins = collect(req_in, pythons, args.glibc)
        text, notes = render(pins, pythons, command)
        checked = verify(text, pins)
    except LockError as exc:
        print(f"lock: {exc}", file=sys.stderr)
        return 1
    write_atomic(out, text)
    n_hashes = text.count("--hash=")
    print(f"lock: wrote {out}: {len(pins)} pins, {n_hashes} hashes; {checked} local files verified; "
          f"{len(notes)} notes")
    for note in notes:
        print(f"lock: note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
