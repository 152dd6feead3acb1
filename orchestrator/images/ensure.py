"""Make sure one image of manifests/images.yaml is built, showing the build live on a console."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import BenchError
from ..paths import ROOT
from . import build as images
from . import manifest as image_manifest


def ensure_built(client: Any, name: str, variant: str, manifests: Path, console: Console, root: Path = ROOT) -> str:
    """The tag of image ``name`` for ``variant``, built first when it is not (an unchanged image never is)."""
    specs = image_manifest.load_manifest(manifests / "images.yaml")
    if name not in specs:
        raise BenchError(f"unknown image {name!r}; manifests/images.yaml defines {', '.join(sorted(specs))}")
    tag = images.image_tag(specs[name], variant, root)
    if images.image_exists(client, tag):
        console.print(f"{name} ({variant}): {tag} up to date")
        return tag
    from .livestatus import LiveStatus, elapsed_text

    console.print(f"{name} ({variant}): building {tag} ...", highlight=False)
    with LiveStatus(console, f"{name} ({variant})") as status:  # step, elapsed, last line; failures: the log
        images.build(specs[name], variant, root, client, on_log=status.log, on_step=status.step)
    console.print(f"{name} ({variant}): built {tag} in {elapsed_text(status.elapsed)}", highlight=False)
    return tag
