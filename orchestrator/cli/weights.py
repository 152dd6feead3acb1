"""``zoobench weights fetch``: the pretrained weights of a profile's models into .cache/weights."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer

from ..bench import containers, imagefacts
from ..bench.plan import plan_jobs
from ..manifests import get_profile, load_models
from ..paths import LOGS, WEIGHTS_CACHE
from . import options
from .output import console

weights_app = typer.Typer(no_args_is_help=True, help="Fetch pretrained weights into the cache (needs network).")


@weights_app.command("fetch")
def weights_fetch(
    profile: str = typer.Option("full", "--profile", "-p"),
    model: Optional[list[str]] = typer.Option(None, "--model"),
    variant: str = typer.Option("cpu", "--variant"),
    network: str = typer.Option("bridge", "--network", help="docker network for the downloads (e.g. one with a proxy)"),
    manifests: Path = options.Manifests,
) -> None:
    """Download the pretrained weights of a profile's models into .cache/weights (the only networked
    step). Exits 1 when any model's weights could not be fetched."""
    prof = get_profile(profile, manifests)
    client = containers.connect()
    tags = imagefacts.image_tags(manifests, variant)
    for name in sorted(set(prof.models)):
        containers.require_image(client, tags[name])
    jobs = plan_jobs(prof, load_models(manifests), tags, lambda img: imagefacts.served_models(client, tags[img]), only=model)
    groups: dict[str, list[str]] = {}
    failures: dict[str, list[str]] = {}
    weights_dir = WEIGHTS_CACHE
    weights_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        name = f"{job.image}/{job.model}"
        if not job.weights.startswith("imagenet"):
            groups.setdefault(f"need nothing ({job.weights} weights)", []).append(name)
            continue
        log = LOGS / f"fetch-{job.run_name}.log"
        with containers.handed_over(weights_dir):
            result = containers.predict_in_container(
                client, job.tag, ["fetch", "--model", job.model, "--weights", job.weights], [], None, weights_dir,
                log_path=log, timeout_s=1800, network=network, weights_writable=True)
        if result.exit_code == 0:
            status = fetch_status(log)
            groups.setdefault({"bundled": "bundled in the image", "cached": "already cached"}.get(status, "fetched"),
                              []).append(name)
        else:
            failures.setdefault(failure_cause(result.reason, job.model), []).append(name)
    for what, names in groups.items():
        console.print(f"{what}: {len(names)} ({', '.join(names)})", highlight=False, soft_wrap=True)
    if failures:
        for cause, names in failures.items():
            console.print(f"[red]could not fetch {len(names)}: {', '.join(names)}: {cause}", highlight=False,
                          soft_wrap=True)
        failed = sum(map(len, failures.values()))
        console.print(f"[red]error: weights of {failed} of {len(jobs)} model(s) could not be fetched (logs in "
                      f"{LOGS}); `zoobench run` reports them as skipped", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


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
