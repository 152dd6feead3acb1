"""What the bench knows about each runner image, cached per image tag under ``.cache/models``.

An image's tag is a content hash, so its `predict list`, `predict info` and image id never change
for that tag: each is asked once of a container and kept as ``<tag-stem>.json``, ``.info.json`` and
``.id.json``; so are a model's facts (`predict facts`: parameters, multiply-adds) per input size, as
``<tag-stem>/facts/<model>-<crop>.json``. A host without a container engine (a Slurm login node, ``k8s render``) plans from
these files alone; ``client=None`` means such a host, and a missing fact is one line saying how to
cache it.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from zoobench_contract.outputs import atomic_write, write_json

from ..errors import BenchError
from ..images import build as images
from ..images import manifest as image_manifest
from ..images.manifest import ImageSpec
from ..paths import MANIFEST_DIR, MODELS_CACHE, ROOT
from . import containers


def image_tags(manifest_dir: Path = MANIFEST_DIR, variant: str = "cpu",
               overrides: dict[str, str] | None = None) -> dict[str, str]:
    """image name -> its content-hash tag for ``variant`` (or the image's own in ``overrides``), from
    ``manifest_dir/images.yaml``."""
    return tags_of(image_manifest.load_manifest(manifest_dir / "images.yaml"), variant, overrides)


def tags_of(specs: dict[str, ImageSpec], variant: str = "cpu", overrides: dict[str, str] | None = None) -> dict[str, str]:
    """:func:`image_tags` of images.yaml already read (``specs``: name -> spec); an image without ``variant``
    gets its cpu variant's tag (:meth:`ImageSpec.serving`)."""
    return {name: images.image_tag(spec, (overrides or {}).get(name, spec.serving(variant)), ROOT)
            for name, spec in specs.items()}


def predict_cache_file(tag: str, command: str = "list") -> Path:
    """Where an image's `predict list` (or `info`) is cached, per tag: tags are content hashes."""
    suffix = "" if command == "list" else f".{command}"
    return MODELS_CACHE / f"{images.tag_file_stem(tag)}{suffix}.json"


def cached_listing(tag: str) -> list[dict[str, Any]] | None:
    """The cached `predict list` of an image tag, or None when no run has listed that image yet."""
    cache = predict_cache_file(tag)
    return json.loads(cache.read_text()) if cache.is_file() else None


def no_engine(tag: str, what: str) -> BenchError:
    """The one line for a fact of ``tag`` that is not cached on a host without an engine."""
    image = tag.split(":")[0].rsplit("/", 1)[-1]
    return BenchError(f"no container engine here and no cached {what} of {tag} in {MODELS_CACHE}; run "
                      f"`zoobench models {image}` once on a host with the images (the cache is shared), then again")


def image_id(client: Any, tag: str) -> str:
    """The id of the image ``tag`` (it must be built), remembered per tag for hosts without an engine."""
    cache = predict_cache_file(tag, "id")
    if client is None:
        if not cache.is_file():
            raise no_engine(tag, "image id")
        return str(json.loads(cache.read_text())["id"])
    found = containers.require_image(client, tag).id
    if not cache.is_file() or json.loads(cache.read_text()).get("id") != found:
        write_json(cache, {"id": found})
    return found


def cached_predict_json(client: Any, tag: str, command: str) -> Any:
    """`predict COMMAND` (list, info) of an image, run once per tag and cached atomically (a bench
    reading it while another writes it never sees half a file)."""
    cache = predict_cache_file(tag, command)
    if cache.is_file():
        return json.loads(cache.read_text())
    if client is None:
        raise no_engine(tag, f"`predict {command}`")
    containers.require_image(client, tag)  # "not built" in one line, never a pull from a registry
    answer = containers.predict_json(client, tag, command)
    write_json(cache, answer)
    return answer


def served_models(client: Any, tag: str) -> dict[str, dict[str, Any]]:
    """The image's `predict list` as name -> spec, cached per image tag."""
    return {m["name"]: m for m in cached_predict_json(client, tag, "list")}


def pillow_version(client: Any, tag: str) -> str:
    """The Pillow version of an image (what its pixel crops depend on)."""
    version = cached_predict_json(client, tag, "info").get("pillow")
    if not version:
        raise BenchError(f"`predict info` of {tag} names no Pillow version; rebuild the image")
    return str(version)


FACTS_TIMEOUT_S = 600  # one CPU forward pass of the largest model, and the framework's import


def facts_cache_file(tag: str, model: str, crop_size: int) -> Path:
    """Where `predict facts --model MODEL --crop-size CROP` of an image tag is cached."""
    return MODELS_CACHE / images.tag_file_stem(tag) / "facts" / f"{model}-{crop_size}.json"


def listed_crop(client: Any, tag: str, model: str) -> int | None:
    """The crop size of ``model`` in the image's `predict list` (None when it names none)."""
    crop = (served_models(client, tag).get(model) or {}).get("preprocessing", {}).get("crop_size")
    return crop if isinstance(crop, int) else None


def facts_in_container(client: Any, tag: str, model: str, crop_size: int) -> str:
    """The stdout of `predict facts` in a locked-down container (no network, no mounts), which is
    removed with its anonymous volumes afterwards; an exit code other than 0 is an EngineError."""
    settings = {**containers.hardened(), **containers.engine_settings(client)}
    command = ["facts", "--model", model, "--crop-size", str(crop_size)]
    container = client.containers.create(tag, command=command, network_mode="none", user=containers.container_user(),
                                         labels={containers.LABEL: "1"}, **settings)
    try:
        container.start()
        code = int(container.wait(timeout=FACTS_TIMEOUT_S).get("StatusCode", 1))
        raw = container.logs(stdout=True, stderr=False).decode(errors="replace")
        if code != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()[-300:]
            raise BenchError(f"`predict facts --model {model}` failed in {tag} (exit code {code}): {err}")
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True, v=True)
    return raw


def model_facts(client: Any, tag: str, model: str, crop_size: int | None) -> str | None:
    """`predict facts` of ``model`` at ``crop_size`` (its JSON text, for ``predict run --facts``), run once per
    image tag, model and size and cached; None when it cannot be had (no engine and no cache, an old image
    without `predict facts`, a failure): then the run counts the facts itself."""
    if crop_size is None:
        return None
    cache = facts_cache_file(tag, model, crop_size)
    if cache.is_file():
        return cache.read_text().strip() or None
    if client is None:
        return None
    try:
        lines = facts_in_container(client, tag, model, crop_size).strip().splitlines()
        text = lines[-1].strip() if lines else ""  # the JSON is the last line printed
        record = json.loads(text)
    except Exception:  # noqa: BLE001 - facts are a side fact: the run counts them when this fails
        return None
    if not isinstance(record, dict) or record.get("model") != model:
        return None
    atomic_write(cache, lambda f: f.write(text + "\n"), mode="w")
    return text
