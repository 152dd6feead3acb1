"""Framework images: content-hash tags, and builds that work without any registry.

A tag is ``zoobench/NAME:VARIANT-HASH``; HASH covers every byte that goes into the image (runner
code, Dockerfile, lock, .dockerignore, base image reference), so an unchanged image is never rebuilt.
Builds install the lock from a host wheelhouse (``pip download``) served on 127.0.0.1 while the
legacy builder runs with host networking; the ``offline`` base comes from ``images/base/build.sh``.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator

from zoobench_contract.gpubuild import GpuBuild

from ..errors import ImageBuildError, ImageManifestError, first_line
from .manifest import ImageSpec
from .wheelhouse import WheelServer, lock_for_python, pip_target_args

ERRORS = (ImageManifestError, ImageBuildError)  # this module's user errors (both ZoobenchError: exit code 2)

BASE_RECIPE = "images/base/build.sh"
BASE_REPO = "zoobench/base"
BASE_SUITE = "bookworm"
DOCKERIGNORE = ".dockerignore"
SKIP_DIRS = {"__pycache__", "build", "dist", ".pytest_cache", ".mypy_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")


# ---------------------------------------------------------------- content hash and tags


def _files_under(root: Path, rel: str, field: str, source: str) -> Iterator[Path]:
    target = root / rel
    if target.is_file():
        yield target
        return
    if not target.is_dir():
        raise ImageManifestError(f"{source}: {field}: {rel} does not exist under {root}; fix the path")
    for dirpath, dirnames, filenames in os.walk(target):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            if not name.endswith(SKIP_SUFFIXES):
                yield Path(dirpath) / name


def base_recipe_hash(root: Path) -> str:
    """First 12 hex digits of sha256(images/base/build.sh): the offline base's tag suffix."""
    recipe = root / BASE_RECIPE
    if not recipe.is_file():
        raise ImageManifestError(f"{recipe}: the offline base recipe is missing; restore it from git")
    return hashlib.sha256(recipe.read_bytes()).hexdigest()[:12]


def base_tag(root: Path) -> str:
    return f"{BASE_REPO}:{BASE_SUITE}-{base_recipe_hash(root)}"


def base_reference(spec: ImageSpec, variant: str, root: Path) -> str | None:
    """The BASE_IMAGE build argument: the offline base's tag, an explicit reference, or None (default)."""
    base = spec.variant(variant).base_image
    if base == "offline":
        return base_tag(root)
    if base == "default":
        return None
    return base


def gpu_archs_arg(gpu: GpuBuild) -> str:
    """GPU_ARCHS (the image's ZOOBENCH_GPU_ARCHS): a variant's gpu archs then ptx, space separated."""
    return " ".join([*gpu.archs, *gpu.ptx])


def build_args(spec: ImageSpec, variant: str, root: Path) -> dict[str, str]:
    """The Dockerfile ARGs an image's build gets (all but WHEELS_URL and IMAGE_TAG, which vary per build)."""
    var = spec.variant(variant)
    args = {"FRAMEWORK": spec.framework, "PYTHON": var.python, "LOCK": var.lock,
            **dict(spec.build_args), **dict(var.build_args)}
    if var.gpu is not None:
        args["GPU_ARCHS"] = gpu_archs_arg(var.gpu)
    base = base_reference(spec, variant, root)
    if base is not None:
        args["BASE_IMAGE"] = base
    return args


def content_hash(spec: ImageSpec, variant: str, root: Path) -> str:
    """sha256 over sorted (relative path, bytes) of every input, the lock, the Dockerfile and the base."""
    var = spec.variant(variant)
    files: dict[str, Path] = {}
    fields = [(f"images.{spec.name}.inputs", p) for p in spec.inputs]
    fields += [(f"images.{spec.name}.dockerfile", spec.dockerfile),
               (f"images.{spec.name}.variants.{variant}.lock", var.lock)]
    for field, rel in fields:
        for path in _files_under(root, rel, field, spec.source):
            files[path.relative_to(root).as_posix()] = path
    ignore = root / DOCKERIGNORE
    if ignore.is_file():
        files[DOCKERIGNORE] = ignore
    digest = hashlib.sha256()
    for rel in sorted(files):
        data = files[rel].read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    base = base_reference(spec, variant, root) or "default"
    digest.update(f"variant\0{variant}\0base\0{base}\0python\0{var.python}\0".encode())
    for key, value in sorted(build_args(spec, variant, root).items()):
        digest.update(f"arg\0{key}\0{value}\0".encode())
    if var.gpu is not None:  # the whole declaration (its archs are GPU_ARCHS above; its CUDA too)
        digest.update(f"gpu\0{var.gpu.cuda}\0{' '.join(var.gpu.archs)}\0{' '.join(var.gpu.ptx)}\0".encode())
    return digest.hexdigest()


