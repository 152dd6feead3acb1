"""Plan and run a bench: one container per model, resumable, OOM-retrying, with live progress."""
from __future__ import annotations

import json
import queue
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from zoobench_contract.dataset import digest_files, list_images

from . import containers
from .manifests import ModelsManifest, Profile

REQUEST_FILE = "request.json"
PARTIAL_SUFFIX = ".partial"


class BenchError(ValueError):
    """A bench cannot start as asked (unknown model, bad data...); one actionable line."""


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

    @property
    def run_name(self) -> str:
        return f"{self.image}-{self.model}"

    def request(self, image_id: str, data_digest: str) -> dict[str, Any]:
        """What must match for a finished run to be reused (batch size may differ after OOM)."""
        return {
            "image": self.image,
            "model": self.model,
            "image_id": image_id,
            "weights": self.weights,
            "preprocess": self.preprocess,
            "limit": self.limit,
            "data_digest": data_digest,
        }


@dataclass
class Outcome:
    job: Job
    status: str  # ok | reused | skipped | failed
    reason: str = ""
    batch_size: int | None = None
    images_per_second: float | None = None
    log: str | None = None


@dataclass
class BenchSummary:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def plan_jobs(
    profile: Profile,
    models_manifest: ModelsManifest,
    tags: dict[str, str],
    served: Callable[[str], list[str]],
    only: list[str] | None = None,
    batch_size: int | None = None,
    weights: str | None = None,
    limit: int | None = None,
) -> list[Job]:
    """Expand a profile into jobs; every model name is checked against the image's `predict list`."""
    jobs = []
    for image, wanted in profile.models.items():
        if image not in tags:
            raise BenchError(f"profile names image {image!r}, which manifests/images.yaml does not define")
        available = served(image)
        names = list(available) if wanted == "all" else list(wanted)
        unknown = [m for m in names if m not in available]
        if unknown:
            raise BenchError(
                f"unknown model(s) {', '.join(unknown)} for image {image}; `zoobench models {image}` lists "
                f"the {len(available)} it serves"
            )
        for model in names:
            if only and model not in only and f"{image}/{model}" not in only:
                continue
            settings = models_manifest.settings(image, model)
            jobs.append(
                Job(
                    image=image,
                    tag=tags[image],
                    model=model,
                    weights=weights or profile.weights_for(image),
                    batch_size=batch_size or settings.batch_size or models_manifest.defaults.batch_size,
                    timeout_s=settings.timeout_s or models_manifest.defaults.timeout_s,
                    preprocess=settings.preprocessing,
                    limit=limit or profile.limit,
                )
            )
    if only and not jobs:
        raise BenchError(f"--model {', '.join(only)}: none of these is in the profile")
    return jobs


def data_digest(data_dir: Path, limit: int | None) -> str:
    paths = list_images(data_dir)
    return digest_files(data_dir, paths[:limit] if limit else paths)


