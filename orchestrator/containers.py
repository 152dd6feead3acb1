"""Run one model in one container: data read-only, output writable, no network, a time limit."""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import docker
from docker.errors import APIError, DockerException, ImageNotFound

PROGRESS_PREFIX = "zoobench-progress "  # written by the contract CLI (zoobench_contract.cli)
EXIT_CODES = {0: "ok", 2: "bad input", 3: "out of memory", 4: "weights unavailable", 137: "killed (out of memory?)"}


IMAGE_UID = 1000  # the non-root user of every runner image (images/*/Dockerfile)


class EngineError(RuntimeError):
    """The Docker engine is unreachable or refused a request; one actionable line."""


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except DockerException:
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


@dataclass
class ContainerResult:
    exit_code: int
    seconds: float
    timed_out: bool
    log_path: Path
    last_error: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        if self.timed_out:
            return "timed out"
        return self.last_error or EXIT_CODES.get(self.exit_code, f"exit code {self.exit_code}")


def predict_in_container(
    client: docker.DockerClient,
    image: str,
    args: list[str],
    data_dir: Path,
    out_dir: Path,
    weights_dir: Path,
    log_path: Path,
    timeout_s: float,
    gpu: str | None = None,
    network: bool = False,
    environment: dict[str, str] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    labels: dict[str, str] | None = None,
) -> ContainerResult:
    """``predict ARGS`` in a fresh container; the log is kept in ``log_path``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    volumes = {
        str(out_dir.resolve()): {"bind": "/out", "mode": "rw"},
        str(weights_dir.resolve()): {"bind": "/weights", "mode": "rw"},
    }
    if data_dir is not None:
        volumes[str(data_dir.resolve())] = {"bind": "/data", "mode": "ro"}
    user = None if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    if user is None:  # root host: keep the image's non-root user and let it write its folders
        for d in (out_dir, weights_dir):
            os.chown(d, IMAGE_UID, IMAGE_UID)
    device_requests = []
    if gpu is not None:
        device_requests = [docker.types.DeviceRequest(device_ids=[gpu], capabilities=[["gpu"]])]
    env = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1", **(environment or {})}
    try:
        container = client.containers.run(
            image,
            command=args,
            detach=True,
            volumes=volumes,
            network_mode="bridge" if network else "none",
            user=user,
            environment=env,
            device_requests=device_requests or None,
            shm_size="1g",
            labels={"zoobench": "1", **(labels or {})},
        )
    except ImageNotFound:
        raise EngineError(f"image {image} is not built; run `zoobench images build`") from None
    except APIError as exc:
        raise EngineError(f"docker refused to start {image}: {exc.explanation or exc}") from None

    state: dict[str, Any] = {"error": None, "progress": {}}

    def follow_logs() -> None:
        with open(log_path, "w") as log:
            for raw in container.logs(stream=True, follow=True):
                for line in raw.decode(errors="replace").splitlines():
                    log.write(line + "\n")
                    log.flush()
                    if line.startswith(PROGRESS_PREFIX):
                        try:
                            state["progress"] = json.loads(line[len(PROGRESS_PREFIX):])
                        except json.JSONDecodeError:
                            continue
                        if on_progress:
                            on_progress(state["progress"])
                    elif line.startswith("error: "):
                        state["error"] = line[len("error: "):]

    follower = threading.Thread(target=follow_logs, daemon=True)
    follower.start()
    start = time.monotonic()
    timed_out = False
    try:
        try:
            status = container.wait(timeout=timeout_s)
            code = int(status.get("StatusCode", 1))
        except Exception:  # requests' ReadTimeout: the model ran past its limit
            timed_out = True
            container.kill()
            code = 124
        follower.join(timeout=10)
        if code == 137 and not timed_out:
            container.reload()
            if container.attrs.get("State", {}).get("OOMKilled"):
                state["error"] = state["error"] or "container killed by the kernel: out of memory"
                code = 3
    finally:
        try:
            container.remove(force=True)
        except DockerException:
            pass
    return ContainerResult(code, time.monotonic() - start, timed_out, log_path, state["error"], state["progress"])


def remove_leftovers(client: docker.DockerClient, labels: dict[str, str]) -> int:
    """Kill containers a previous, interrupted run left behind (matched by label)."""
    found = client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
    for c in found:
        c.remove(force=True)
    return len(found)


def predict_json(client: docker.DockerClient, image: str, verb: str) -> Any:
    """Run ``predict list`` or ``predict info`` and parse its JSON."""
    try:
        raw = client.containers.run(image, command=[verb], remove=True, network_mode="none",
                                    stdout=True, stderr=False, environment={"HOME": "/tmp"})
    except ImageNotFound:
        raise EngineError(f"image {image} is not built; run `zoobench images build`") from None
    except docker.errors.ContainerError as exc:
        raise EngineError(f"`predict {verb}` failed in {image}: {exc.stderr.decode(errors='replace').strip()[-300:]}") from None
    return json.loads(raw)