def image_tag(spec: ImageSpec, variant: str, root: Path) -> str:
    """zoobench/NAME:VARIANT-HASH12."""
    return f"zoobench/{spec.name}:{variant}-{content_hash(spec, variant, root)[:12]}"


def tag_file_stem(tag: str) -> str:
    """A file name for an image tag: ``zoobench/pytorch:cpu-0123abcd`` -> ``zoobench_pytorch_cpu-0123abcd``."""
    return tag.replace("/", "_").replace(":", "_")


def image_exists(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
        return True
    except ImageNotFound:
        return False


# ---------------------------------------------------------------- builds


StepHook = Callable[..., None]  # on_step(name, log_path): a long step began; its full log goes to log_path
BASE_STEP_RE = re.compile(r"^base: (installing debootstrap|debootstrap|importing)\b")
# Steps that do work (others, ARG/ENV/LABEL..., take no time and would only flood a CI log).
DOCKER_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : ((?:FROM|RUN|COPY|ADD)\b.*)$", re.IGNORECASE)


def _no_step(name: str, log_path: Path | None = None) -> None:
    pass


def _stepping(on_log: Callable[[str], None], on_step: StepHook, pattern: re.Pattern[str],
              name: Callable[[re.Match[str]], str]) -> Callable[[str], None]:
    """``on_log`` that first reports a new step for each line matching ``pattern``."""
    def log(line: str) -> None:
        match = pattern.match(line)
        if match:
            on_step(name(match))
        on_log(line)
    return log


class _BuildLog:
    """Full build log on disk; every line also goes to ``on_log``."""

    def __init__(self, path: Path, on_log: Callable[[str], None]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fh = open(path, "w")
        self.on_log = on_log
        self.lock = threading.Lock()  # stdout and stderr of a subprocess are pumped by two threads

    def __call__(self, line: str) -> None:
        line = line.rstrip("\n")
        with self.lock:
            self.fh.write(line + "\n")
            self.fh.flush()
            self.on_log(line)

    def close(self) -> None:
        self.fh.close()


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _run_logged(cmd: list[str], log: _BuildLog, cwd: Path) -> tuple[int, list[str]]:
    """Run ``cmd``, sending stdout and stderr to the log; return (exit code, stdout lines)."""
    log(f"$ {' '.join(cmd)}")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []

    def pump_err() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            log(line)

    reader = threading.Thread(target=pump_err, daemon=True)
    reader.start()
    for line in proc.stdout:  # type: ignore[union-attr]
        out.append(line.rstrip("\n"))
        log(line)
    code = proc.wait()
    reader.join()
    return code, out


def ensure_base(root: Path, client: Any, on_log: Callable[[str], None], on_step: StepHook = _no_step) -> str:
    """The offline base image's tag, running images/base/build.sh when it is missing.

    ``on_step`` hears "base image", then "base image: debootstrap", "base image: importing"."""
    tag = base_tag(root)
    if image_exists(client, tag):
        return tag
    path = root / ".cache" / "logs" / "build-base.log"
    on_step("base image", path)
    log = _BuildLog(path, _stepping(on_log, on_step, BASE_STEP_RE, lambda m: f"base image: {m.group(1)}"))
    try:
        start = time.monotonic()
        code, out = _run_logged(["bash", str(root / BASE_RECIPE)], log, root)
        log(f"base: exit {code} after {time.monotonic() - start:.0f} s")
    finally:
        log.close()
    if code != 0 or not out or out[-1].strip() != tag:
        got = f"printed {out[-1].strip()!r}, expected {tag!r}" if code == 0 and out else f"exited {code}"
        raise ImageBuildError(f"offline base image {tag} failed: {BASE_RECIPE} {got}; "
                              f"full log: {_shown(log.path)}")
    return tag


def wheelhouse_variant(spec: ImageSpec, variant: str) -> str:
    """The first variant (in images.yaml order) with this one's lock and Python: variants that install
    the same wheels (pytorch cpu and cuda) share one wheelhouse, downloaded once."""
    var = spec.variant(variant)
    return next(name for name, other in spec.variants.items()
                if (other.lock, other.python) == (var.lock, var.python))


def ensure_wheelhouse(spec: ImageSpec, variant: str, root: Path, on_log: Callable[[str], None],
                      on_step: StepHook = _no_step) -> Path:
    """Every wheel of the variant's lock in .cache/wheelhouse/NAME-VARIANT (skipped when complete).

    ``on_step`` hears "wheelhouse: downloading N wheels" when pip runs."""
    var = spec.variant(variant)
    lock = root / var.lock
    if not lock.is_file():
        raise ImageManifestError(f"{spec.source}: images.{spec.name}.variants.{variant}.lock: {var.lock} does not "
                                 f"exist; generate it with `make lock`")
    house = root / ".cache" / "wheelhouse" / f"{spec.name}-{wheelhouse_variant(spec, variant)}"
    stamp = house / ".complete"
    wanted = lock_for_python(lock.read_text(), var.python)
    digest = hashlib.sha256(f"{var.python}\0{wanted}".encode()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == digest:
        on_log(f"wheelhouse {_shown(house)} is complete")
        return house
    house.mkdir(parents=True, exist_ok=True)
    target_lock = house / ".requirements.lock"  # pip ignores it on the served index page (not a wheel)
    target_lock.write_text(wanted)
    log_path = root / ".cache" / "logs" / f"wheelhouse-{spec.name}-{variant}.log"
    count = len(wanted.splitlines())
    on_step(f"wheelhouse: downloading {count} wheel{'s' if count != 1 else ''}", log_path)
    log = _BuildLog(log_path, on_log)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--require-hashes", "--no-deps",
           "--only-binary", ":all:", *pip_target_args(var.python), "-r", str(target_lock), "-d", str(house)]
    try:
        start = time.monotonic()
        code, _ = _run_logged(cmd, log, root)
        log(f"wheelhouse: exit {code} after {time.monotonic() - start:.0f} s")
    finally:
        log.close()
    if code != 0:
        raise ImageBuildError(f"image {spec.name} ({variant}): downloading the wheels of {var.lock} failed; "
                              f"full log: {_shown(log.path)}")
    tmp = stamp.with_name(".complete.tmp")
    tmp.write_text(digest + "\n")
    os.replace(tmp, stamp)
    return house


CAUSE_RE = re.compile(r"^(ERROR:|E: |AssertionError|error:)")


def _short_error(text: str, recent: list[str]) -> str:
    """The engine's error without the (long) command of a failed RUN step, plus the step's own error line."""
    step = re.search(r"returned a non-zero code: (\d+)", text)
    if not step:
        lines = text.strip().splitlines() or ["unknown error"]
        return lines[-1][:200]
    causes = [line.strip() for line in recent if CAUSE_RE.match(line.strip())]
    cause = f" ({causes[-1][:200]})" if causes else ""
    return f"a RUN step exited with code {step.group(1)}{cause}"


def build(spec: ImageSpec, variant: str, root: Path, client: Any, on_log: Callable[[str], None],
          on_step: StepHook = _no_step) -> str:
    """Build zoobench/NAME:VARIANT-HASH unless it exists; return the tag.

    ``on_log`` gets every log line; ``on_step(name, log_path)`` each long step as it begins: the base
    image and the wheelhouse (when missing), "docker build", then "docker build step N/M: INSTRUCTION"."""
    tag = image_tag(spec, variant, root)
    if image_exists(client, tag):
        return tag
    var = spec.variant(variant)
    base = (ensure_base(root, client, on_log, on_step) if var.base_image == "offline"
            else base_reference(spec, variant, root))
    house = ensure_wheelhouse(spec, variant, root, on_log, on_step)
    log_path = root / ".cache" / "logs" / f"build-{spec.name}-{variant}.log"
    on_step("docker build", log_path)
    log = _BuildLog(log_path, _stepping(on_log, on_step, DOCKER_STEP_RE,
                                        lambda m: f"docker build step {m.group(1)}/{m.group(2)}: {m.group(3).strip()}"))
    failed = f"image {spec.name} ({variant}) failed to build"
    try:
        with WheelServer(house) as server:
            buildargs = {**build_args(spec, variant, root), "WHEELS_URL": server.url, "IMAGE_TAG": tag}
            if base is not None:
                buildargs["BASE_IMAGE"] = base
            log(f"building {tag} from {spec.dockerfile} (base: {base or 'Dockerfile default'}, wheels: {server.url})")
            start = time.monotonic()
            stream = client.api.build(
                path=str(root), dockerfile=spec.dockerfile, tag=tag, buildargs=buildargs,
                network_mode="host", rm=True, forcerm=True, pull=False, decode=True,
                labels={"org.zoobench.image": spec.name, "org.zoobench.variant": variant,
                        "org.zoobench.content-hash": content_hash(spec, variant, root)})
            recent: deque[str] = deque(maxlen=40)
            for chunk in stream:
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        log(line)
                        recent.append(line)
                elif "error" in chunk:
                    log(f"ERROR: {chunk['error'].strip()}")
                    reason = _short_error(chunk["error"], list(recent))
                    raise ImageBuildError(f"{failed}: {reason}; full log: {_shown(log_path)}")
                elif "status" in chunk:
                    log(chunk["status"])
            log(f"built {tag} in {time.monotonic() - start:.0f} s")
    except ImageBuildError:
        raise
    except Exception as exc:  # the engine refused the build or the connection broke
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        if not isinstance(exc, (DockerException, RequestException, OSError)):
            raise
        log(f"ERROR: {type(exc).__name__}: {exc}")
        raise ImageBuildError(f"{failed}: {first_line(exc)[:200]}; full log: {_shown(log_path)}") from None
    finally:
        log.close()
    if not image_exists(client, tag):
        raise ImageBuildError(f"{failed}: the engine reported no image; full log: {_shown(log_path)}")
    return tag
