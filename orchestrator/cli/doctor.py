"""``zoobench doctor``: the container engine, GPUs, images, container limits, Slurm and data, checked."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import typer

from zoobench_contract.dataset import DataError, list_images

from ..bench import containers, gpus, imagefacts
from ..engines import slurm
from ..errors import EngineError, ImageManifestError, ManifestError
from ..images import build as images
from ..images import manifest as image_manifest
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
        out.print(f"[{'green' if ok else 'red'}]{'ok ' if ok else 'BAD'}[/] {what}: {detail}", soft_wrap=True)

    gpu_lines(manifests, line)  # first: which images serve which GPU needs no engine
    try:
        client = containers.connect()
        line(True, "docker engine", client.version().get("Version", "?"))
    except EngineError as exc:
        line(False, "docker engine", str(exc))
        raise typer.Exit(1) from None
    runtimes = client.info().get("Runtimes", {})
    out.print(f"    nvidia runtime: {'nvidia' in runtimes}")
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


def gpu_lines(manifests: Path, line: Callable[[bool, str, str], None]) -> None:
    """Each GPU (nvidia-smi), then whether each cuda image of images.yaml serves it, one line each."""
    host = gpus.host_gpus()
    if not host:
        out.print("    GPUs: none visible (CPU runs only)")
        return
    for gpu in host:
        cap = f"{gpu.capability[0]}.{gpu.capability[1]}" if gpu.capability else "unknown"
        out.print(f"    GPU {gpu.index}: {gpu.name}, compute capability {cap} ({gpu.sm}), driver {gpu.driver}",
                  highlight=False, soft_wrap=True)
    try:
        for ok, what, detail in gpus.serving_lines(image_manifest.load_manifest(manifests / "images.yaml"), host):
            if ok is None:
                out.print(f"    {what}: {detail}", highlight=False, soft_wrap=True)
            else:
                line(ok, what, detail)
    except (ManifestError, ImageManifestError) as exc:
        line(False, "manifests", str(exc))
