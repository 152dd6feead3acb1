"""Run a bench: one container per model, resumable, OOM-retrying, with live progress.

Nothing a job does can end the bench silently: any error while running a job becomes that job's
failed outcome with one line, and the other jobs go on. Ctrl-C or SIGTERM start no new container,
kill the running ones and leave no ``.partial`` folder behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from zoobench_contract.cli import EXIT_FAILED, EXIT_OOM, EXIT_USAGE, EXIT_WEIGHTS
from zoobench_contract.dataset import file_sha256
from zoobench_contract.outputs import write_json

from ..convert.bench import converted_binds
from ..errors import first_line
from . import containers, pixelcache
from .layout import OLD_SUFFIX, OUT_MOUNT, OUTPUTS, PARTIAL_SUFFIX, PIXELS_MOUNT, REQUEST_FILE, RUN_FILE, log_dir
from .mounts import Bind
from .plan import Job, lane_plan, predict_run_args


def progress_display(console: Console) -> Progress:
    """The live display of model lanes and cache builds: description, bar, count, detail, time."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console, transient=False,
    )


@dataclass
class Outcome:
    job: Job
    status: str  # ok | reused | skipped | failed | interrupted
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

    def in_order_of(self, jobs: list[Job]) -> "BenchSummary":
        """The outcomes sorted as ``jobs`` (the profile's order), whatever order they finished in."""
        order = {j.run_name: i for i, j in enumerate(jobs)}
        self.outcomes.sort(key=lambda o: order[o.job.run_name])
        return self


def finished(run_dir: Path, request: dict[str, Any]) -> bool:
    """True when ``run_dir`` holds an ok run made for exactly this request, with its output files
    unchanged since they were published (a corrupted predictions.npz is never reused), and, when it
    read a pixel cache, one whose chunks it verified (run.json records the cache's digest)."""
    try:
        record = json.loads((run_dir / REQUEST_FILE).read_text())
        run = json.loads((run_dir / RUN_FILE).read_text())
        if record.get("request") != request or run.get("status") != "ok":
            return False
        if run.get("pixel_cache") is not None and not run["pixel_cache"].get("digest"):
            return False  # made from a pixel cache that was not verified (an earlier release): not trusted
        return all(file_sha256(run_dir / name) == record["sha256"][name] for name in OUTPUTS)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def publish(partial: Path, final: Path, request: dict[str, Any], pixel_cache: str | None = None) -> None:
    """Record the request, output checksums and the pixel cache read (its key and the digest run.json
    says the run verified; not part of the request), then replace ``final`` by ``partial`` with
    renames, so a finished run is never half there."""
    sums = {name: file_sha256(partial / name) for name in OUTPUTS}
    digest = None
    if pixel_cache is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            digest = (json.loads((partial / RUN_FILE).read_text()).get("pixel_cache") or {}).get("digest")
    write_json(partial / REQUEST_FILE, {"request": request, "sha256": sums, "pixel_cache": pixel_cache,
                                        "pixel_cache_digest": digest})
    swap_into_place(partial, final)


def swap_into_place(partial: Path, final: Path) -> None:
    """Replace ``final`` by ``partial`` with renames (the previous one kept as ``.old`` during the swap)."""
    old = final.with_name(final.name + OLD_SUFFIX)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class DataMount:
    """How the containers see the data: the folder's path inside them and the read-only binds."""

    path: str
    binds: list[Bind]
    digests: dict[int | None, str]  # --limit -> data digest
    counts: dict[int | None, int] = field(default_factory=dict)  # --limit -> number of images


@dataclass(frozen=True)
class PixelSettings:
    """Where pixel caches live and how to learn an image's Pillow version (its `predict info`)."""

    root: Path
    pillow: Callable[[str], str]


