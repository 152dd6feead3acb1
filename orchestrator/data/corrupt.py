"""``zoobench data corrupt``: an ImageNet-C-style set made from any image folder.

:func:`corrupt_folder` writes ``OUT/<corruption>/<severity>/<source relpath>.JPEG`` for every image
``list_images`` finds (``per_class``: the first N of each wnid folder) with the maintained
implementation of Hendrycks and Dietterich's corruptions (``imagecorruptions-imaug``; the lists are
``imagenet-c`` in manifests/datasets.yaml) and the recipe of their ``make_imagenet_c.py``: RGB,
``Resize(256)`` and ``CenterCrop(224)`` with torchvision's semantics on a PIL image (shorter side to
256 with Pillow BILINEAR, the longer to ``int(256 * long / short)``; offsets ``int(round((size - 224)
/ 2.0))``), the corruption, ``np.uint8`` of it (clipped, truncated, not rounded), then Pillow JPEG
quality 85 with ``optimize=True`` as there (Pillow's default subsampling, no EXIF).

Deterministic: numpy's global RNG, and the ``seed`` argument of glass_blur and impulse_noise
(unseeded, they draw from a fresh generator), are seeded before each call from a hash of (seed,
corruption, severity, source relpath): a re-run gives the same bytes whatever the workers, order or
selection (with the same library versions). Files are written atomically; a hidden state file
records each output's and its source's sha256: a re-run recomputes only what is missing, changed or
from a changed source, and removes outputs no longer selected. ``zoobench-generated.json`` comes
last: it means the set is complete (later outputs label the set ``generated`` by it).
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib.metadata import version
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Optional

import numpy as np
from PIL import Image

from zoobench_contract.classsets import class_of
from zoobench_contract.dataset import (GENERATED_FILE, DataError, check_image_bytes, file_sha256, list_images,
                                       read_image, read_regular, set_digest)
from zoobench_contract.outputs import atomic_write, write_json

from ..paths import MANIFEST_DIR
from .datasets import load_datasets

GENERATOR = "imagecorruptions-imaug"
RESIZE, CROP, JPEG_QUALITY = 256, 224, 85
RECIPE = {"resize": RESIZE, "crop": CROP, "jpeg_quality": JPEG_QUALITY}
SUFFIX = ".JPEG"
STATE_FILE = ".zoobench-corrupt-state.json"  # hidden: list_images never sees it
SAVE_EVERY_S = 30.0  # the state file is saved this often (and at the end, and on Ctrl-C)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Request:
    """What to make: corruptions (manifest order), severities, seed, images per class (None: all)."""

    corruptions: tuple[str, ...]
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    seed: int = 0
    per_class: Optional[int] = None


@dataclass(frozen=True, slots=True)  # one per output file: millions for a full set
class Job:
    """One output: its source (in DATA) and the source's sha256, corruption, severity, path in OUT, sha256."""

    source: str
    source_sha256: str
    corruption: str
    severity: int
    output: str
    sha256: str = ""


@dataclass
class CorruptReport:
    """What a run did (``corrupt_cmd`` prints it)."""

    out: Path
    corruptions: list[str]
    severities: list[int]
    n_sources: int
    written: int = 0
    skipped: int = 0  # already there with the recorded bytes
    removed: int = 0  # outputs of an earlier selection
    seconds: float = 0.0


def corruption_lists(manifest_dir: Path = MANIFEST_DIR) -> tuple[list[str], list[str], int]:
    """(benchmark corruptions, extra corruptions, number of severities) of ``imagenet-c``."""
    _, dataset = load_datasets(manifest_dir).get("imagenet-c")
    return list(dataset.corruptions), list(dataset.extra_corruptions), dataset.severities or 5


def check_request(request: Request, known: list[str], n_severities: int) -> None:
    """One line when a value is outside what the manifest and the installed library define."""
    from imagecorruptions import get_corruption_names
    for name in request.corruptions or ("",):
        if name not in known:
            raise DataError(f"--corruptions {name}: unknown corruption; known: {', '.join(known)}")
        if name not in get_corruption_names("all"):
            raise DataError(f"corruption {name}: in manifests/datasets.yaml but not in {GENERATOR} "
                            f"{version(GENERATOR)}; install {GENERATOR}==1.1.5 (pyproject.toml)")
    if not request.severities or not all(1 <= v <= n_severities for v in request.severities):
        raise DataError(f"--severities {list(request.severities)}: each must be within 1-{n_severities}")
    if request.seed < 0 or (request.per_class is not None and request.per_class < 1):
        raise DataError(f"--seed {request.seed} / --per-class {request.per_class}: pass a seed >= 0 and N >= 1")


