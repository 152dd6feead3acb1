"""What one Slurm array task does on its compute node: read and check the plan the submitter wrote
(:class:`Plan`), run its job as a local bench of one model, and write the outcome beside the plan.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError
from rich.console import Console

from zoobench_contract.outputs import write_json

from ..bench import containers, imagefacts, mounts
from ..bench.mounts import Bind
from ..bench.plan import Job
from ..bench.runner import Bench, DataMount, Outcome, PixelSettings
from ..errors import BenchError, EngineError, ImageStoreError, SlurmError, first_line
from ..images import store as imagestore

STATE_DIR = ".slurm"  # RESULTS/.slurm/: the live array's record and each submission's plan
GPU_ENV = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")


# ---------------------------------------------------------------- the plan a task reads

@dataclass
class Plan:
    """Everything a task needs to run its job as the local bench would, written once per submission.
    :meth:`load` checks a plan as it checks any input: every field's type (pydantic), and binds that
    mount host paths at their own path, none onto the image's files (:func:`~orchestrator.bench.mounts.check_target`)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    run_id: str
    results_dir: str
    weights_dir: str
    data_path: str
    data_binds: list[Bind]
    digests: list[tuple[int | None, str]]
    counts: list[tuple[int | None, int]]
    jobs: list[Job]
    weights_binds: dict[str, Bind] = field(default_factory=dict)
    force: bool = False
    pixel_root: str | None = None
    use_gpu: bool = False
    runtime: str = "docker"
    images_dir: str | None = None

    @classmethod
    def of(cls, run_id: str, results_dir: Path, weights_dir: Path, data: DataMount, jobs: list[Job],
           weights_binds: dict[str, Bind], force: bool, pixel_root: Path | None, use_gpu: bool,
           runtime: str, images_dir: str | None) -> "Plan":
        return cls(run_id, str(results_dir.resolve()), str(weights_dir.resolve()), data.path, list(data.binds),
                   list(data.digests.items()), list(data.counts.items()), list(jobs), dict(weights_binds), force,
                   str(pixel_root.resolve()) if pixel_root else None, use_gpu, runtime, images_dir)

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "Plan":
        """The plan at ``path``, checked; SlurmError (one line naming the file and the field) if it is not one."""
        try:
            plan = TypeAdapter(cls).validate_json(Path(path).read_bytes())
        except OSError as exc:
            raise SlurmError(f"Slurm task plan {path}: cannot read it ({exc.strerror or exc}); submit the bench "
                             "again") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = f"field {'.'.join(map(str, first['loc']))}: " if first["loc"] else ""
            raise SlurmError(f"Slurm task plan {path}: {where}{first['msg']}; submit the bench again") from None
        problem = plan.problem()
        if problem:
            raise SlurmError(f"Slurm task plan {path}: {problem}; submit the bench again")
        return plan

    def problem(self) -> str | None:
        """What makes this plan unsafe or unusable ("field F: why"), or None."""
        for name in ("results_dir", "weights_dir"):
            folder = getattr(self, name)
            if not os.path.isabs(folder) or not os.path.isdir(folder):
                return f"field {name}: {folder!r} is not an absolute path of an existing folder"
        if not self.data_binds or self.data_binds[0].target != self.data_path:
            return f"field data_binds.0: the first bind must mount the data folder at data_path {self.data_path!r}"
        binds = [(f"data_binds.{i}", b) for i, b in enumerate(self.data_binds)]
        binds += [(f"weights_binds.{k}", b) for k, b in self.weights_binds.items()]
        for name, bind in binds:
            try:
                mounts.check_target(os.path.normpath(bind.target), "bind target")  # /a/../usr is /usr
            except mounts.MountError:
                return f"field {name}: bind target {bind.target!r} would hide the runner image's own files"
            if bind.source != bind.target or not os.path.isabs(bind.source):
                return f"field {name}: a bind mounts an absolute host path at that same path, not {bind.source!r} " \
                       f"at {bind.target!r}"
            if name.startswith("weights_binds.") and not os.path.isfile(bind.source):
                return f"field {name}: weights file {bind.source!r} does not exist"
        for i, job in enumerate(self.jobs):
            for source, folder in job.converted:
                if not os.path.isabs(folder) or not os.path.isdir(folder):
                    return f"field jobs.{i}.converted: {source} conversions {folder!r} are not an existing absolute folder"
        return None

    def job(self, index: int) -> Job:
        if not 0 <= index < len(self.jobs):
            raise SlurmError(f"Slurm task index {index} is not in the plan's {len(self.jobs)} jobs")
        return self.jobs[index]

    def data_mount(self) -> DataMount:
        return DataMount(self.data_path, list(self.data_binds), dict(self.digests), dict(self.counts))

    def binds(self) -> dict[str, Bind]:
        return dict(self.weights_binds)