class Bench:
    def __init__(
        self,
        client: Any,
        jobs: list[Job],
        data: DataMount,
        results_dir: Path,
        weights_dir: Path,
        gpus: list[str],
        console: Console,
        run_id: str,
        force: bool = False,
        weights_binds: dict[str, Bind] | None = None,
        jobs_per_gpu: int = 1,
        pixels: PixelSettings | None = None,
        peers: list[Job] | None = None,
        image_ids: dict[str, str] | None = None,
    ) -> None:
        """``peers``: jobs of the same bench that run elsewhere (the other tasks of a Slurm array); they
        count when deciding which jobs share a pixel cache, so one task builds the cache they all read.
        ``image_ids``: tag -> image id when known (a Slurm submit host may have no engine to ask); else
        each job's image is looked up, and must be built."""
        self.client, self.jobs, self.console, self.force = client, jobs, console, force
        self.data, self.results_dir, self.weights_dir = data, results_dir, weights_dir
        self.gpus, self.run_id = gpus, run_id
        # a CPU-only job (its image's cpu variant in a GPU bench) runs on one CPU lane of its own, never a GPU's
        self.lanes = lane_plan(gpus, jobs_per_gpu) + ([(None, "cpu")] if gpus and any(j.cpu_only for j in jobs) else [])
        self.weights_binds = weights_binds or {}
        self.pixels = pixels
        self.peers = peers or []
        self.pixel_dirs: dict[str, Path] = {}  # run name -> cache folder mounted at /pixels
        self.cancel = threading.Event()
        self.image_ids = image_ids if image_ids is not None else {tag: containers.require_image(client, tag).id for tag in {j.tag for j in jobs}}
        self.weights_sha = {path: file_sha256(Path(path)) for path in self.weights_binds}

    @property
    def labels(self) -> dict[str, str]:
        return {containers.LABEL_RESULTS: str(self.results_dir.resolve()), containers.LABEL_RUN: self.run_id}

    def run(self, clean: bool = True) -> BenchSummary:
        """Run every unfinished job. ``clean``: first remove what a dead run left on the results folder
        (its containers, ``.partial`` folders); a Slurm task, one of many sharing the folder, does not."""
        if clean:
            self.clean()
        try:
            return self._run()
        finally:
            containers.kill_run(self.client, self.run_id)

    def clean(self) -> int:
        """Remove the containers and ``.partial`` folders that an interrupted run left on the results folder
        (only the holder of the folder's lock calls this); returns the number of containers removed."""
        left = 0 if self.client is None else containers.remove_containers(
            self.client, self.labels[containers.LABEL_RESULTS], keep_run=self.run_id)
        if left:
            self.console.print(f"removed {left} container(s) left by an interrupted run on this results folder")
        for stale in self.results_dir.glob(f"*{PARTIAL_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)
        return left

    def request(self, job: Job) -> dict[str, Any]:
        return job.request(self.image_ids[job.tag], self.data.digests[job.limit], self.weights_sha.get(job.weights))

    def split(self) -> tuple[list[Outcome], list[Job]]:
        """The resume check and the host's weights check, the one place they are made: (outcomes settled
        without a container, reused or skipped, and the jobs still to run)."""
        settled, pending = [], []
        for job in self.jobs:
            if not self.force and finished(self.results_dir / job.run_name, self.request(job)):
                settled.append(Outcome(job, "reused", "finished earlier with the same image, weights and data"))
            elif (missing := self.missing_weights(job)) is not None:
                settled.append(Outcome(job, "skipped", missing))
            else:
                pending.append(job)
        return settled, pending

    def missing_weights(self, job: Job) -> str | None:
        """Why ``job`` cannot run for want of its weights file in the host's weights cache (None: it is
        there, or the image cannot tell where it would be and the container will say)."""
        if job.weights_file is None or (self.weights_dir / job.weights_file).is_file():
            return None
        return (f"ImageNet weights are not in the weights cache ({self.weights_dir / job.weights_file}); run "
                "`zoobench weights fetch` for this profile (needs network) or use --weights random")

    def _run(self) -> BenchSummary:
        settled, pending = self.split()
        summary = BenchSummary(list(settled))
        todo: dict[bool, queue.Queue[Job]] = {True: queue.Queue(), False: queue.Queue()}  # key: on the CPU lane
        for job in pending:
            todo[job.cpu_only or not self.gpus].put(job)
        self._prepare_pixels(pending + self.peers if pending else [])
        lock = threading.Lock()
        with progress_display(self.console) as progress:
            overall = progress.add_task("models", total=len(self.jobs), completed=len(summary.outcomes), detail="")

            def worker(gpu: str | None, name: str, finished: threading.Event) -> None:
                lane = progress.add_task(name, total=None, detail="waiting")
                try:
                    while not self.cancel.is_set():
                        try:
                            job = todo[gpu is None].get_nowait()
                        except queue.Empty:
                            break
                        outcome = self._guarded(job, gpu, progress, lane)
                        with lock:
                            summary.outcomes.append(outcome)
                        progress.advance(overall)
                    progress.update(lane, detail="done", visible=False)
                finally:
                    finished.set()

            # Workers report their end through events: Thread.join interrupted by Ctrl-C can make
            # is_alive() lie (CPython gh-90882), and a worker must finish cleaning up before we exit.
            ends = [threading.Event() for _ in self.lanes]
            for (gpu, name), end in zip(self.lanes, ends):
                threading.Thread(target=worker, args=(gpu, name, end), daemon=True).start()
            try:
                for end in ends:
                    while not end.wait(0.5):
                        pass
            except KeyboardInterrupt:
                self.cancel.set()  # workers start nothing new; running containers are killed by _wait
                containers.kill_run(self.client, self.run_id)
                for end in ends:
                    end.wait(60)
                raise
        return summary.in_order_of(self.jobs)

    def _guarded(self, job: Job, gpu: str | None, progress: Progress, lane: Any) -> Outcome:
        """Run one job; whatever goes wrong becomes this job's outcome, never the bench's end."""
        partial = self.results_dir / (job.run_name + PARTIAL_SUFFIX)
        try:
            return self._run_job(job, gpu, progress, lane)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not end the bench
            text = first_line(exc)
            where = f" ({exc.filename or self.results_dir})" if isinstance(exc, OSError) else ""
            return Outcome(job, "failed", f"{type(exc).__name__}: {text}{where}")
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _args(self, job: Job, batch: int, gpu: str | None, pixels: bool = False) -> list[str]:
        weights = self.weights_binds[job.weights].target if job.weights in self.weights_binds else job.weights
        return predict_run_args(job, batch, "cuda" if gpu is not None else "cpu", self.data.path, weights, pixels)

    # ------------------------------------------------------------ pixel cache

    def _prepare_pixels(self, pending: list[Job]) -> None:
        """Reuse or build one pixel cache per group of pending jobs that share one; never fails."""
        if self.pixels is None or not pending:
            return
        conflict = pixelcache.mount_conflict(self.data.binds)
        if conflict:
            self.console.print(f"note: no pixel cache: the data mount {conflict} overlaps {PIXELS_MOUNT}; "
                               "the models decode the images themselves", highlight=False, soft_wrap=True)
            return
        try:
            groups = pixelcache.group_jobs(pending, self.pixels.pillow, self.data.digests, self.data.counts)
        except Exception as exc:  # noqa: BLE001 - no cache is never a failed bench
            self._note(f"no pixel cache: cannot plan one ({type(exc).__name__}: {exc}); "
                       "the models decode the images themselves")
            return
        for group in groups:
            if self.cancel.is_set():
                return
            folder = pixelcache.ensure(group, self.pixels.root, self._build_cache, self._note,
                                       lambda m: self.console.print(m, highlight=False, soft_wrap=True))
            if folder is not None:
                self.pixel_dirs.update({j.run_name: folder for j in group.jobs})

    def _note(self, message: str) -> None:
        self.console.print(f"note: {message}", highlight=False, soft_wrap=True)

    def _build_cache(self, group: pixelcache.Group, partial: Path) -> str | None:
        """``predict cache`` into ``partial`` in a locked-down container; None when it exited 0."""
        c = group.config
        args = ["cache", "--data", self.data.path, "--out", OUT_MOUNT, "--resize-size", str(c.resize_size),
                "--crop-size", str(c.crop_size), "--interpolation", c.interpolation,
                "--workers", str(os.cpu_count() or 1)]
        if group.limit:
            args += ["--limit", str(group.limit)]
        evalset = group.jobs[0].evalset  # one bench, one set: the cache holds the images its runs read
        if evalset is not None:
            args += evalset.args(with_name=False)
        with progress_display(self.console) as progress:
            task = progress.add_task(f"pixels {c.describe()}", total=group.n_images, detail="starting")

            def on_progress(p: dict[str, Any]) -> None:
                progress.update(task, completed=p["done"], detail=f"{p['images_per_second']:.1f} img/s")

            with containers.handed_over(partial):
                result = containers.predict_in_container(
                    self.client, group.tag, args, self.data.binds, partial, self.weights_dir,
                    log_path=log_dir(self.results_dir) / f"pixels-{group.key}.log",
                    timeout_s=max(j.timeout_s for j in group.jobs), on_progress=on_progress,
                    labels={**self.labels, containers.LABEL_ROLE: "pixel-cache"}, cancel=self.cancel,
                )
        if result.cancelled:
            raise KeyboardInterrupt
        return None if result.exit_code == 0 else f"{result.reason}; log: {result.log_path}"

    def _drop_cache(self, folder: Path, why: str) -> None:
        """A cache that failed one model is used by none of the others (an altered cache fails them all)."""
        users = [name for name, f in self.pixel_dirs.items() if f == folder]
        for name in users:
            self.pixel_dirs.pop(name, None)
        self._note(f"{why}; {len(users)} model(s) decode the images themselves instead "
                   f"(`zoobench cache clear {folder.name}` removes the cache)")

    def _pixels_for(self, job: Job) -> Path | None:
        folder = self.pixel_dirs.get(job.run_name)
        if folder is not None and not pixelcache.still_there(folder):
            self._note(f"{job.run_name}: pixel cache {folder} is gone; this model decodes the images itself")
            self.pixel_dirs.pop(job.run_name, None)
            return None
        return folder

    def _run_job(self, job: Job, gpu: str | None, progress: Progress, lane: Any) -> Outcome:
        final = self.results_dir / job.run_name
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        binds = self.data.binds + ([self.weights_binds[job.weights]] if job.weights in self.weights_binds else [])
        binds += converted_binds(job.converted)
        batch = job.batch_size
        while True:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            pixels = self._pixels_for(job)
            label = f"{job.image}/{job.model} (batch {batch}{', cached pixels' if pixels else ''})"
            progress.update(lane, detail=f"{label}: starting")

            def on_progress(p: dict[str, Any], label: str = label) -> None:
                progress.update(lane, detail=f"{label}: {p['done']}/{p['total']} images, {p['images_per_second']:.1f} img/s")

            with containers.handed_over(partial):
                result = containers.predict_in_container(
                    self.client, job.tag, self._args(job, batch, gpu, pixels is not None),
                    binds + ([Bind(str(pixels.resolve()), PIXELS_MOUNT)] if pixels else []), partial,
                    self.weights_dir,
                    log_path=log_dir(self.results_dir) / f"{job.run_name}.log", timeout_s=job.timeout_s, gpu=gpu,
                    environment={"ZOOBENCH_IMAGE_ID": self.image_ids[job.tag], "ZOOBENCH_IMAGE_TAG": job.tag},
                    on_progress=on_progress, labels={**self.labels, containers.LABEL_ROLE: "model"},
                    limits=containers.Limits(memory=job.memory),
                    cancel=self.cancel,
                )
            log = str(result.log_path)
            if result.cancelled:
                return Outcome(job, "interrupted", result.reason, batch, None, log)
            if result.exit_code == EXIT_OOM and batch > 1:
                batch //= 2
                self.console.print(f"[yellow]{job.run_name}: out of memory, retrying at batch size {batch}")
                continue
            if result.exit_code == 0:
                if not all((partial / name).is_file() for name in OUTPUTS):
                    return Outcome(job, "failed", f"exited 0 without writing {' and '.join(OUTPUTS)}", batch, None, log)
                publish(partial, final, self.request(job), pixels.name if pixels else None)
                run = json.loads((final / RUN_FILE).read_text())
                return Outcome(job, "ok", "", batch, run.get("images_per_second"), log)
            if pixels is not None and result.exit_code in (EXIT_FAILED, EXIT_USAGE):  # the runner's own failure, not a kill
                self._drop_cache(pixels, f"{job.run_name}: failed with the pixel cache ({result.reason})")
                continue
            status = "skipped" if result.exit_code == EXIT_WEIGHTS else "failed"
            return Outcome(job, status, result.reason, batch, None, log)


def summary_rows(summary: BenchSummary) -> list[dict[str, Any]]:
    return [
        {**{k: v for k, v in asdict(o).items() if k != "job"}, "image": o.job.image, "model": o.job.model,
         "weights": o.job.weights}
        for o in summary.outcomes
    ]
