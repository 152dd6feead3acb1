"""What every ``predict`` command shares: the exit codes, the backend found through its entry point,
the model looked up by name, the run's environment and weights records, precision, the uint8-to-logits
:class:`Predictor`, progress lines, and the one-line failures (:func:`fail`). The commands are in
:mod:`.cli` (list, info, fetch, run, cache) and beside it (:mod:`.facts`, :mod:`.benchmark`)."""
from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .backend import Backend, ModelSpec, WeightsUnavailable
from .classsets import ClassSubset, images_of, load_subset
from .dataset import GENERATED_FILE, file_sha256, list_images
from .preprocessing import Normalisation, Preprocessing, normalize

EXIT_USAGE, EXIT_OOM, EXIT_WEIGHTS, EXIT_FAILED = 2, 3, 4, 1
PRECISIONS = ("fp32", "tf32", "bf16")
PROGRESS_EVERY_S = 2.0
PROGRESS_PREFIX = "zoobench-progress "


class UserError(Exception):
    """A bad request to ``predict``; its message is the one line the user sees."""


class RunFailed(RuntimeError):
    """The model ran but produced something unusable (wrong shape, NaN)."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    if code == EXIT_WEIGHTS:
        raise WeightsUnavailable(message)
    if code == EXIT_USAGE:
        raise UserError(message)
    raise RunFailed(message)


BACKEND_IMPORT_S: list[float] = []


@functools.lru_cache(maxsize=1)
def load_backend() -> Backend:
    """The backend registered under ``zoobench.backend`` (``ZOOBENCH_BACKEND`` picks among several);
    the seconds its import took (the framework's start-up) go to run.json."""
    start = time.perf_counter()
    backend = _find_backend()
    BACKEND_IMPORT_S.append(time.perf_counter() - start)
    return backend


def _find_backend() -> Backend:
    found = {ep.name: ep for ep in entry_points(group="zoobench.backend")}
    wanted = os.environ.get("ZOOBENCH_BACKEND")
    if not found:
        fail("no zoobench backend is installed in this environment (entry point group zoobench.backend)", 1)
    if wanted:
        if wanted not in found:
            fail(f"ZOOBENCH_BACKEND={wanted!r} is not installed; installed: {', '.join(sorted(found))}")
        return found[wanted].load()()
    if len(found) > 1:
        fail(f"several backends installed ({', '.join(sorted(found))}); set ZOOBENCH_BACKEND")
    return next(iter(found.values())).load()()


def find_model(backend: Backend, name: str) -> ModelSpec:
    specs = {s.name: s for s in backend.models()}
    if name not in specs:
        close = [n for n in specs if name.lower() in n or n in name.lower()][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        fail(f"unknown model {name!r} for {backend.framework}{hint}; `predict list` shows the {len(specs)} models")
    return specs[name]


def environment(backend: Backend) -> dict[str, Any]:
    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except Exception:
            return None

    return {
        "framework": backend.framework,
        "framework_version": backend.framework_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": pkg("pillow"),
        "contract": pkg("zoobench-contract"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "image_tag": os.environ.get("ZOOBENCH_IMAGE_TAG"),
        "image_id": os.environ.get("ZOOBENCH_IMAGE_ID"),
        **backend.environment(),
    }


def weights_record(choice: str, spec: ModelSpec, loaded_from: str | None = None) -> dict[str, Any]:
    """What run.json says about the weights; ``loaded_from`` is the file ``imagenet`` weights came from."""
    if choice == "random":
        return {"kind": "random", "requested": choice, "source": "random init (seed 0)", "sha256": None}
    if choice == "imagenet" or choice.startswith("imagenet:"):
        source = spec.weights if choice == "imagenet" else f"{spec.weights} variant {choice.split(':', 1)[1]}"
        digest = file_sha256(Path(loaded_from)) if loaded_from and Path(loaded_from).is_file() else None
        return {"kind": "imagenet", "requested": choice, "source": source, "file": loaded_from, "sha256": digest}
    return {"kind": "file", "requested": choice, "source": choice, "sha256": file_sha256(Path(choice))}


def check_weights_choice(choice: str) -> None:
    """``imagenet[:VARIANT]``, ``random`` or an existing file, before any model is built."""
    if choice != "random" and not choice.startswith("imagenet") and not Path(choice).is_file():
        fail(f"--weights {choice}: no such file; use imagenet, random or a weights file path")


def loaded_weights_file(backend: Backend, spec: ModelSpec, weights: str) -> str | None:
    """The backend's optional ``weights_path``: where the last load read ``imagenet`` weights."""
    if not weights.startswith("imagenet") or not hasattr(backend, "weights_path"):
        return None
    return backend.weights_path(spec, weights)


def configure_precision(backend: Backend, precision: str, device: str) -> dict[str, Any]:
    """Apply ``--precision`` (one of :data:`PRECISIONS`, checked by ``run`` before the framework is
    imported) through the backend's optional ``configure(precision, device)``; a backend without it
    serves fp32 only."""
    if hasattr(backend, "configure"):
        return backend.configure(precision, device)
    if precision != "fp32":
        fail(f"--precision {precision}: the {backend.framework} backend serves fp32 only")
    return {}


class Predictor:
    """uint8 crops -> logits: normalised on the backend's device (``predict_pixels``) or on the host."""

    def __init__(self, backend: Backend, net: Any, prep: Preprocessing, where: str):
        if where not in ("device", "host"):
            fail(f"--normalise {where!r}: use device or host")
        self.backend, self.net, self.prep = backend, net, prep
        self.norm: Normalisation = prep.normalisation()
        self.on_device = where == "device" and hasattr(backend, "predict_pixels")

    @property
    def where(self) -> str:
        return "device" if self.on_device else "host"

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.on_device:
            out = self.backend.predict_pixels(self.net, pixels, self.norm)
        else:
            out = self.backend.predict(self.net, normalize(pixels, self.prep))
        return np.asarray(out, dtype=np.float32)


def report_progress(done: int, total: int, images_per_second: float) -> None:
    """One machine-readable line on stderr; the orchestrator shows it live."""
    line = json.dumps({"done": done, "total": total, "images_per_second": round(images_per_second, 2)})
    print(PROGRESS_PREFIX + line, file=sys.stderr, flush=True)


def is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "outofmemory" in text or "oom when" in text


def parse_overrides(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--preprocess: not valid JSON ({exc.msg}); example: '{{\"resize_size\": 256}}'")
    if not isinstance(value, dict):
        fail("--preprocess: must be a JSON object of preprocessing fields")
    return value


def select_images(data: Path, limit: int | None, subset: ClassSubset | None, subset_images: bool) -> list[str]:
    """The files a run reads: every image below ``data`` (only those of ``subset``'s classes with
    ``subset_images``), then the first ``limit``; the orchestrator scans the same list."""
    paths = list_images(data)
    if subset_images:
        if subset is None:
            fail("--subset-images needs --classes (the classes whose images are read)")
        paths = images_of(paths, subset)
        if not paths:
            fail(f"{data}: no image lies in a folder of the {len(subset.indices)} classes of --classes {subset.name}")
    return paths[:limit] if limit else paths


def class_subset(classes: str | None, topk: int) -> ClassSubset | None:
    """``--classes`` read and checked (at least ``topk`` classes, so top-k stays within the subset)."""
    if classes is None:
        return None
    subset = load_subset(classes)
    if len(subset.indices) < topk:
        fail(f"--classes {classes}: {len(subset.indices)} classes, fewer than --topk {topk}; list more classes")
    return subset


def generated_record(data: Path) -> dict[str, Any] | None:
    """How a generated set was made (``zoobench data corrupt`` writes :data:`GENERATED_FILE` at its top)."""
    marker = data / GENERATED_FILE
    if not marker.is_file():
        return None
    try:
        value = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        fail(f"{marker}: unreadable; regenerate the set with `zoobench data corrupt`")
    return value if isinstance(value, dict) else {"record": value}


DEFAULT_MODE = "default"


def configure_mode(backend: Backend, mode: str, device: str) -> dict[str, Any]:
    """Apply ``--mode`` through the backend's optional ``configure_mode(mode, device)`` (its ``modes()``
    lists what it offers); a backend without it runs the default mode only."""
    offered = list(backend.modes()) if hasattr(backend, "modes") else []
    if mode == DEFAULT_MODE:
        return backend.configure_mode(mode, device) if hasattr(backend, "configure_mode") else {}
    if mode not in offered:
        fail(f"--mode {mode!r}: the {backend.framework} backend offers {', '.join([DEFAULT_MODE, *offered])}")
    return backend.configure_mode(mode, device)


def check_device_and_precision(device: str, precision: str) -> None:
    """``--device`` and ``--precision`` checked before the framework is imported (one line each)."""
    if device not in ("auto", "cpu", "cuda"):
        fail(f"--device {device!r}: use auto, cpu or cuda")
    if precision not in PRECISIONS:
        fail(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
