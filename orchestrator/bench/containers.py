"""Run one model in one locked-down container: data read-only, output writable, no network, limits.

Every container follows the CIS Docker Benchmark 5.x: all capabilities dropped,
``no-new-privileges``, a read-only root filesystem with a tmpfs ``/tmp``, a PID limit, an optional
memory limit, no network (except ``predict fetch``), a non-root user, and the weights cache
read-only unless the container is fetching weights. Each container is labelled with its results
folder, run id and role (model or pixel-cache build), so leftovers of a dead run can be told from
containers of a live one. Nothing is left behind: every container is removed with its anonymous
volumes (the images declare ``VOLUME /weights``), whatever happened.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from zoobench_contract.backend import WEIGHTS_MOUNT
from zoobench_contract.cli import EXIT_FAILED, EXIT_OOM, EXIT_USAGE, EXIT_WEIGHTS, PROGRESS_PREFIX

from ..errors import EngineError
from .mounts import Bind

EXIT_CODES = {0: "ok", EXIT_FAILED: "failed", EXIT_USAGE: "bad input", EXIT_OOM: "out of memory",
              EXIT_WEIGHTS: "weights unavailable"}
IMAGE_UID = 1000  # the non-root user of every runner image (images/*/Dockerfile)
PIDS_LIMIT = 4096  # threads count too: TensorFlow starts a pool per core
LABEL, LABEL_RESULTS, LABEL_RUN = "zoobench", "zoobench.results", "zoobench.run"
LABEL_ROLE = "zoobench.role"  # "model" (predict run) or "pixel-cache" (predict cache)
EXIT_CANCELLED = 130
EXIT_TIMEOUT = 124  # as timeout(1): the container ran past its job's timeout_s


RUNTIMES = ("docker", "podman")


def podman_socket() -> str:
    """Podman's Docker-compatible API: $CONTAINER_HOST, else the rootful or the user's socket."""
    if os.environ.get("CONTAINER_HOST"):
        return os.environ["CONTAINER_HOST"]
    user = Path(os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")) / "podman" / "podman.sock"
    return f"unix://{'/run/podman/podman.sock' if os.getuid() == 0 or not user.exists() else user}"


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise EngineError(f"--runtime {runtime!r}: use one of {'|'.join(RUNTIMES)}")


def connect(runtime: str = "docker") -> docker.DockerClient:
    """A client of the container engine: Docker (DOCKER_HOST or its socket) or Podman (its Docker-
    compatible API), so both run the very same container launch."""
    check_runtime(runtime)
    try:
        if runtime == "podman":
            client = docker.DockerClient(base_url=podman_socket(), timeout=600)
        else:
            client = docker.from_env(timeout=600)
        client.ping()
        return client
    except DockerException:
        if runtime == "podman":
            raise EngineError(f"cannot reach Podman's API at {podman_socket()}; start it (systemctl start "
                              "podman.socket, or `podman system service --time=0 &`) or set CONTAINER_HOST") from None
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EngineError(
            f"cannot reach the Docker engine at {where}; start it (`make docker`, or systemctl start docker) "
            "or set DOCKER_HOST"
        ) from None


def require_image(client: docker.DockerClient, tag: str) -> Any:
    try:
        return client.images.get(tag)
    except ImageNotFound:
        raise EngineError(f"image {tag} is not built; run `zoobench images build` (or `make images`)") from None


@dataclass(frozen=True)
class Limits:
    """Resource limits of one container; ``memory`` is docker syntax ("8g") or None for none."""

    memory: str | None = None
    pids: int = PIDS_LIMIT


def hardened(limits: Limits = Limits()) -> dict[str, Any]:
    """The docker-py ``containers.run`` settings every zoobench container gets."""
    settings: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},
        "pids_limit": limits.pids,
        "shm_size": "1g",
        "environment": {"HOME": "/tmp", "PYTHONUNBUFFERED": "1"},
    }
    if limits.memory:
        settings["mem_limit"] = limits.memory
        settings["memswap_limit"] = limits.memory  # no swap on top: a limit is a limit
    return settings


def is_podman(client: docker.DockerClient) -> bool:
    """Whether the engine behind ``client`` is Podman (its Docker-compatible API names itself)."""
    cached = getattr(client, "_zoobench_podman", None)
    if cached is None:
        try:
            parts = client.version().get("Components") or []
        except DockerException:
            parts = []
        cached = any("podman" in str(p.get("Name", "")).lower() for p in parts)
        client._zoobench_podman = cached
    return cached


def engine_settings(client: docker.DockerClient) -> dict[str, Any]:
    """What one engine needs beyond :func:`hardened`. Podman sets rlimits of its own (nofile 1048576,
    nproc) that a host with lower hard limits refuses at container start ("error setting rlimit"), so
    its containers get this process's nofile limit and an nproc limit equal to the PID limit."""
    if not is_podman(client):
        return {}
    import resource

    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1 << 20)
    return {"ulimits": [docker.types.Ulimit(name="nofile", soft=nofile, hard=nofile),
                        docker.types.Ulimit(name="nproc", soft=PIDS_LIMIT, hard=PIDS_LIMIT)]}