def select_per_class(data: Path, paths: list[str], n: int) -> list[str]:
    """The first ``n`` paths (in their sorted order) of each class (the wnid folder of ``class_of``)."""
    taken: dict[str, int] = {}
    kept = []
    for path in paths:
        wnid = class_of(path)
        if wnid is None:
            raise DataError(f"{data / path}: not inside a wnid folder (like n01440764/); --per-class needs the "
                            "images sorted into class folders (zoobench data prepare does that)")
        taken[wnid] = taken.get(wnid, 0) + 1
        if taken[wnid] <= n:
            kept.append(path)
    return kept


def output_path(source: str, corruption: str, severity: int) -> str:
    """Where a source's corrupted copy goes, relative to OUT: its relpath, suffix ``.JPEG``."""
    return f"{corruption}/{severity}/{PurePosixPath(source).with_suffix(SUFFIX).as_posix()}"


def check_folders(data: Path, out: Path) -> None:
    """One line unless DATA is a folder of source images and OUT lies apart from it."""
    if not data.is_dir():
        raise DataError(f"--data {data}: {'not a folder' if data.exists() else 'does not exist'}; "
                        "pass the folder that holds the images")
    real_data, real_out = data.resolve(), out.resolve()
    if real_out == real_data or real_data in real_out.parents:
        raise DataError(f"--out {out}: inside --data {data} (its outputs would become source images); "
                        "pass a folder outside it")
    if real_out in real_data.parents:
        raise DataError(f"--out {out}: holds --data {data}; pass a folder beside it")
    if (data / GENERATED_FILE).is_file():
        raise DataError(f"--data {data}: a generated corruption set ({GENERATED_FILE}); pass the clean images")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: not a folder; pass a new or empty folder")


def scan_out(out: Path, known: Iterable[str]) -> tuple[set[str], list[Path]]:
    """(outputs already in OUT, leftover temp files); one line naming the first entry that is not an
    output of this command (only corruption folders, the marker and the state file belong there)."""
    existing: set[str] = set()
    leftovers: list[Path] = []
    known = set(known)
    for dirpath, dirnames, filenames in os.walk(out) if out.is_dir() else ():
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            parts = path.relative_to(out).parts
            if name.startswith(".") and name.endswith(".tmp") and path.is_file():  # atomic_write's temp file
                leftovers.append(path)
            elif path.is_symlink() or not _belongs(parts, path.is_dir(), known):
                raise DataError(f"--out {out}: {path} is not an output of `zoobench data corrupt` (only "
                                f"CORRUPTION/SEVERITY/.../*{SUFFIX} and {GENERATED_FILE}); pass a new or empty "
                                "folder, or remove it")
            elif len(parts) > 1 and not path.is_dir():
                existing.add("/".join(parts))
    return existing, leftovers


def _belongs(parts: tuple[str, ...], is_dir: bool, known: set[str]) -> bool:
    if len(parts) == 1:
        return (parts[0] in known) if is_dir else parts[0] in (GENERATED_FILE, STATE_FILE)
    return is_dir or (parts[-1].endswith(SUFFIX) and len(parts) >= 3 and parts[1].isdigit())


def _remove(out: Path, paths: Iterable[Path]) -> None:
    """Delete ``paths`` and then every folder left empty below OUT."""
    for path in paths:
        path.unlink(missing_ok=True)
    for dirpath, _, _ in os.walk(out, topdown=False):  # children before their parents
        if Path(dirpath) != out and not any(Path(dirpath).iterdir()):
            Path(dirpath).rmdir()


def seed_for(seed: int, corruption: str, severity: int, source: str) -> int:
    """The 32-bit RNG seed of one output: a hash of what identifies it, nothing else."""
    key = f"zoobench-corrupt\0{seed}\0{corruption}\0{severity}\0{source}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


def clean_crop(image: Image.Image) -> Image.Image:
    """RGB, then torchvision's ``Resize(256)`` and ``CenterCrop(224)`` of a PIL image."""
    image = image.convert("RGB")
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(RESIZE * long / short)
    size = (RESIZE, new_long) if width <= height else (new_long, RESIZE)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    top, left = int(round((size[1] - CROP) / 2.0)), int(round((size[0] - CROP) / 2.0))
    return image.crop((left, top, left + CROP, top + CROP))


