"""What ``zoobench k8s render`` is given, checked before anything is rendered: Kubernetes names, the
image registry prefix, ``--weights``, ``--data-path``, ``--variant``, memory sizes as Kubernetes
quantities, and which models each image serves without a Docker engine (``--models-from``, a cached
``predict list``, else the profile's names). Each refusal is one line (a :class:`BenchError`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from ..bench import imagefacts, mounts
from ..errors import BenchError
from ..manifests import MEMORY_PATTERN, Profile

# where the pods mount volumes: DATA_MOUNT is --data-path's default, check_data_path keeps it clear of the others
RESULTS_MOUNT = "/results"
DATA_MOUNT = "/data"
SHM_MOUNT = "/dev/shm"
VARIANTS = ("cpu", "cuda")

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_REGISTRY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


# ---------------------------------------------------------------- checks (one line each)

def check_name(value: str, what: str, label: bool = False) -> str:
    """A Kubernetes object name: DNS-1123 subdomain (claims), or label (namespaces)."""
    limit, pattern = (63, DNS_LABEL) if label else (253, _SUBDOMAIN)
    if len(value) > limit or not pattern.match(value):
        chars = "lower-case letters, digits and '-'" + ("" if label else " ('.' between parts)")
        raise BenchError(f"{what} {value!r}: not a valid Kubernetes name (DNS-1123 {'label' if label else 'subdomain'}: "
                         f"{chars}, starting and ending with a letter or digit, at most {limit} characters)")
    return value


def check_registry(prefix: str | None) -> str | None:
    if prefix is None:
        return None
    prefix = prefix.rstrip("/")
    if not _REGISTRY.match(prefix):
        raise BenchError(f"--image-registry {prefix!r}: give a registry prefix such as registry.example.com/team "
                         "or localhost:5000 (the image tags zoobench/NAME:VARIANT-HASH are appended)")
    return prefix


def check_weights(weights: str | None) -> None:
    if weights is None or weights == "random" or weights == "imagenet" or weights.startswith("imagenet:"):
        return
    raise BenchError(f"--weights {weights}: a file on this host is not visible to the pods; use imagenet, "
                     "imagenet:VARIANT or random (imagenet weights are read from --weights-claim)")


def check_data_path(path: str) -> str:
    if not path.startswith("/"):
        raise BenchError(f"--data-path {path!r}: give an absolute path, e.g. {DATA_MOUNT}")
    path = os.path.normpath(path)
    try:
        mounts.check_target(path, "--data-path")
    except mounts.MountError:
        raise BenchError(f"--data-path {path}: would hide or sit inside the runner image's own files; "
                         f"use e.g. {DATA_MOUNT} or /mnt/data") from None
    for other in (RESULTS_MOUNT, SHM_MOUNT, "/dev"):
        if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
            raise BenchError(f"--data-path {path}: overlaps {other}, where the pods mount something else; "
                             f"use e.g. {DATA_MOUNT}")
    return path


def check_variant(variant: str) -> str:
    if "," in variant or "=" in variant:
        raise BenchError(f"--variant {variant}: per-image variants (IMAGE=VARIANT) are for `zoobench run` on one "
                         "host; k8s render takes one variant, cpu or cuda, for every image (render the others with their own "
                         "--variant and --out)")
    if variant not in VARIANTS:
        raise BenchError(f"--variant {variant!r}: use cpu or cuda")
    return variant


def quantity(memory: str) -> str:
    """Docker's memory syntax (512m, 8g, bytes) as a Kubernetes quantity (512Mi, 8Gi)."""
    match = re.fullmatch(MEMORY_PATTERN, memory)
    if not match:
        raise BenchError(f"memory {memory!r}: use docker syntax such as 512m or 8g (manifests/models.yaml)")
    unit = memory[-1].lower() if memory[-1].isalpha() else ""
    return memory.rstrip("bkmgBKMG") + {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}[unit]


def memory_bytes(memory: str) -> int:
    """Docker's memory syntax (512m, 8g, bytes) in bytes."""
    unit = memory[-1].lower() if memory[-1].isalpha() else ""
    return int(memory.rstrip("bkmgBKMG")) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


# ---------------------------------------------------------------- what each image serves, offline

def read_listing(path: Path, image: str) -> list[dict[str, Any]]:
    """A `predict list` JSON file (what ``docker run --rm TAG list`` prints)."""
    try:
        listing = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BenchError(f"--models-from {image}={path}: unreadable ({type(exc).__name__}); pass the JSON that "
                         "`predict list` prints") from None
    if not isinstance(listing, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                                for m in listing):
        raise BenchError(f"--models-from {image}={path}: not a `predict list` (a JSON array of objects with a name)")
    return listing


def parse_models_from(values: list[str] | None, images: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for value in values or []:
        image, sep, file = value.partition("=")
        if not sep or not image or not file:
            raise BenchError(f"--models-from {value!r}: give IMAGE=FILE, e.g. pytorch=pytorch-list.json")
        if image not in images:
            raise BenchError(f"--models-from {value!r}: the profile has no image {image!r} "
                             f"(it has {', '.join(images)})")
        found[image] = Path(file)
    return found


def served_offline(
    profile: Profile,
    tags: dict[str, str],
    models_from: dict[str, Path],
    note: Callable[[str], None],
) -> Callable[[str], dict[str, dict[str, Any]]]:
    """``served`` for :func:`plan_jobs` without a Docker engine: ``--models-from IMAGE=FILE``, else the
    `predict list` a local run cached for that image tag, else the profile's own model names
    (unchecked, with a note; their preprocessing overrides are checked against the defaults). A
    profile that lists ``all`` models of an image needs a listing."""

    def served(image: str) -> dict[str, dict[str, Any]]:
        listing = read_listing(models_from[image], image) if image in models_from else imagefacts.cached_listing(tags[image])
        if listing is not None:
            return {m["name"]: m for m in listing}
        wanted = profile.models[image]
        variant = tags[image].rpartition(":")[2].split("-")[0]  # zoobench/NAME:VARIANT-HASH
        if wanted == "all":
            raise BenchError(f"the profile runs all models of {image} and no `predict list` of {tags[image]} is "
                             f"cached here; pass --models-from {image}=FILE (the JSON `docker run --rm {tags[image]} "
                             f"list` prints) or run `zoobench models {image} --variant {variant}` with that image built "
                             "(it caches the list)")
        note(f"{image}: no `predict list` of {tags[image]} is cached here; the profile's {len(wanted)} model "
             f"name(s) are used as they are, unchecked (pass --models-from {image}=FILE to check them)")
        return {name: {} for name in wanted}

    return served
