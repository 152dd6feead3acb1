"""``zoobench weights fetch|export|import``: the pretrained weights of a profile's models into
.cache/weights (``$ZOOBENCH_WEIGHTS_CACHE``), from the internet, a site mirror, or an export folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

from zoobench_contract.mirror import check_mirror

from ..bench import containers, imagefacts, weightstore
from ..bench.plan import plan_jobs
from ..bench.weights import fetch_weights
from ..convert.needs import with_sources
from ..engines import k8s_inputs
from ..errors import BenchError
from ..images import manifest as image_manifest
from ..manifests import get_profile, load_models
from ..paths import LOGS, WEIGHTS_CACHE
from . import options
from .output import console

weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights into the cache: fetch (network or a site "
                          "mirror), or export here and import on a host with no network.")


@weights_app.command("fetch")
def weights_fetch(
    profile: str = typer.Option("full", "--profile", "-p"),
    model: Optional[list[str]] = typer.Option(None, "--model"),
    variant: str = typer.Option("cpu", "--variant"),
    network: str = typer.Option("bridge", "--network", help="docker network for the downloads (e.g. one with a proxy)"),
    mirror: Optional[str] = typer.Option(None, "--mirror", help="a site's HTTP mirror of the official URLs: "
                                         "https://HOST/PATH is fetched from MIRROR/HOST/PATH"),
    manifests: Path = options.Manifests,
) -> None:
    """Download the pretrained weights of a profile's models into .cache/weights (the only networked
    step). Exits 1 when any model's weights could not be fetched."""
    mirror = checked_mirror(mirror)
    prof = source_profile(profile, manifests)
    client = containers.connect()
    tags = imagefacts.image_tags(manifests, variant)
    for name in sorted(set(prof.models)):
        containers.require_image(client, tags[name])
    jobs = plan_jobs(prof, load_models(manifests), tags, lambda img: imagefacts.served_models(client, tags[img]), only=model)
    report = fetch_weights(client, jobs, WEIGHTS_CACHE, LOGS, network, mirror)
    for what, names in report.groups.items():
        console.print(f"{what}: {len(names)} ({', '.join(names)})", highlight=False, soft_wrap=True)
    if report.failures:
        for cause, names in report.failures.items():
            console.print(f"[red]could not fetch {len(names)}: {', '.join(names)}: {cause}", highlight=False,
                          soft_wrap=True)
        console.print(f"[red]error: weights of {report.failed} of {report.total} model(s) could not be fetched "
                      f"(logs in {LOGS}); `zoobench run` reports them as skipped", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def checked_mirror(mirror: str | None) -> str | None:
    if mirror is None:
        return None
    try:
        return check_mirror(mirror)
    except ValueError as exc:
        raise BenchError(f"--mirror: {exc}") from None


@weights_app.command("export")
def weights_export(
    to: Path = typer.Option(..., "--to", help="a new folder for the weights files and weights-manifest.json"),
    profile: str = typer.Option("full", "--profile", "-p"),
    model: Optional[list[str]] = typer.Option(None, "--model"),
    variant: str = typer.Option("cpu", "--variant"),
    models_from: Optional[list[str]] = typer.Option(None, "--models-from",
                                                    help="IMAGE=FILE: that image's `predict list` JSON (repeatable)"),
    manifests: Path = options.Manifests,
) -> None:
    """Copy every weights file the profile's models read from .cache/weights into a new folder, with a
    manifest of sizes and sha256, for `zoobench weights import` on a host with no network. Exits 1
    (writing nothing) when a file is not in the cache."""
    prof = source_profile(profile, manifests)
    tags = imagefacts.image_tags(manifests, variant)
    served = export_listings(tags, k8s_inputs.parse_models_from(models_from, list(prof.models)))
    jobs = plan_jobs(prof, load_models(manifests), tags, served, only=model)
    plan = weightstore.plan_export(jobs, WEIGHTS_CACHE, served, f"zoobench weights fetch --profile {profile}")
    if plan.missing:
        for line in plan.missing:
            console.print(f"[red]missing: {line}", highlight=False, soft_wrap=True)
        console.print(f"[red]error: {len(plan.missing)} weights file(s) of profile {profile!r} cannot be exported "
                      f"(nothing written); fetch them first", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    manifest = weightstore.write_export(plan, WEIGHTS_CACHE, to, profile)
    for why, names in plan.nothing.items():
        console.print(f"need no file ({why}): {len(names)} ({', '.join(names)})", highlight=False, soft_wrap=True)
    size = sum(f.size for f in manifest.files)
    console.print(f"exported {len(manifest.files)} weights file(s), {size / 1e6:.1f} MB, to {to} "
                  "(carry the folder to the cluster; then `zoobench weights import FOLDER` there)", highlight=False, soft_wrap=True)


def export_listings(tags: dict[str, str], models_from: dict[str, Path]) -> Callable[[str], dict[str, dict[str, Any]]]:
    """Each image's `predict list`: ``--models-from``, else the cached one, else asked of the image."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    engine: list[Any] = []

    def served(image: str) -> dict[str, dict[str, Any]]:
        if image not in found:
            listing = (k8s_inputs.read_listing(models_from[image], image) if image in models_from
                       else imagefacts.cached_listing(tags[image]))
            if listing is None:
                if not engine:
                    engine.append(containers.connect())
                listing = list(imagefacts.served_models(engine[0], tags[image]).values())
            found[image] = {m["name"]: m for m in listing}
        return found[image]

    return served


@weights_app.command("import")
def weights_import(
    folder: Path = typer.Argument(..., help="the folder `zoobench weights export --to` made"),
) -> None:
    """Check every file of an export (size and sha256 against its weights-manifest.json) and add the
    ones .cache/weights lacks, all or nothing; then `zoobench run` needs no network for them."""
    report = weightstore.import_weights(folder, WEIGHTS_CACHE)
    for what, entries in (("added", report.added), ("already had", report.had)):
        for entry in entries:
            needs = ", ".join(f"{n.image}/{n.model}" for n in entry.needed_by)
            console.print(f"{what}: {entry.path} ({entry.size / 1e6:.1f} MB; {needs})", highlight=False, soft_wrap=True)
    console.print(f"imported {len(report.added)} file(s), {len(report.had)} already there, into {WEIGHTS_CACHE}",
                  highlight=False, soft_wrap=True)


def source_profile(profile: str, manifests: Path) -> Any:
    """The profile with its runtime images' converted models counted as their source image's: a conversion
    reads the source's weights (a runtime image has none of its own)."""
    return with_sources(get_profile(profile, manifests), image_manifest.load_manifest(manifests / "images.yaml"))