@lru_cache(maxsize=None)
def _takes_seed(corruption: str) -> bool:
    import inspect
    from imagecorruptions import corruption_dict
    return "seed" in inspect.signature(corruption_dict[corruption]).parameters


def corrupt_pixels(crop: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """One corruption of a 224x224 RGB uint8 crop, seeded, as ``np.uint8`` (clipped, truncated)."""
    from imagecorruptions import corrupt
    np.random.seed(seed)
    kwargs = {"seed": seed} if _takes_seed(corruption) else {}
    result = np.asarray(corrupt(crop, corruption_name=corruption, severity=severity, **kwargs))
    if result.dtype != np.uint8:
        result = np.uint8(np.clip(result, 0, 255))
    return np.stack([result] * 3, axis=-1) if result.ndim == 2 else result


_WORKER: dict[str, Any] = {}  # per process: data, out, seed and the last source's crop


def _init_worker(data: str, out: str, seed: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: running files finish
    import cv2
    cv2.setNumThreads(1)  # one thread per process, the same in every mode
    _WORKER.update(data=Path(data), out=Path(out), seed=seed, last=(None, None))


def _crop_of(job: Job) -> np.ndarray:
    source, crop = _WORKER["last"]
    if source != job.source:
        loaded = read_image(_WORKER["data"], job.source)
        if loaded.sha256 != job.source_sha256:
            raise DataError(f"{_WORKER['data'] / job.source}: changed while the set was made; run the command again")
        crop = np.asarray(clean_crop(loaded.image))
        _WORKER["last"] = (job.source, crop)
    return crop


def _work(job: Job) -> Job:
    seed = seed_for(_WORKER["seed"], job.corruption, job.severity, job.source)
    buffer = io.BytesIO()
    Image.fromarray(corrupt_pixels(_crop_of(job), job.corruption, job.severity, seed)).save(
        buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    blob = buffer.getvalue()
    atomic_write(_WORKER["out"] / job.output, lambda f: f.write(blob), fsync=False)
    return replace(job, sha256=hashlib.sha256(blob).hexdigest())


def _run_pool(jobs: list[Job], workers: int, init: tuple[str, str, int], done: Callable[[Job], None]) -> None:
    """At most 4 jobs per worker in flight; on an error or Ctrl-C the rest is cancelled and the
    files being written are finished and recorded (the workers ignore SIGINT)."""
    queue = iter(jobs)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=init) as pool:
        pending: set[Future] = set()
        try:
            while True:
                pending |= {pool.submit(_work, job) for job in islice(queue, 4 * workers - len(pending))}
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    done(future.result())
        except BaseException:
            for future in pending:
                if not future.cancel() and future.exception() is None:
                    done(future.result())
            raise


@dataclass
class Ledger:
    """The state file in memory: each output's (source sha256, sha256), saved now and then."""

    path: Path
    settings: dict[str, Any]
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    saved_at: float = field(default_factory=time.monotonic)

    @classmethod
    def load(cls, out: Path, settings: dict[str, Any]) -> "Ledger":
        """The recorded files when the state file is readable and has these settings; else none."""
        ledger = cls(out / STATE_FILE, settings)
        try:
            raw = json.loads(ledger.path.read_text(encoding="utf-8"))
            if raw["settings"] == settings:
                ledger.files = {k: (str(v[0]), str(v[1])) for k, v in raw["files"].items()}
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            ledger.files = {}
        return ledger

    def record(self, job: Job) -> None:
        self.files[job.output] = (job.source_sha256, job.sha256)
        if time.monotonic() - self.saved_at > SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        text = json.dumps({"settings": self.settings, "files": dict(sorted(self.files.items()))}, separators=(",", ":"))
        atomic_write(self.path, lambda f: f.write(text), mode="w", fsync=False)
        self.saved_at = time.monotonic()


def settings_of(seed: int) -> dict[str, Any]:
    """What the bytes of every output depend on besides its source, corruption and severity."""
    import cv2
    libraries = {name: version(name) for name in (GENERATOR, "numpy", "pillow", "scipy", "scikit-image", "numba")}
    return {"recipe": RECIPE, "seed": seed, "libraries": {**libraries, "opencv": cv2.__version__}}


def _threads(function: Callable[[Any], str], items: list[Any], workers: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 8))) as pool:  # file reads: I/O bound
        return list(pool.map(function, items))


