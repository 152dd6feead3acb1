"""``zoobench speed``: the profile's models timed with ``predict bench`` (timm-style, synthetic input),
one container at a time, resumable.

The models are planned exactly as ``zoobench run`` plans them (:func:`orchestrator.bench.service.plan_images`:
images built or loaded, names checked against each image's ``predict list``), then each runs
``predict bench`` in the same locked-down container as a run (:func:`containers.predict_in_container`),
never two at once on one device (a host-wide lock per device: a second ``zoobench speed`` waits). Each
finished model is ``RESULTS/speed/<image>-<model>/bench.json`` (``+PRECISION``, ``+MODE`` appended when not
fp32 / default) beside ``request.json`` (its request and
the file's checksum), written as a ``.partial`` folder and renamed into place; a re-run with the same
request reuses it, a killed one resumes with the models that had not finished.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from zoobench_contract.dataset import file_sha256
from zoobench_contract.outputs import write_json

from ..convert.bench import converted_binds
from ..errors import BenchError, first_line
from ..images import manifest as image_manifest
from ..manifests import get_profile, load_models
from ..paths import CACHE, MANIFEST_DIR, RESULTS, WEIGHTS_CACHE
from . import containers, gpus, runlock
from .layout import OUT_MOUNT, PARTIAL_SUFFIX, REQUEST_FILE, log_dir
from .plan import Job, PlanOptions, check_precision
from .runner import swap_into_place
from .service import BenchRequest, Setup, bench_images, check_gpus, parse_gpus, plan_images
from .variants import parse_variants

BENCH_FILE = "bench.json"  # what `predict bench --out` writes (zoobench_contract.benchmark.BENCH_FILE)
SPEED_DIR = "speed"  # RESULTS/speed/<image>-<model>/, beside the accuracy runs
WEIGHTS = "random"  # speed on synthetic input does not depend on the weights; none to fetch


@dataclass(frozen=True)
class SpeedRequest:
    """``zoobench speed``'s options, parsed."""

    profile: str = "smoke"
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    warmup: int = 10
    iterations: int = 40
    precision: str | None = None
    mode: str = "default"
    variant: str | None = None
    gpus: str | None = None
    results: Path | None = None
    only: list[str] | None = None
    force: bool = False
    build: bool = True
    runtime: str = "docker"
    manifests: Path = MANIFEST_DIR


@dataclass
class SpeedOutcome:
    job: Job
    status: str  # ok | reused | failed | interrupted
    reason: str = ""
    record: dict[str, Any] | None = None  # bench.json
    log: str | None = None


@dataclass
class SpeedRun:
    """What :func:`run_speed` gives the CLI to print."""

    folder: Path
    outcomes: list[SpeedOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[SpeedOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "interrupted")]


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``1,8,32`` -> (1, 8, 32); one line for anything else."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts) or len(set(map(int, parts))) != len(parts):
        raise BenchError(f"--batch-sizes {text!r}: give distinct positive integers separated by commas, e.g. 1,8,32")
    return tuple(int(p) for p in parts)


def speed_name(job: Job) -> str:
    """``<image>-<model>``, with ``+<precision>`` / ``+<mode>`` when not fp32 / default: timings of one model
    at several precisions or modes live side by side (and are ranked apart)."""
    return job.run_name + (f"+{job.precision}" if job.precision != "fp32" else "") + (
        f"+{job.mode}" if job.mode != "default" else "")


def bench_args(req: SpeedRequest, job: Job, device: str) -> list[str]:
    """The arguments of ``predict bench`` for one model."""
    return ["bench", "--model", job.model, "--batch-sizes", ",".join(map(str, req.batch_sizes)),
            "--warmup", str(req.warmup), "--iterations", str(req.iterations), "--precision", job.precision,
            "--device", device, "--mode", job.mode, "--weights", job.weights, "--out", OUT_MOUNT]


def speed_request(req: SpeedRequest, job: Job, image_id: str, device: str) -> dict[str, Any]:
    """What must match for a finished timing to be reused."""
    return {"image": job.image, "image_id": image_id, "model": job.model, "weights": job.weights,
            "batch_sizes": list(req.batch_sizes), "warmup": req.warmup, "iterations": req.iterations,
            "precision": job.precision, "mode": job.mode, "device": device,
            **({"conversion": job.conversion} if job.conversion is not None else {})}


