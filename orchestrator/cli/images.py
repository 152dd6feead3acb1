"""``zoobench models`` and ``zoobench images build|list|export|load``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ..bench import containers, imagefacts
from ..errors import BenchError
from ..images import build as images
from ..images import manifest as image_manifest
from ..images import store
from ..images.ensure import ensure_built
from ..paths import ROOT
from . import options
from .output import console, out

images_app = typer.Typer(no_args_is_help=True, help="Build and list the framework images.")


def models_cmd(
    image: str = typer.Argument(..., help="image name from manifests/images.yaml"),
    variant: Optional[str] = options.Variant,
    manifests: Path = options.Manifests,
) -> None:
    """List the models an image serves, with their preprocessing (cached per image tag, with its image id,
    for `k8s render` and for a Slurm submit host that has no container engine)."""
    client = containers.connect()
    tags = imagefacts.image_tags(manifests, variant or "cpu")
    if image not in tags:
        raise BenchError(f"unknown image {image!r}; manifests/images.yaml defines {', '.join(sorted(tags))}")
    imagefacts.image_id(client, tags[image])  # must be built; remembered, like the listing, for hosts with no engine
    listing = list(imagefacts.served_models(client, tags[image]).values())  # cached: `k8s render` and Slurm use it offline
    table = Table(title=f"{image} ({tags[image]}): {len(listing)} models")
    for col in ("model", "crop", "resize", "interp", "mode", "weights"):
        table.add_column(col)
    for m in listing:
        p = m["preprocessing"]
        table.add_row(m["name"], str(p["crop_size"]), str(p["resize_size"]), p["interpolation"], p["mode"], m["weights"])
    out.print(table)


def images_build(
    names: Optional[list[str]] = typer.Argument(None, help="images to build (default: all)"),
    variant: str = typer.Option("cpu", "--variant", help="cpu|cuda, or e.g. cuda,mxnet=cpu (IMAGE=VARIANT overrides)"),
    manifests: Path = options.Manifests,
) -> None:
    """Build images whose content hash changed (an unchanged image is never rebuilt)."""
    from ..bench.variants import parse_variants

    specs = image_manifest.load_manifest(manifests / "images.yaml")
    variants = parse_variants(variant, [], specs)  # a bad --variant is one line before the engine is asked
    client = containers.connect()
    for name in names or sorted(specs):
        images_build_one(client, name, variants.of(name), manifests)


def images_build_one(client: Any, name: str, variant: str, manifests: Path) -> str:
    """Build image ``name`` unless it is up to date (:func:`orchestrator.images.ensure.ensure_built`)."""
    return ensure_built(client, name, variant, manifests, console, ROOT)


def images_export(
    names: Optional[list[str]] = typer.Argument(None, help="images to export (default: all)"),
    to: Path = typer.Option(..., "--to", help="folder on the shared filesystem the nodes can read"),
    variant: str = typer.Option("cpu", "--variant"),
    manifests: Path = options.Manifests,
) -> None:
    """Save built images as tar files (docker save) for nodes that cannot build them."""
    store.check_folder(to)  # a bad --to is one line before the engine is asked anything
    client = containers.connect()
    tags = imagefacts.image_tags(manifests, variant)
    unknown = [n for n in names or [] if n not in tags]
    if unknown:
        raise BenchError(f"unknown image(s) {', '.join(unknown)}; manifests/images.yaml defines {', '.join(sorted(tags))}")
    store.export(client, [tags[n] for n in names or sorted(tags)], to, lambda m: console.print(m, highlight=False))


def images_load(folder: Path = typer.Argument(..., help="a folder written by `zoobench images export`"),
                runtime: str = options.Runtime) -> None:
    """Load every exported image of FOLDER into this node's container engine (docker load)."""
    client = containers.connect(runtime)
    for tag in store.load_all(client, folder):
        console.print(f"loaded {tag}", highlight=False)


def images_list(variant: str = typer.Option("cpu", "--variant"), manifests: Path = options.Manifests) -> None:
    """Show each image's content-hash tag and whether it is built."""
    client = containers.connect()
    specs = image_manifest.load_manifest(manifests / "images.yaml")
    table = Table()
    for col in ("image", "variant", "tag", "built"):
        table.add_column(col)
    for name, spec in sorted(specs.items()):
        tag = images.image_tag(spec, spec.serving(variant), ROOT)
        table.add_row(name, spec.serving(variant), tag, "yes" if images.image_exists(client, tag) else "[red]no")
    out.print(table)


images_app.command("build")(images_build)
images_app.command("export")(images_export)
images_app.command("load")(images_load)
images_app.command("list")(images_list)