def state_dir(results: Path) -> Path:
    return Path(results) / STATE_DIR


def outcome_path(plan_path: Path, index: int) -> Path:
    return Path(plan_path).parent / f"task-{index}.json"


def write_outcome(plan_path: Path, index: int, outcome: Outcome, where: dict[str, Any]) -> None:
    """A task's outcome, written atomically beside the plan for the submitter to collect."""
    write_json(outcome_path(plan_path, index), {
        "status": outcome.status, "reason": outcome.reason, "batch_size": outcome.batch_size,
        "images_per_second": outcome.images_per_second, "log": outcome.log, "slurm": where})


def read_outcome(plan_path: Path, index: int, job: Job) -> Outcome | None:
    try:
        raw = json.loads(outcome_path(plan_path, index).read_text())
    except (OSError, ValueError):
        return None
    return Outcome(job, raw["status"], raw.get("reason", ""), raw.get("batch_size"), raw.get("images_per_second"),
                   raw.get("log"))


def allocated_gpus() -> list[str]:
    """The GPUs Slurm gave this task (host indices), from the first of :data:`GPU_ENV` that is set."""
    for name in GPU_ENV:
        value = os.environ.get(name, "").strip()
        if value and value not in ("NoDevFiles", "none"):
            return [g.strip() for g in value.split(",") if g.strip()]
    return []


def task_where() -> dict[str, Any]:
    return {"job": os.environ.get("SLURM_ARRAY_JOB_ID"), "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "node": os.environ.get("SLURMD_NODENAME"), "gpus": allocated_gpus()}


def run_task(plan_file: Path, index: int, console: Console) -> Outcome:
    """Array task ``index`` on this node: a :class:`Bench` of the plan's job ``index``, run as a local
    bench runs it (SIGTERM from scancel or a time limit kills its container); its outcome is written
    beside the plan for the submitter."""
    plan = Plan.load(plan_file)
    job = plan.job(index)
    where = task_where()
    console.print(f"zoobench slurm task {index}: {job.image}/{job.model} on {where['node']} (GPUs: "
                  f"{','.join(where['gpus']) or 'none'})", highlight=False)
    try:
        client = containers.connect(plan.runtime)
        if plan.images_dir:
            for tag in imagestore.load_missing(client, [job.tag], Path(plan.images_dir)):
                console.print(f"loaded {tag} from {plan.images_dir}", highlight=False)
        gpus = where["gpus"][:1] if plan.use_gpu else []
        if plan.use_gpu and not gpus:
            raise BenchError("Slurm gave this task no GPU; submit with --gres gpu:1 (the default for --variant cuda)")
        peers = [plan.job(i) for i in range(len(plan.jobs)) if i != index]
        pixels = (PixelSettings(Path(plan.pixel_root), lambda tag: imagefacts.pillow_version(client, tag))
                  if plan.pixel_root else None)
        bench = Bench(client, [job], plan.data_mount(), Path(plan.results_dir), Path(plan.weights_dir), gpus, console,
                      run_id=f"{plan.run_id}-{index}", force=plan.force, weights_binds=plan.binds(), pixels=pixels,
                      peers=peers)
        outcome = bench.run(clean=False).outcomes[0]
    except KeyboardInterrupt:
        outcome = Outcome(job, "interrupted", "interrupted (the Slurm task was cancelled)")
    except (BenchError, EngineError, ImageStoreError, OSError) as exc:
        outcome = Outcome(job, "failed", first_line(exc, type(exc).__name__))
    write_outcome(plan_file, index, outcome, where)
    console.print(f"{job.image}/{job.model}: {outcome.status}{': ' + outcome.reason if outcome.reason else ''}",
                  highlight=False, soft_wrap=True)
    return outcome
