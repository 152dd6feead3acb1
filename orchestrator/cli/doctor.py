"""``zoobench doctor``: the container engine, GPUs, images, container limits, Slurm and data, checked."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import typer

from zoobench_contract.dataset import DataError, list_images

from ..bench import containers, imagefacts
from ..engines import slurm
from ..errors import EngineError, ManifestError
from ..images import build as images
from ..manifests import load_models
from . import options
from .output import out


def doctor(
    data: Optional[Path] = typer.Option(None, "--data"),
    variant: str = typer.Option("cpu", "--variant"),
    manifests: Path = options.Manifests,
) -> None:
    """Check the Docker engine, the GPU runtime, the images and the data layout."""
    problems = 0

    def line(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += not ok
        out.print(f"[{'green' if ok else 'red'}]{'ok ' if ok else 'BAD'}[/] {what}: {detail}")

    try:
        client = containers.connect()
        line(True, "docker engine", client.version().get("Version", "?"))
    except EngineError as exc:
        line(False, "docker engine", str(exc))
        raise typer.Exit(1) from None
    runtimes = client.info().get("Runtimes", {})
    smi = shutil.which("nvidia-smi")
    gpu_text = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip() if smi else ""
    out.print(f"    GPUs: {gpu_text or 'none visible (CPU runs only)'}; nvidia runtime: {'nvidia' in runtimes}")
    try:
        tags = imagefacts.image_tags(manifests, variant)
        for name, tag in sorted(tags.items()):
            line(images.image_exists(client, tag), f"image {name}", tag if images.image_exists(client, tag)
                 else f"{tag} not built: run `zoobench images build --variant {variant}`")
    except ManifestError as exc:
        line(False, "manifests", str(exc))
    try:
        defaults = load_models(manifests).defaults
        out.print(f"    containers: no capabilities, no-new-privileges, read-only root with tmpfs /tmp, "
                  f"{containers.PIDS_LIMIT} PIDs, memory limit {defaults.memory or 'none'} "
                  "(defaults.memory / models.IMAGE/MODEL.memory in manifests/models.yaml)")
    except ManifestError as exc:
        line(False, "manifests", str(exc))
    out.print(f"    slurm: {slurm.cluster_summary()}", highlight=False)
    if shutil.which("podman") or os.environ.get("CONTAINER_HOST"):
        try:
            podman = containers.connect("podman").version().get("Version", "?")
            out.print(f"    podman API: {podman} at {containers.podman_socket()} (--runtime podman)", highlight=False)
        except EngineError as exc:
            out.print(f"    podman API: {exc}", highlight=False)
    if data is not None:
        try:
            found = list_images(data)
            classes = {p.split("/")[0] for p in found if "/" in p}
            line(True, "data", f"{data}: {len(found)} images in {len(classes)} folders (`zoobench data check` for details)")
        except DataError as exc:
            line(False, "data", str(exc))
    if problems:
        raise typer.Exit(1)
