"""Pretrained weights fetched into the host cache: one networked ``predict fetch`` container per job.

``fetch_weights`` runs them and returns a :class:`FetchReport` (what each model needed, what failed
and why); the CLI only prints it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoobench_contract.mirror import MIRROR_ENV

from . import containers
from .plan import Job

FETCH_TIMEOUT_S = 1800
STATUS_GROUPS = {"bundled": "bundled in the image", "cached": "already cached"}  # anything else: "fetched"


@dataclass
class FetchReport:
    """``groups``: what happened -> IMAGE/MODEL names; ``failures``: cause -> names; ``total``: jobs seen."""

    groups: dict[str, list[str]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    total: int = 0

    @property
    def failed(self) -> int:
        return sum(map(len, self.failures.values()))


def fetch_weights(client: Any, jobs: list[Job], weights_dir: Path, logs: Path, network: str,
                  mirror: str | None = None) -> FetchReport:
    """``predict fetch`` for every job with ImageNet weights (others need nothing), into ``weights_dir``;
    each container's log is ``logs/fetch-RUN.log``. ``mirror``: a base URL laid out like the official
    ones (``MIRROR/HOST/PATH``, zoobench_contract.mirror) that every download goes to instead."""
    report = FetchReport(total=len(jobs))
    weights_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        name = f"{job.image}/{job.model}"
        if not job.weights.startswith("imagenet"):
            report.groups.setdefault(f"need nothing ({job.weights} weights)", []).append(name)
            continue
        log = logs / f"fetch-{job.run_name}.log"
        with containers.handed_over(weights_dir):
            result = containers.predict_in_container(
                client, job.tag, ["fetch", "--model", job.model, "--weights", job.weights], [], None, weights_dir,
                log_path=log, timeout_s=FETCH_TIMEOUT_S, network=network, weights_writable=True,
                environment={MIRROR_ENV: mirror} if mirror else None)
        if result.exit_code == 0:
            report.groups.setdefault(STATUS_GROUPS.get(fetch_status(log), "fetched"), []).append(name)
        else:
            report.failures.setdefault(failure_cause(result.reason, job.model), []).append(name)
    return report


def fetch_status(log: Path) -> str:
    """``fetched``, ``cached`` or ``bundled``, from the JSON line ``predict fetch`` prints last."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return str(json.loads(line).get("status", "fetched"))
            except ValueError:
                break
    return "fetched"


def failure_cause(reason: str, model: str) -> str:
    """A fetch failure's cause without what is particular to one model (URL, name), so models
    failing for the same reason are listed once."""
    os_error = re.search(r"\[Errno [^\]]+\][^)(;>]*", reason)
    if os_error:
        return os_error.group(0).strip()
    return reason.removeprefix(f"{model}: ")
