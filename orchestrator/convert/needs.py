"""Which conversions a bench needs: the ``SOURCE.MODEL`` names a profile lists for its runtime images
(images.yaml ``reads:``), each with the weights that runtime runs, checked before anything is built."""
from __future__ import annotations

from typing import Any, Iterable

from ..errors import ConvertError
from ..images.manifest import ImageSpec
from .records import Conversion


def split_name(name: str, sources: Iterable[str]) -> tuple[str, str] | None:
    """``SOURCE.MODEL`` -> (SOURCE, MODEL) for the longest image name SOURCE of ``sources``; None if none fits."""
    for source in sorted(sources, key=len, reverse=True):
        if name.startswith(source + ".") and len(name) > len(source) + 1:
            return source, name[len(source) + 1:]
    return None


def runtime_images(specs: dict[str, ImageSpec]) -> set[str]:
    """The images that serve converted models (images.yaml ``reads:``)."""
    return {name for name, spec in specs.items() if spec.reads}


def selected(only: list[str] | None, image: str, name: str) -> bool:
    """Whether ``--model`` (names or IMAGE/MODEL) keeps ``name`` of ``image``; no --model keeps every one."""
    return not only or any(o in (name, f"{image}/{name}") for o in only)


def source_of(image: str, name: str, specs: dict[str, ImageSpec]) -> tuple[str, str]:
    """(source image, model) of the runtime model ``name``, or one line saying how to name it."""
    sources = [n for n, s in specs.items() if not s.reads]
    found = split_name(name, sources)
    if found is None:
        raise ConvertError(f"manifests/profiles.yaml: {image} model {name!r}: a runtime image serves converted models "
                           f"named SOURCE.MODEL, SOURCE one of {', '.join(sorted(sources))} (e.g. "
                           f"pytorch.efficientnet_lite0)")
    return found


def conversions_of(profile: Any, specs: dict[str, ImageSpec], tags: dict[str, str], only: list[str] | None = None,
                   weights: str | None = None) -> list[Conversion]:
    """The conversions the profile's runtime images need (narrowed by ``--model``), in profile order, once each."""
    out: list[Conversion] = []
    for image, wanted in profile.models.items():
        spec = specs.get(image)
        if spec is None or not spec.reads:
            continue
        if wanted == "all":
            raise ConvertError(f"manifests/profiles.yaml: models.{image}: `all` means nothing for a runtime image; "
                               "list the converted models as SOURCE.MODEL (e.g. pytorch.resnet50)")
        for name in wanted:
            if not selected(only, image, name):
                continue
            source, model = source_of(image, name, specs)
            conv = Conversion(source, tags[source], model, weights or profile.weights_for(image), spec.reads)
            if conv not in out:
                out.append(conv)
    return out


def sources_needed(conversions: list[Conversion]) -> list[str]:
    """The source images the conversions run in."""
    return sorted({c.source for c in conversions})


def with_sources(profile: Any, specs: dict[str, ImageSpec]) -> Any:
    """``profile`` with each runtime image's ``SOURCE.MODEL`` models moved to SOURCE's list (what ``weights
    fetch`` and ``weights export`` need: a conversion reads the source image's weights)."""
    runtimes = runtime_images(specs)
    if not runtimes & set(profile.models):
        return profile
    models: dict[str, Any] = {i: (list(m) if isinstance(m, list) else m) for i, m in profile.models.items()
                              if i not in runtimes}
    for image, wanted in profile.models.items():
        if image in runtimes and isinstance(wanted, list):
            for name in wanted:
                source, model = source_of(image, name, specs)
                own = models.setdefault(source, [])
                if isinstance(own, list) and model not in own:
                    own.append(model)
    return profile.model_copy(update={"models": models})