def fingerprint_sources(data: Path, paths: list[str], workers: int) -> list[str]:
    """The sha256 of each source's bytes, each checked to be an image (one line naming the first that is not)."""
    def one(relpath: str) -> str:
        blob = read_regular(data / relpath)
        check_image_bytes(blob, data / relpath)
        return hashlib.sha256(blob).hexdigest()

    return _threads(one, paths, workers)


def plan(sources: list[str], shas: list[str], request: Request) -> list[Job]:
    """Every output, source by source; one line when two sources would write the same file."""
    seen: dict[str, str] = {}
    for source in sources:
        if (other := seen.setdefault(output_path(source, "", 0), source)) != source:
            raise DataError(f"{other} and {source}: both would become {output_path(source, '', 0)[3:]} in the set; "
                            "rename or remove one")
    return [Job(source, sha, corruption, severity, output_path(source, corruption, severity))
            for source, sha in zip(sources, shas) for corruption in request.corruptions
            for severity in request.severities]


def unchanged(out: Path, jobs: list[Job], existing: set[str], ledger: Ledger, workers: int) -> set[str]:
    """The outputs already in OUT with the bytes the state file recorded for the same source."""
    candidates = [j for j in jobs if j.output in existing and ledger.files.get(j.output, ("",))[0] == j.source_sha256]
    shas = _threads(lambda job: file_sha256(out / job.output), candidates, workers)
    return {job.output for job, sha in zip(candidates, shas) if sha == ledger.files[job.output][1]}


def marker(data: Path, request: Request, source_digest: str, files: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """The content of ``zoobench-generated.json``: how the set was made."""
    return {"generator": f"{GENERATOR} {version(GENERATOR)}", "recipe": dict(RECIPE),
            "corruptions": list(request.corruptions), "severities": list(request.severities), "seed": request.seed,
            "per_class": request.per_class, "source": str(data.resolve()), "source_digest": source_digest,
            "n_images": len(files), "files_sha256": set_digest((path, sha) for path, (_, sha) in files.items())}


def corrupt_folder(data: Path, out: Path, request: Request, workers: Optional[int] = None,
                   manifest_dir: Path = MANIFEST_DIR, progress: Optional[Progress] = None) -> CorruptReport:
    """Make (or bring up to date) the corrupted set of DATA in OUT; see the module docstring."""
    started = time.monotonic()
    data, out = Path(data), Path(out)
    benchmark, extras, n_severities = corruption_lists(manifest_dir)
    check_request(request, benchmark + extras, n_severities)
    check_folders(data, out)
    sources = list_images(data)
    sources = select_per_class(data, sources, request.per_class) if request.per_class else sources
    workers = max(1, workers or os.cpu_count() or 1)
    existing, leftovers = scan_out(out, benchmark + extras)
    shas = fingerprint_sources(data, sources, workers)
    jobs = plan(sources, shas, request)
    ledger = Ledger.load(out, settings_of(request.seed))
    keep = unchanged(out, jobs, existing, ledger, workers)
    todo = [job for job in jobs if job.output not in keep]
    stale = sorted(existing - {job.output for job in jobs})
    report = CorruptReport(out, list(request.corruptions), list(request.severities), len(sources),
                           skipped=len(keep), removed=len(stale))
    ledger.files = {job.output: ledger.files[job.output] for job in jobs if job.output in keep}
    if todo or stale or leftovers:
        (out / GENERATED_FILE).unlink(missing_ok=True)  # incomplete until written again
    if stale or leftovers:
        _remove(out, [out / path for path in stale] + leftovers)

    def done(job: Job) -> None:
        ledger.record(job)
        report.written += 1
        if progress:
            progress(report.written, len(todo))

    if progress:
        progress(0, len(todo))
    try:
        if todo:
            _run_pool(todo, min(workers, len(todo)), (str(data), str(out), request.seed), done)
    finally:  # however this ends, what was written is recorded
        if todo or stale:
            ledger.save()
    write_json(out / GENERATED_FILE, marker(data, request, set_digest(zip(sources, shas)), ledger.files))
    report.seconds = time.monotonic() - started
    return report
