"""``zoobench weights fetch``: the pretrained weights of a profile's models into .cache/weights."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..bench import containers, imagefacts
from ..bench.plan import plan_jobs
from ..bench.weights import fetch_weights
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
    report = fetch_weights(client, jobs, WEIGHTS_CACHE, LOGS, network)
    for what, names in report.groups.items():
        console.print(f"{what}: {len(names)} ({', '.join(names)})", highlight=False, soft_wrap=True)
    if report.failures:
        for cause, names in report.failures.items():
            console.print(f"[red]could not fetch {len(names)}: {', '.join(names)}: {cause}", highlight=False,
                          soft_wrap=True)
        console.print(f"[red]error: weights of {report.failed} of {report.total} model(s) could not be fetched "
                      f"(logs in {LOGS}); `zoobench run` reports them as skipped", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