def container_user() -> str | None:
    """The invoking user; on a root host, None (the image's non-root user, see :func:`handed_over`)."""
    return None if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for top, dirs, files in os.walk(path):
        os.lchown(top, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, gid)


@contextlib.contextmanager
def handed_over(*folders: Path) -> Iterator[None]:
    """On a root host the container runs as the image's user: lend it ``folders`` for the run, then
    give every file back to the invoking user. A no-op for a non-root invoking user."""
    if os.getuid() != 0:
        yield
        return
    for d in folders:
        _chown_tree(d, IMAGE_UID, IMAGE_UID)
    try:
        yield
    finally:
        for d in folders:
            if d.exists():
                _chown_tree(d, os.getuid(), os.getgid())


@dataclass
class ContainerResult:
    exit_code: int
    seconds: float
    timed_out: bool
    log_path: Path
    last_error: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    oom_killed: bool = False
    cancelled: bool = False

    @property
    def reason(self) -> str:
        if self.cancelled:
            return "interrupted (the bench was stopped)"
        if self.timed_out:
            return f"timed out after {self.timeout_s:g} s (timeout_s in manifests/models.yaml)"
        if self.oom_killed:
            return self.last_error or "killed by the kernel: out of memory (memory limit in manifests/models.yaml?)"
        if self.exit_code > 128:
            try:
                name = signal.Signals(self.exit_code - 128).name
            except ValueError:
                name = f"signal {self.exit_code - 128}"
            return f"killed ({name}) from outside the container (docker kill, another process or the host)"
        return self.last_error or EXIT_CODES.get(self.exit_code, f"exit code {self.exit_code}")


def _mounts(binds: list[Bind], out_dir: Path | None, weights_dir: Path, weights_writable: bool) -> list[Any]:
    mounts = [docker.types.Mount(b.target, b.source, type="bind", read_only=True) for b in binds]
    mounts.append(docker.types.Mount(WEIGHTS_MOUNT, str(weights_dir.resolve()), type="bind",
                                     read_only=not weights_writable))
    if out_dir is not None:
        mounts.append(docker.types.Mount("/out", str(out_dir.resolve()), type="bind", read_only=False))
    return mounts


def _wait(container: Any, timeout_s: float, cancel: threading.Event | None) -> tuple[int | None, bool, bool]:
    """(exit code, timed out, cancelled); polls so a timeout or a cancel is noticed within a second."""
    deadline = time.monotonic() + timeout_s
    while True:
        if cancel is not None and cancel.is_set():
            return None, False, True
        left = deadline - time.monotonic()
        if left <= 0:
            return None, True, False
        try:
            status = container.wait(timeout=min(1.0, left))
            return int(status.get("StatusCode", 1)), False, False
        except (requests.exceptions.RequestException, TimeoutError):
            continue


def _create(client: docker.DockerClient, image: str, args: list[str], mounts: list[Any], network: str,
            labels: dict[str, str] | None, settings: dict[str, Any]) -> Any:
    """A created (not started) container of ``image``; EngineError when the engine refuses it."""
    try:
        return client.containers.create(
            image, command=args, mounts=mounts, network_mode=network, user=container_user(),
            labels={LABEL: "1", **(labels or {})}, **settings,
        )
    except ImageNotFound:
        raise EngineError(f"image {image} is not built; run `zoobench images build`") from None
    except APIError as exc:
        raise EngineError(f"docker refused to create a container of {image}: {exc.explanation or exc}") from None


def _take_line(line: str, state: dict[str, Any], on_progress: Callable[[dict[str, Any]], None] | None) -> None:
    """Keep a progress record (and pass it on) or an ``error:`` line of the log in ``state``."""
    if line.startswith(PROGRESS_PREFIX):
        try:
            state["progress"] = json.loads(line[len(PROGRESS_PREFIX):])
        except json.JSONDecodeError:
            return
        if on_progress:
            on_progress(state["progress"])
    elif line.startswith("error: "):
        state["error"] = line[len("error: "):]


def _follow_logs(container: Any, log_path: Path, state: dict[str, Any],
                 on_progress: Callable[[dict[str, Any]], None] | None) -> None:
    """Copy the container's log into ``log_path`` while it runs, reading each line into ``state``."""
    try:
        log: Any = open(log_path, "w")
    except OSError:
        log = None  # a results folder that cannot take the log (full disk) does not stop the run
    try:
        for raw in container.logs(stream=True, follow=True):
            for line in raw.decode(errors="replace").splitlines():
                if log is not None:
                    try:
                        log.write(line + "\n")
                        log.flush()
                    except OSError:
                        log = None
                _take_line(line, state, on_progress)
    except (DockerException, requests.exceptions.RequestException):
        pass  # the container was removed under us (Ctrl-C): its exit code tells what happened
    finally:
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()


