"""``zoobench convert``: export models of a source image to ONNX into the conversions cache
(:mod:`orchestrator.convert`), one line per model; exit 1 when one failed."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..bench import containers, imagefacts
from ..convert.needs import conversions_of, runtime_images
from ..convert.records import Conversion
from ..convert.service import DEFAULT_OPSET, convert_all
from ..errors import ConvertError
from ..images import manifest as image_manifest
from ..images.ensure import ensure_built
from ..manifests import get_profile
from . import options
from .output import console, out

FORMATS = ("onnx",)


def models_to_convert(source: str, models: list[str] | None, profile: str | None, weights: str | None,
                      manifests: Path, tags: dict[str, str]) -> list[Conversion]:
    """``--model`` names, or the profile's models of ``source`` and the ``source.*`` models its runtime images list."""
    if models:
        return [Conversion(source, tags[source], m, weights or "imagenet") for m in models]
    if profile is None:
        raise ConvertError("zoobench convert: give --model NAME (repeatable) or --profile NAME")
    prof = get_profile(profile, manifests)
    specs = image_manifest.load_manifest(manifests / "images.yaml")
    wanted = prof.models.get(source)
    own = [Conversion(source, tags[source], m, weights or prof.weights_for(source))
           for m in (wanted if isinstance(wanted, list) else [])]
    served = [c for c in conversions_of(prof, specs, tags, weights=weights) if c.source == source]
    found = own + [c for c in served if c not in own]
    if not found:
        raise ConvertError(f"profile {profile!r} lists no models of {source} (nor {source}.MODEL for a runtime image); "
                           "give --model NAME")
    return found


def convert(
    source: str = typer.Option(..., "--from", help="the source image (manifests/images.yaml), e.g. pytorch"),
    to: str = typer.Option("onnx", "--to", help="the format: onnx"),
    model: Optional[list[str]] = typer.Option(None, "--model", help="models of the source image (repeatable)"),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="convert the models this profile needs"),
    weights: Optional[str] = typer.Option(None, "--weights", help="imagenet | imagenet:VARIANT | random "
                                          "(default: the profile's, else imagenet)"),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", min=7, help="ONNX opset"),
    variant: str = typer.Option("cpu", "--variant", help="the source image's variant (cpu|cuda)"),
    force: bool = typer.Option(False, "--force", help="convert again even when the record matches"),
    build: bool = typer.Option(True, "--build/--no-build", help="build the source image first when missing"),
    runtime: str = options.Runtime,
    manifests: Path = options.Manifests,
) -> None:
    """Export models to ONNX inside their source image; runtime images (onnxruntime, openvino) serve them."""
    if to not in FORMATS:
        raise ConvertError(f"--to {to!r}: use {'|'.join(FORMATS)}")
    if weights is not None and weights != "random" and not weights.startswith("imagenet"):
        raise ConvertError(f"--weights {weights}: a conversion takes imagenet, imagenet:VARIANT or random")
    specs = image_manifest.load_manifest(manifests / "images.yaml")
    if source not in specs:
        raise ConvertError(f"--from {source!r}: no such image in manifests/images.yaml ({', '.join(sorted(specs))})")
    if source in runtime_images(specs):
        raise ConvertError(f"--from {source}: a runtime image serves converted models; convert from the image that "
                           f"trained them ({', '.join(sorted(set(specs) - runtime_images(specs)))})")
    tags = imagefacts.tags_of(specs, variant)
    conversions = models_to_convert(source, model, profile, weights, manifests, tags)
    client = containers.connect(runtime)
    if build:
        ensure_built(client, source, variant, manifests, console)
    outcomes = convert_all(client, conversions, lambda o: out.print(o.line(), highlight=False, soft_wrap=True),
                           force=force, opset=opset)
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)
