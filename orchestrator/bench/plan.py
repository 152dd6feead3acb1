"""Plan a bench: a profile and the images' model listings expanded into :class:`Job` s, every
name, option and preprocessing override checked before any container starts.

Nothing here runs anything: :mod:`orchestrator.bench.runner` runs the jobs, :mod:`orchestrator.engines`
hand them to Slurm or Kubernetes; all of them make a job's ``predict run`` with :func:`predict_run_args`.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from zoobench_contract.cli import PRECISIONS
from zoobench_contract.preprocessing import Preprocessing

from ..errors import BenchError
from ..manifests import ModelList, ModelsManifest, Profile
from .evalset import EvalSet
from .layout import OUT_MOUNT, PIXELS_MOUNT

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # whole name: fullmatch


def check_safe_name(value: str, what: str) -> str:
    """A name that becomes one path component (``RESULTS/IMAGE-MODEL``, a log file): letters, digits
    and ``. _ + -``, starting with a letter or digit, no ``..``, so it can never leave its folder."""
    if not SAFE_NAME.fullmatch(value) or ".." in value or len(value) > 200:
        raise BenchError(f"{what} {value!r}: not a safe file name (letters, digits and . _ + -, starting with a "
                         "letter or digit, no '/' or '..'); rename it in manifests/profiles.yaml or the model listing")
    return value


@dataclass(frozen=True)
class Job:
    """One model to run in one image."""

    image: str
    tag: str
    model: str
    weights: str
    batch_size: int
    timeout_s: int
    preprocess: dict[str, Any]
    limit: int | None
    memory: str | None = None
    precision: str = "fp32"
    pixels: PixelConfig | None = field(default=None, compare=False)  # effective crop config; not in the request
    weights_file: str | None = field(default=None, compare=False)  # under the weights cache, when the image says
    cpu_only: bool = False  # its image runs a CPU-only variant (--variant cuda,IMAGE=cpu): no GPU, --device cpu
    evalset: EvalSet | None = None  # the evaluation set (None: the default set, ImageNet val)
    mode: str = "default"  # execution mode (predict run --mode): channels-last, compile, jit, hybridize...
    facts: str | None = field(default=None, compare=False)  # `predict facts` JSON, cached per image and model
    converted: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # a runtime image's (source, host folder)
    conversion: dict[str, Any] | None = None  # a runtime image's job: its conversion's resume key (convert.records)

    @property
    def run_name(self) -> str:
        return f"{self.image}-{self.model}"

    def request(self, image_id: str, data_digest: str, weights_sha256: str | None = None) -> dict[str, Any]:
        """What must match for a finished run to be reused (batch size may differ after OOM; whether the
        pixels came from the pixel cache does not matter: the predictions are byte-identical). The
        evaluation set counts only when it is not the default (runs of earlier releases stay reusable)."""
        extra: dict[str, Any] = {"dataset": self.evalset.request()} if self.evalset is not None else {}
        if self.mode != "default":
            extra["mode"] = self.mode
        if self.conversion is not None:
            extra["conversion"] = self.conversion
        return {**extra,
            "image": self.image,
            "model": self.model,
            "image_id": image_id,
            "weights": self.weights,
            "weights_sha256": weights_sha256,
            "preprocess": self.preprocess,
            "precision": self.precision,
            "limit": self.limit,
            "data_digest": data_digest,
        }


@dataclass(frozen=True)
class PixelConfig:
    """What a uint8 crop depends on, besides the file and the Pillow version."""

    resize_size: int
    crop_size: int
    interpolation: str

    @classmethod
    def from_preprocessing(cls, prep: Preprocessing) -> "PixelConfig":
        """The fields of ``prep`` the crop depends on (the contract's ``Preprocessing.pixel_config``)."""
        return cls(**prep.pixel_config())

    @classmethod
    def of(cls, default: dict[str, Any], override: dict[str, Any]) -> "PixelConfig":
        """The effective config of a model: its own preprocessing with the manifest's override."""
        return cls.from_preprocessing((Preprocessing.from_dict(default) if default else Preprocessing()).override(override))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"resize {self.resize_size} crop {self.crop_size} {self.interpolation}"

    @property
    def row_bytes(self) -> int:
        return self.crop_size * self.crop_size * 3


@dataclass(frozen=True)
class PlanOptions:
    """The options that narrow or override a profile's jobs, shared by ``zoobench run`` and ``k8s render``
    (a new one is added here, in :func:`plan_jobs` and once in ``orchestrator/cli/options.py``)."""

    only: list[str] | None = None  # --model (repeatable): names or IMAGE/MODEL
    batch_size: int | None = None
    weights: str | None = None
    limit: int | None = None
    precision: str | None = None
    evalset: EvalSet | None = None  # --dataset, resolved (None: the default set)
    mode: str = "default"  # --mode: execution mode of every job (predict run --mode)

    def plan(self, profile: Profile, models_manifest: ModelsManifest, tags: dict[str, str],
             served: Callable[[str], dict[str, dict[str, Any]]]) -> list["Job"]:
        """:func:`plan_jobs` with these options."""
        return plan_jobs(profile, models_manifest, tags, served, only=self.only, batch_size=self.batch_size,
                         weights=self.weights, limit=self.limit, precision=self.precision, evalset=self.evalset,
                         mode=self.mode)


def _image_models(image: str, wanted: ModelList, available: dict[str, dict[str, Any]]) -> list[str]:
    """The models a profile wants of ``image`` ("all": every one it serves), each checked against its
    ``predict list``; the image name checked as a file name."""
    names = list(available) if wanted == "all" else list(wanted)
    unknown = [m for m in names if m not in available]
    if unknown:
        raise BenchError(
            f"unknown model(s) {', '.join(unknown)} for image {image}; `zoobench models {image}` lists "
            f"the {len(available)} it serves"
        )
    check_safe_name(image, "image")
    return names


def plan_jobs(
    profile: Profile,
    models_manifest: ModelsManifest,
    tags: dict[str, str],
    served: Callable[[str], dict[str, dict[str, Any]]],
    only: list[str] | None = None,
    batch_size: int | None = None,
    weights: str | None = None,
    limit: int | None = None,
    precision: str | None = None,
    evalset: EvalSet | None = None,
    mode: str = "default",
) -> list[Job]:
    """Expand a profile into jobs. Every model name is checked against the image's `predict list`,
    every ``--model`` must select something, and every preprocessing override must make a valid
    preprocessing for its model, all before any container starts."""
    jobs = []
    matched: set[str] = set()
    for image, wanted in profile.models.items():
        if image not in tags:
            raise BenchError(f"profile names image {image!r}, which manifests/images.yaml does not define")
        available = served(image)
        for model in _image_models(image, wanted, available):
            check_safe_name(model, f"{image} model")
            if only:
                hits = {o for o in only if o in (model, f"{image}/{model}")}
                if not hits:
                    continue
                matched |= hits
            settings = models_manifest.settings(image, model)
            chosen = weights or profile.weights_for(image)
            preprocess = evalset.preprocess_of(settings.preprocess) if evalset is not None else settings.preprocess
            effective = check_preprocessing(image, model, variant_preprocessing(available[model], chosen), preprocess)
            files = available[model].get("weights_files")
            cached_file = files.get(chosen) if isinstance(files, dict) else None
            jobs.append(
                Job(
                    image=image,
                    tag=tags[image],
                    model=model,
                    weights=chosen,
                    batch_size=batch_size or settings.batch_size or models_manifest.defaults.batch_size,
                    timeout_s=settings.timeout_s or models_manifest.defaults.timeout_s,
                    preprocess=preprocess,
                    limit=limit or profile.limit,
                    memory=settings.memory or models_manifest.defaults.memory,
                    precision=precision or profile.precision_for(image),
                    pixels=PixelConfig.from_preprocessing(effective) if effective is not None else None,
                    weights_file=cached_file if isinstance(cached_file, str) and not
                    available[model].get("weights_bundled") else None,
                    evalset=evalset,
                    mode=mode,
                )
            )
    missing = [o for o in only or [] if o not in matched]
    if missing:
        raise BenchError(f"--model {', '.join(missing)}: matches no model of this profile; give a model name or "
                         "IMAGE/MODEL that manifests/profiles.yaml lists for it (`zoobench models IMAGE` lists names)")
    return jobs


def predict_run_args(job: Job, batch_size: int, device: str, data_path: str, weights: str,
                     pixels: bool = False) -> list[str]:
    """The arguments of ``predict run`` for one job: the one place they are made, for a local run
    (:class:`Bench`) and for a rendered Kubernetes Job (:mod:`orchestrator.engines.k8s`) alike. ``data_path``
    and ``weights`` are as the container sees them; the outputs go to :data:`OUT_MOUNT`."""
    args = ["run", "--model", job.model, "--data", data_path, "--out", OUT_MOUNT,
            "--batch-size", str(batch_size), "--weights", weights, "--device", device, "--precision", job.precision]
    if job.limit:
        args += ["--limit", str(job.limit)]
    if job.preprocess:
        args += ["--preprocess", json.dumps(job.preprocess, sort_keys=True)]
    if job.evalset is not None:
        args += job.evalset.args()
    if job.mode != "default":
        args += ["--mode", job.mode]
    if job.facts:
        args += ["--facts", job.facts]
    if pixels:
        args += ["--pixels", PIXELS_MOUNT]
    return args


def check_preprocessing(image: str, model: str, default: dict[str, Any], override: dict[str, Any]) -> Preprocessing | None:
    """The model's own preprocessing with the manifest's override applied, which must be valid when
    there is an override. None when the model's own cannot be read (then its job gets no pixel cache)."""
    try:
        return (Preprocessing.from_dict(default) if default else Preprocessing()).override(override)
    except (ValueError, TypeError) as exc:
        if not override:
            return None
        raise BenchError(f"manifests/models.yaml: models.{image}/{model}.preprocessing: {exc}; fix the entry") from None


def variant_preprocessing(listing: dict[str, Any], weights: str) -> dict[str, Any]:
    """The preprocessing of the weights a job loads: ``imagenet:VARIANT`` has its own when the image
    lists it (``weights_variants`` in `predict list`: torchvision's V1 and V2 weights differ)."""
    if weights.startswith("imagenet:"):
        variant = listing.get("weights_variants", {}).get(weights.split(":", 1)[1])
        if variant is not None:
            return variant
    return listing.get("preprocessing", {})


def check_precision(value: str, what: str = "--precision") -> None:
    if value not in PRECISIONS:
        raise BenchError(f"{what} {value!r}: use one of {'|'.join(PRECISIONS)}")


def lane_plan(gpus: list[str], jobs_per_gpu: int = 1) -> list[tuple[str | None, str]]:
    """(GPU or None for the CPU, label) per worker lane: ``jobs_per_gpu`` lanes per GPU, spread so
    the first models start on different GPUs; one CPU lane without GPUs."""
    if jobs_per_gpu < 1:
        raise BenchError(f"--jobs-per-gpu {jobs_per_gpu}: give 1 or more")
    if not gpus:
        if jobs_per_gpu > 1:
            raise BenchError("--jobs-per-gpu needs --gpus: on the CPU one model runs at a time")
        return [(None, "cpu")]
    return [(g, f"gpu {g}" + (f" #{slot + 1}" if jobs_per_gpu > 1 else ""))
            for slot in range(jobs_per_gpu) for g in gpus]