def _start_and_wait(container: Any, image: str, timeout_s: float, cancel: threading.Event | None,
                    follow: Callable[[], None]) -> tuple[int, bool, bool]:
    """Start it, ``follow`` its log, wait (killed past the timeout or on a cancel): (code, timed out, cancelled)."""
    try:
        container.start()
    except APIError as exc:
        raise EngineError(f"docker refused to start {image}: {exc.explanation or exc}") from None
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    code, timed_out, cancelled = _wait(container, timeout_s, cancel)
    if code is None:
        with contextlib.suppress(DockerException):
            container.kill()
        code = EXIT_CANCELLED if cancelled else EXIT_TIMEOUT
    follower.join(timeout=10)
    return code, timed_out, cancelled


def _remove(container: Any) -> None:
    """Remove the container and its anonymous volumes, whatever state it is in."""
    with contextlib.suppress(DockerException):
        container.remove(force=True, v=True)


def predict_in_container(
    client: docker.DockerClient,
    image: str,
    args: list[str],
    binds: list[Bind],
    out_dir: Path | None,
    weights_dir: Path,
    log_path: Path,
    timeout_s: float,
    gpu: str | None = None,
    network: str = "none",
    weights_writable: bool = False,
    environment: dict[str, str] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    labels: dict[str, str] | None = None,
    limits: Limits = Limits(),
    cancel: threading.Event | None = None,
) -> ContainerResult:
    """``predict ARGS`` in a fresh locked-down container; the log is kept in ``log_path``.
    ``network`` is a docker network name ("none": no network at all)."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    settings = {**hardened(limits), **engine_settings(client)}
    settings["environment"].update(environment or {})
    if gpu is not None:
        settings["device_requests"] = [docker.types.DeviceRequest(device_ids=[gpu], capabilities=[["gpu"]])]
    if cancel is not None and cancel.is_set():
        return ContainerResult(EXIT_CANCELLED, 0.0, False, log_path, cancelled=True)
    container = _create(client, image, args, _mounts(binds, out_dir, weights_dir, weights_writable), network,
                        labels, settings)
    state: dict[str, Any] = {"error": None, "progress": {}}
    start = time.monotonic()
    try:
        if cancel is not None and cancel.is_set():
            return ContainerResult(EXIT_CANCELLED, 0.0, False, log_path, cancelled=True)
        code, timed_out, cancelled = _start_and_wait(
            container, image, timeout_s, cancel, lambda: _follow_logs(container, log_path, state, on_progress))
        oom = False
        if code == 137 and not (timed_out or cancelled):
            with contextlib.suppress(DockerException):
                container.reload()
                oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            if oom:
                state["error"] = state["error"] or "killed by the kernel: out of memory"
                code = 3
        return ContainerResult(code, time.monotonic() - start, timed_out, log_path, state["error"], state["progress"],
                               timeout_s=timeout_s, oom_killed=oom, cancelled=cancelled)
    finally:
        _remove(container)


def remove_containers(client: docker.DockerClient, results: str, keep_run: str | None = None) -> int:
    """Remove the containers of a results folder, except those of run ``keep_run`` (the live one).

    Only the holder of the folder's lock calls this, so every other run's containers are leftovers.
    """
    found = client.containers.list(all=True, filters={"label": [f"{LABEL_RESULTS}={results}"]})
    removed = 0
    for c in found:
        if keep_run is not None and c.labels.get(LABEL_RUN) == keep_run:
            continue
        with contextlib.suppress(NotFound):
            c.remove(force=True, v=True)
            removed += 1
    return removed


def kill_run(client: docker.DockerClient, run_id: str) -> int:
    """Kill and remove every container of one run (Ctrl-C, SIGTERM)."""
    found = client.containers.list(all=True, filters={"label": [f"{LABEL_RUN}={run_id}"]})
    for c in found:
        with contextlib.suppress(DockerException):
            c.remove(force=True, v=True)
    return len(found)


def predict_json(client: docker.DockerClient, image: str, verb: str) -> Any:
    """Run ``predict list`` or ``predict info`` and parse its JSON. The container and its anonymous
    volumes (the image declares ``VOLUME /weights``) are removed afterwards, whatever happened."""
    settings = {**hardened(), **engine_settings(client)}
    try:
        container = client.containers.create(image, command=[verb], network_mode="none", user=container_user(),
                                             labels={LABEL: "1"}, **settings)
    except ImageNotFound:
        raise EngineError(f"image {image} is not built; run `zoobench images build`") from None
    except APIError as exc:
        raise EngineError(f"the engine refused `predict {verb}` in {image}: {exc.explanation or exc}") from None
    try:
        container.start()
        code = int(container.wait(timeout=600).get("StatusCode", 1))
        raw = container.logs(stdout=True, stderr=False)
        if code != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()[-300:]
            raise EngineError(f"`predict {verb}` failed in {image} (exit code {code}): {err}")
    except (APIError, requests.exceptions.RequestException) as exc:
        raise EngineError(f"the engine refused `predict {verb}` in {image}: {getattr(exc, 'explanation', None) or exc}") from None
    finally:
        _remove(container)
    try:
        return json.loads(raw)
    except ValueError:
        raise EngineError(f"`predict {verb}` in {image} printed no JSON; rebuild the image") from None