def finished(run_dir: Path, request: dict[str, Any]) -> bool:
    """True when ``run_dir`` holds an ok run made for exactly this request."""
    try:
        run = json.loads((run_dir / "run.json").read_text())
        previous = json.loads((run_dir / REQUEST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return run.get("status") == "ok" and (run_dir / "predictions.npz").is_file() and previous == request


def publish(partial: Path, final: Path) -> None:
    """Replace ``final`` by ``partial`` with renames, so a finished run is never half there."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


class Bench:
    def __init__(
        self,
        client: Any,
        jobs: list[Job],
        data_dir: Path,
        results_dir: Path,
        weights_dir: Path,
        gpus: list[str],
        console: Console,
        force: bool = False,
    ) -> None:
        self.client, self.jobs, self.console, self.force = client, jobs, console, force
        self.data_dir, self.results_dir, self.weights_dir = data_dir, results_dir, weights_dir
        self.gpus = gpus
        self.image_ids = {tag: containers.require_image(client, tag).id for tag in {j.tag for j in jobs}}

    @property
    def labels(self) -> dict[str, str]:
        return {"zoobench.results": str(self.results_dir.resolve())}

    def run(self) -> BenchSummary:
        left = containers.remove_leftovers(self.client, self.labels)
        if left:
            self.console.print(f"removed {left} container(s) left by an interrupted run")
        try:
            return self._run()
        finally:
            containers.remove_leftovers(self.client, self.labels)

    def _run(self) -> BenchSummary:
        digests: dict[int | None, str] = {}  # one hash per distinct --limit actually used
        summary = BenchSummary()
        todo: queue.Queue[Job] = queue.Queue()
        for job in self.jobs:
            if job.limit not in digests:
                digests[job.limit] = data_digest(self.data_dir, job.limit)
            request = job.request(self.image_ids[job.tag], digests[job.limit])
            if not self.force and finished(self.results_dir / job.run_name, request):
                summary.outcomes.append(Outcome(job, "reused", "finished earlier with the same image, weights and data"))
            else:
                todo.put(job)
        lock = threading.Lock()
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=self.console, transient=False,
        ) as progress:
            overall = progress.add_task("models", total=len(self.jobs), completed=summary.count("reused"), detail="")

            def worker(gpu: str | None) -> None:
                lane = progress.add_task(f"gpu {gpu}" if gpu else "cpu", total=None, detail="waiting")
                while True:
                    try:
                        job = todo.get_nowait()
                    except queue.Empty:
                        progress.update(lane, detail="done", visible=False)
                        return
                    outcome = self._run_job(job, gpu, digests[job.limit], progress, lane)
                    with lock:
                        summary.outcomes.append(outcome)
                    progress.advance(overall)

            lanes = [threading.Thread(target=worker, args=(g,)) for g in (self.gpus or [None])]
            for t in lanes:
                t.start()
            for t in lanes:
                t.join()
        order = {j.run_name: i for i, j in enumerate(self.jobs)}
        summary.outcomes.sort(key=lambda o: order[o.job.run_name])
        return summary

    def _run_job(self, job: Job, gpu: str | None, digest: str, progress: Progress, lane: Any) -> Outcome:
        final = self.results_dir / job.run_name
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        batch = job.batch_size
        while True:
            shutil.rmtree(partial, ignore_errors=True)
            label = f"{job.image}/{job.model} (batch {batch})"
            progress.update(lane, detail=f"{label}: starting")

            def on_progress(p: dict[str, Any], label: str = label) -> None:
                progress.update(lane, detail=f"{label}: {p['done']}/{p['total']} images, {p['images_per_second']:.1f} img/s")

            args = ["run", "--model", job.model, "--data", "/data", "--out", "/out",
                    "--batch-size", str(batch), "--weights", job.weights,
                    "--device", "cuda" if gpu is not None else "cpu"]
            if job.limit:
                args += ["--limit", str(job.limit)]
            if job.preprocess:
                args += ["--preprocess", json.dumps(job.preprocess, sort_keys=True)]
            result = containers.predict_in_container(
                self.client, job.tag, args, self.data_dir, partial, self.weights_dir,
                log_path=self.results_dir / "logs" / f"{job.run_name}.log", timeout_s=job.timeout_s, gpu=gpu,
                environment={"ZOOBENCH_IMAGE_ID": self.image_ids[job.tag], "ZOOBENCH_IMAGE_TAG": job.tag},
                on_progress=on_progress, labels=self.labels,
            )
            log = str(result.log_path)
            if result.exit_code == 3 and batch > 1:
                batch //= 2
                self.console.print(f"[yellow]{job.run_name}: out of memory, retrying at batch size {batch}")
                continue
            if result.exit_code == 0 and (partial / "run.json").is_file():
                request = job.request(self.image_ids[job.tag], digest)
                (partial / REQUEST_FILE).write_text(json.dumps(request, indent=2, sort_keys=True) + "\n")
                publish(partial, final)
                run = json.loads((final / "run.json").read_text())
                return Outcome(job, "ok", "", batch, run.get("images_per_second"), log)
            shutil.rmtree(partial, ignore_errors=True)
            if result.exit_code == 4:
                return Outcome(job, "skipped", result.reason, batch, None, log)
            return Outcome(job, "failed", result.reason, batch, None, log)


def summary_rows(summary: BenchSummary) -> list[dict[str, Any]]:
    return [
        {**{k: v for k, v in asdict(o).items() if k != "job"}, "image": o.job.image, "model": o.job.model,
         "weights": o.job.weights}
        for o in summary.outcomes
    ]