def finished(run_dir: Path, request: dict[str, Any]) -> bool:
    """True when ``run_dir`` holds a bench.json made for exactly ``request``, unchanged since it was published."""
    try:
        record = json.loads((run_dir / REQUEST_FILE).read_text())
        return (record.get("request") == request
                and file_sha256(run_dir / BENCH_FILE) == record["sha256"][BENCH_FILE])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def publish(partial: Path, final: Path, request: dict[str, Any]) -> None:
    """Record the request and bench.json's checksum, then rename ``partial`` over ``final`` (the previous
    one kept as ``.old`` during the swap), so a finished timing is never half there."""
    write_json(partial / REQUEST_FILE, {"request": request, "sha256": {BENCH_FILE: file_sha256(partial / BENCH_FILE)}})
    swap_into_place(partial, final)


@contextlib.contextmanager
def device_lock(device: str, console: Console) -> Iterator[None]:
    """One timing run per device on this host at a time: a second ``zoobench speed`` waits here."""
    CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(CACHE / f"speed-{device.replace(':', '-')}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"note: another zoobench speed is timing on {device}; waiting for it", highlight=False)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def setup_of(req: SpeedRequest, bench: BenchRequest) -> Setup:
    """The profile, models and images read and the GPU checked, as ``zoobench run`` does (no data needed)."""
    prof = get_profile(req.profile, req.manifests)
    gpu_list = parse_gpus(req.gpus)
    if len(gpu_list) > 1:
        raise BenchError(f"--gpus {req.gpus}: speed times one model at a time on one device; give one GPU index")
    specs = image_manifest.load_manifest(req.manifests / "images.yaml")
    variants = parse_variants(req.variant, gpu_list, specs)
    check_gpus(gpu_list, bench_images(bench, prof), variants, specs)
    folder = (req.results or RESULTS / req.profile) / SPEED_DIR
    return Setup(prof, load_models(req.manifests), gpu_list, variants, specs, folder, None, None, runs=folder)


def check_speed_request(req: SpeedRequest) -> None:
    if req.precision is not None:
        check_precision(req.precision)
    if req.warmup < 0 or req.iterations < 1:
        raise BenchError("--warmup must be 0 or more and --iterations 1 or more")
    containers.check_runtime(req.runtime)


def run_speed(req: SpeedRequest, console: Console) -> SpeedRun:
    """Check, plan as ``zoobench run`` does, lock the speed folder, then time each model in turn."""
    check_speed_request(req)
    bench = BenchRequest(profile=req.profile, results=req.results, gpus=req.gpus, variant=req.variant,
                         plan=PlanOptions(only=req.only, weights=WEIGHTS, precision=req.precision, mode=req.mode),
                         force=req.force, build=req.build, runtime=req.runtime, manifests=req.manifests)
    setup = setup_of(req, bench)
    try:
        setup.results.mkdir(parents=True, exist_ok=True)
        lock = runlock.ResultsLock(setup.results, note=lambda m: console.print(f"note: {m}"))
        holder = lock.acquire()
    except OSError as exc:
        raise BenchError(f"speed folder {setup.results}: {exc.strerror or exc}; make it writable or pass "
                         "another --results") from None
    try:
        client = containers.connect(req.runtime)
        jobs, image_ids = plan_images(bench, setup, client, console)
        timer = Timer(client, req, setup.results, setup.gpus[0] if setup.gpus else None, holder.run_id, image_ids,
                      console)
        timer.clean()
        console.print(f"{len(jobs)} model(s), timings in {setup.results}", highlight=False, soft_wrap=True)
        try:
            with device_lock(timer.device_name(), console):
                outcomes = [timer.time(job) for job in jobs]
        finally:
            containers.kill_run(client, holder.run_id)
    finally:
        lock.release()
    return SpeedRun(setup.results, outcomes)


class Timer:
    """Runs ``predict bench`` for one model after another in locked-down containers."""

    def __init__(self, client: Any, req: SpeedRequest, folder: Path, gpu: str | None, run_id: str,
                 image_ids: dict[str, str], console: Console) -> None:
        self.client, self.req, self.folder, self.gpu = client, req, folder, gpu
        self.run_id, self.image_ids, self.console = run_id, image_ids, console

    @property
    def labels(self) -> dict[str, str]:
        return {containers.LABEL_RESULTS: str(self.folder.resolve()), containers.LABEL_RUN: self.run_id,
                containers.LABEL_ROLE: "speed"}

    def device_name(self) -> str:
        return "cpu" if self.gpu is None else f"gpu{self.gpu}"

    def clean(self) -> None:
        """Remove the containers and ``.partial`` folders a killed speed bench left on this folder."""
        left = containers.remove_containers(self.client, self.labels[containers.LABEL_RESULTS], keep_run=self.run_id)
        if left:
            self.console.print(f"removed {left} container(s) left by an interrupted speed bench", highlight=False)
        for stale in self.folder.glob(f"*{PARTIAL_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)

    def device_of(self, job: Job) -> tuple[str | None, str]:
        """(the GPU to pass the container, the ``--device`` it is timed on: cpu, or cuda with the GPU's name)."""
        if self.gpu is None or job.cpu_only:
            return None, "cpu"
        names = {g.index: g.name for g in gpus.host_gpus()}
        return self.gpu, f"cuda ({names.get(self.gpu, 'GPU ' + self.gpu)})"

    def time(self, job: Job) -> SpeedOutcome:
        """One model's timing (or the finished one reused); any error is this model's outcome only."""
        gpu, device = self.device_of(job)
        request = speed_request(self.req, job, self.image_ids[job.tag], device)
        final = self.folder / speed_name(job)
        if not self.req.force and finished(final, request):
            return SpeedOutcome(job, "reused", "timed earlier with the same request", self._read(final))
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        self.console.print(f"timing {job.image}/{job.model} on {device}", highlight=False, soft_wrap=True)
        try:
            return self._run(job, gpu, request, partial, final)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not end the speed bench
            return SpeedOutcome(job, "failed", f"{type(exc).__name__}: {first_line(exc)}")
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _run(self, job: Job, gpu: str | None, request: dict[str, Any], partial: Path, final: Path) -> SpeedOutcome:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with containers.handed_over(partial):
            result = containers.predict_in_container(
                self.client, job.tag, bench_args(self.req, job, "cpu" if gpu is None else "cuda"),
                converted_binds(job.converted), partial,
                WEIGHTS_CACHE, log_path=log_dir(self.folder) / f"{final.name}.log", timeout_s=job.timeout_s,
                gpu=gpu, environment={"ZOOBENCH_IMAGE_ID": self.image_ids[job.tag], "ZOOBENCH_IMAGE_TAG": job.tag},
                labels=self.labels, limits=containers.Limits(memory=job.memory), cancel=None)
        log = str(result.log_path)
        if result.exit_code != 0:
            return SpeedOutcome(job, "failed", result.reason, None, log)
        if not (partial / BENCH_FILE).is_file():
            return SpeedOutcome(job, "failed", f"exited 0 without writing {BENCH_FILE}", None, log)
        publish(partial, final, request)
        return SpeedOutcome(job, "ok", "", self._read(final), log)

    @staticmethod
    def _read(final: Path) -> dict[str, Any] | None:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((final / BENCH_FILE).read_text())
        return None


def speed_rows(run: SpeedRun) -> list[dict[str, Any]]:
    """One row per model for the table: batch-1 p50 ms, best samples/s at its batch size, peak memory."""
    rows = []
    for o in run.outcomes:
        rec = o.record or {}
        best = rec.get("best") or {}
        at_best = next((r for r in rec.get("results", []) if r.get("batch_size") == best.get("batch_size")), {})
        rows.append({"image": o.job.image, "model": o.job.model, "status": o.status, "reason": o.reason,
                     "mode": o.job.mode, "precision": o.job.precision, "device": rec.get("device"),
                     "batch1_ms": rec.get("batch1_ms"), "best_samples_per_second": best.get("samples_per_second"),
                     "best_batch_size": best.get("batch_size"), "peak_memory_bytes": at_best.get("peak_memory_bytes"),
                     "peak_memory": at_best.get("peak_memory"), "log": o.log})
    return rows


__all__ = ["BENCH_FILE", "SPEED_DIR", "SpeedOutcome", "SpeedRequest", "SpeedRun", "parse_batch_sizes", "run_speed",
           "speed_rows"]
