"""Run a bench on Slurm from the submitting host: plan one job array (one task per unfinished model),
submit it with ``sbatch``, follow it with ``squeue`` and cancel it with ``scancel``.

Every task runs the very code of a local run on its node (``zoobench slurm task PLAN``, see
:mod:`orchestrator.cli.slurm` and :mod:`orchestrator.engines.slurm_task`): a
:class:`~orchestrator.bench.runner.Bench` of one job, so the container launch, the ``.partial`` -> rename
publish and the resume check are the local ones. A task handles the SIGTERM of ``scancel`` (or of a time
limit) by killing its container; ``scancel`` alone would leave a ``docker run`` running.

Nothing a user or a hand-edited file gives reaches a shell or a mount unchecked: ``--sbatch-arg``
values are split into words and checked before the bench starts (:func:`parse_sbatch_args`), and
a task refuses a plan whose fields have the wrong type or whose binds are unsafe
(:meth:`~orchestrator.engines.slurm_task.Plan.load`), each in one line.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from zoobench_contract.outputs import write_json

from zoobench_contract.cli import PROGRESS_PREFIX

from ..bench.layout import LOGS_DIR
from ..bench.plan import Job
from ..bench.runner import Bench, BenchSummary, Outcome, progress_display
from ..errors import SlurmError
from ..paths import ROOT
from .slurm_task import Plan, read_outcome, state_dir

ACTIVE_FILE = "active.json"
PLAN_FILE = "plan.json"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
RESERVED_OPTIONS = ("--array", "--output", "--parsable", "--job-name", "--export", "--wrap")  # sbatch_command's
RESERVED_SHORT = ("-a", "-o", "-J")  # --array, --output, --job-name


@dataclass(frozen=True)
class SlurmOptions:
    """How the array is submitted; ``gres`` None means ``gpu:1`` for the cuda variant, none for cpu."""

    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None
    gres: str | None = None
    max_parallel: int | None = None
    sbatch_args: tuple[str, ...] = ()  # argv tokens, as :func:`parse_sbatch_args` made them
    runtime: str = "docker"
    images_dir: str | None = None
    poll_s: float = 1.0


# ---------------------------------------------------------------- Slurm commands

def _slurm(cmd: list[str], what: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(cmd[0])
    if exe is None:
        raise SlurmError(f"{cmd[0]} not found: --engine slurm runs where the Slurm client commands are "
                         "(a login node of the cluster); install slurm-client or drop --engine slurm")
    try:
        return subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{what}: {cmd[0]} did not answer in {timeout:g} s; is slurmctld up (SLURM_CONF)?") from None


def _reserved(option: str) -> bool:
    """An option zoobench sets itself (or an abbreviation sbatch would take for one)."""
    if option.startswith("--"):
        return len(option) > 3 and any(r.startswith(option) for r in RESERVED_OPTIONS)
    return option in RESERVED_SHORT


def parse_sbatch_args(values: list[str]) -> tuple[str, ...]:
    """The ``--sbatch-arg`` values as sbatch argv tokens, split as a POSIX shell splits words (quotes
    kept together, nothing expanded: no shell ever runs them). Each token must be an option (``-...``)
    or the value of the option before it when that has no ``=``: ``--qos=high``, ``--qos high`` and
    ``-p gpu`` pass, a stray word (which sbatch would take for the batch script) does not. Options
    zoobench sets itself are refused; ``--export`` only adds to ``ALL`` (``--export=ALL,VAR=value``)."""
    tokens: list[str] = []
    for value in values:
        try:
            words = shlex.split(value)
        except ValueError:
            raise SlurmError(f"--sbatch-arg {value!r}: unclosed quote; close it, or quote the whole argument "
                             "once for your shell, e.g. --sbatch-arg '--comment=my run'") from None
        if not words:
            raise SlurmError(f"--sbatch-arg {value!r}: empty; give an sbatch option, e.g. --sbatch-arg --qos=high")
        takes_value = False
        for word in words:
            if takes_value and not word.startswith("-"):
                takes_value = False
                continue
            option = word.split("=", 1)[0] if word.startswith("--") else word[:2]
            if not word.startswith("-") or word in ("-", "--"):
                raise SlurmError(f"--sbatch-arg {value!r}: {word!r} is not an sbatch option (options start with "
                                 "'-'; a value follows its option: --qos=high or --qos high)")
            if _reserved(option) and not (option == "--export" and word.startswith("--export=ALL")):
                raise SlurmError(f"--sbatch-arg {value!r}: zoobench sets {option} itself ("
                                 f"{', '.join(RESERVED_OPTIONS)}; --export only as --export=ALL,VAR=value); drop it")
            takes_value = "=" not in word
        tokens += words
    return tuple(tokens)


def sbatch_command(options: SlurmOptions, n_tasks: int, name: str, log_dir: Path, gpu: bool,
                   script: Path) -> list[str]:
    """The ``sbatch`` command of one array of ``n_tasks`` tasks."""
    array = f"0-{n_tasks - 1}" + (f"%{options.max_parallel}" if options.max_parallel else "")
    cmd = ["sbatch", "--parsable", f"--job-name={name}", f"--array={array}",
           f"--output={log_dir}/slurm-%A_%a.out", "--export=ALL"]
    gres = options.gres if options.gres is not None else ("gpu:1" if gpu else "")
    if gres:
        cmd.append(f"--gres={gres}")
    for flag, value in (("--partition", options.partition), ("--account", options.account),
                        ("--time", options.time_limit)):
        if value:
            cmd.append(f"{flag}={value}")
    return cmd + list(options.sbatch_args) + [str(script)]


def task_script(plan: Path) -> str:
    """The batch script of every task: this zoobench, on the shared filesystem, runs the plan's task."""
    python = shlex.quote(sys.executable)
    root = shlex.quote(str(ROOT))
    return (f"#!/bin/bash\n# zoobench Slurm task: one model of {plan}\ncd {root}\n"
            f"exec {python} -m orchestrator.cli slurm task {shlex.quote(str(plan))}\n")


def submit(cmd: list[str]) -> str:
    proc = _slurm(cmd, "sbatch")
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise SlurmError(f"sbatch refused the array: {why}; check --partition/--account/--time/--sbatch-arg")
    return proc.stdout.strip().split(";")[0]


def task_states(job_id: str) -> dict[int, tuple[str, str]] | None:
    """Array task index -> (state, reason) for the tasks Slurm still knows (``squeue --states=all``);
    empty once the array is over and purged, None when Slurm did not answer (try again later)."""
    try:
        proc = _slurm(["squeue", "--states=all", "-r", "-h", "-j", job_id, "-o", "%i|%T|%r"], "squeue", timeout=30)
    except SlurmError:
        if shutil.which("squeue") is None:
            raise
        return None
    states: dict[int, tuple[str, str]] = {}
    if proc.returncode != 0:
        return states if "Invalid job id" in proc.stderr else None
    for line in proc.stdout.splitlines():
        ident, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        _, _, task = ident.partition("_")
        if task.isdigit():
            states[int(task)] = (state.strip(), reason.strip())
    return states


def scancel(job_id: str) -> None:
    proc = _slurm(["scancel", job_id], "scancel")
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        raise SlurmError(f"scancel {job_id}: {proc.stderr.strip() or proc.returncode}")


def wait_over(job_id: str, timeout_s: float = 120, poll_s: float = 0.5) -> bool:
    """Wait until no task of the array is pending or running; True when over in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = task_states(job_id)
        if states is not None and all(state in TERMINAL for state, _ in states.values()):
            return True
        time.sleep(poll_s)
    return False


def cluster_summary() -> str:
    """One line for `zoobench doctor`: the partitions this host can submit to, or why it cannot."""
    if shutil.which("sbatch") is None:
        return "no sbatch on this host (--engine slurm runs on a Slurm login node)"
    try:
        proc = _slurm(["sinfo", "-h", "-o", "%P %a %D %G"], "sinfo", timeout=15)
    except SlurmError as exc:
        return str(exc)
    if proc.returncode != 0:
        return f"sinfo failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]} (SLURM_CONF?)"
    parts = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    return "partitions " + ", ".join(f"{p[0]} ({p[1]}, {p[2]} node(s), gres {p[3]})" for p in parts if len(p) >= 4)


# ---------------------------------------------------------------- the live array of a results folder

def active_record(results: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir(results) / ACTIVE_FILE).read_text())
    except (OSError, ValueError):
        return None


def live_array(results: Path) -> str | None:
    """The job id of an array still pending or running on ``results``; a finished one's record is dropped."""
    record = active_record(results)
    if record is None:
        return None
    job_id = str(record.get("job_id"))
    if shutil.which("squeue") is None:
        raise SlurmError(f"{results} has a Slurm array ({job_id}) that this host cannot check (no squeue); "
                         f"run on a Slurm login node, or delete {state_dir(results) / ACTIVE_FILE} if it is over")
    states = task_states(job_id)
    if states is None:
        raise SlurmError(f"{results} has a Slurm array ({job_id}) and squeue does not answer; try again when "
                         "slurmctld is up, or `zoobench slurm cancel` it")
    if any(state not in TERMINAL for state, _ in states.values()):
        return job_id
    (state_dir(results) / ACTIVE_FILE).unlink(missing_ok=True)
    return None


def refuse_if_live(results: Path) -> None:
    """Nothing one run does may break another: no bench starts on a folder a live array writes to."""
    job_id = live_array(results)
    if job_id is not None:
        raise SlurmError(f"results folder {results} is being written by Slurm array {job_id}; wait for it, or "
                         f"stop it with `zoobench slurm cancel {results}`")


def cancel(results: Path, remove_containers: Callable[[], int], console: Console) -> tuple[str, int]:
    """Cancel the live array of ``results``, wait for its tasks to stop their containers, then remove any
    container of the folder still on this host. Returns (job id, containers removed)."""
    record = active_record(results)
    if record is None:
        raise SlurmError(f"no Slurm array is running on {results} (no {state_dir(results) / ACTIVE_FILE})")
    job_id = str(record["job_id"])
    scancel(job_id)
    if not wait_over(job_id):
        console.print(f"note: array {job_id} still has tasks after 120 s; removing its containers anyway")
    removed = remove_containers()
    (state_dir(results) / ACTIVE_FILE).unlink(missing_ok=True)
    return job_id, removed


# ---------------------------------------------------------------- submit and follow

def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _progress_of(log: Path) -> dict[str, Any] | None:
    """The last progress record in a model's log (the tail only: logs can be long)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.path.getsize(log) - 8192))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        if line.startswith(PROGRESS_PREFIX):
            try:
                return json.loads(line[len(PROGRESS_PREFIX):])
            except ValueError:
                return None
    return None


def lost_outcome(job: Job, job_id: str, index: int, state: str, reason: str, log_dir: Path) -> Outcome:
    """A task that ended without writing its outcome (killed hard, node failure, bad environment)."""
    out = log_dir / f"slurm-{job_id}_{index}.out"
    last = _last_line(out)
    why = {"TIMEOUT": "reached the Slurm time limit (--time)", "CANCELLED": "cancelled in Slurm (scancel)",
           "NODE_FAIL": "its node failed", "PREEMPTED": "preempted", "OUT_OF_MEMORY": "out of memory (Slurm)"}
    text = why.get(state, f"Slurm task {job_id}_{index} ended {state or 'unseen'}"
                   + (f" ({reason})" if reason and reason != "None" else ""))
    status = "interrupted" if state in ("CANCELLED", "PREEMPTED") else "failed"
    return Outcome(job, status, text + (f"; last line of {out}: {last}" if last else ""), None, None, str(out))


class ArrayRun:
    """One submitted array: follows its tasks to the end with live progress, or cancels it."""

    def __init__(self, job_id: str, plan_path: Path, jobs: list[Job], results: Path, progress: Any,
                 poll_s: float = 1.0) -> None:
        self.job_id, self.plan_path, self.jobs, self.results = job_id, plan_path, jobs, results
        self.progress, self.poll_s = progress, poll_s
        self.log_dir = results / LOGS_DIR
        self.done: dict[int, Outcome] = {}

    def follow(self) -> list[Outcome]:
        overall = self.progress.add_task(f"slurm array {self.job_id}", total=len(self.jobs), detail="submitted")
        lanes: dict[int, Any] = {}
        gone: dict[int, int] = {}  # task -> polls seen over without an outcome (it may be writing it)
        while len(self.done) < len(self.jobs):
            polled = task_states(self.job_id)
            states = polled or {}
            for i, job in enumerate(self.jobs):
                if i in self.done:
                    continue
                state, reason = states.get(i, ("", ""))
                outcome = read_outcome(self.plan_path, i, job)
                if outcome is None and polled is not None and (state in TERMINAL or not state):
                    gone[i] = gone.get(i, 0) + 1
                    if gone[i] >= 3:
                        outcome = lost_outcome(job, self.job_id, i, state, reason, self.log_dir)
                if outcome is not None:
                    if outcome.status == "interrupted" and state == "TIMEOUT":
                        outcome.status, outcome.reason = "failed", "reached the Slurm time limit (--time)"
                    self.done[i] = outcome
                    self.progress.advance(overall)
                    if i in lanes:
                        self.progress.update(lanes.pop(i), visible=False)
                    continue
                if state == "RUNNING":
                    if i not in lanes:
                        lanes[i] = self.progress.add_task(f"task {i}", total=None, detail="")
                    p = _progress_of(self.log_dir / f"{job.run_name}.log")
                    what = (f"{p['done']}/{p['total']} images, {p['images_per_second']:.1f} img/s" if p
                            else "starting")
                    self.progress.update(lanes[i], detail=f"{job.image}/{job.model}: {what}")
            counts = {s: sum(1 for st, _ in states.values() if st == s) for s in ("PENDING", "RUNNING")}
            self.progress.update(overall, detail=f"{counts['RUNNING']} running, {counts['PENDING']} pending")
            if len(self.done) < len(self.jobs):
                time.sleep(self.poll_s)
        return [self.done[i] for i in range(len(self.jobs))]


def run_array(bench: Bench, options: SlurmOptions, name: str, pixel_root: Path | None, use_gpu: bool,
              console: Console) -> BenchSummary:
    """Submit the unfinished jobs of ``bench`` as one array, follow it to the end, return the summary.
    The caller holds the results folder's lock and has checked that no array of it is live
    (:func:`refuse_if_live`). Ctrl-C (or SIGTERM) cancels the array, waits for its tasks to stop
    their containers and re-raises."""
    bench.clean()
    reused, pending = bench.split()
    summary = BenchSummary(list(reused))
    if not pending:
        return summary
    folder = state_dir(bench.results_dir) / bench.run_id
    folder.mkdir(parents=True, exist_ok=True)
    bench.weights_dir.mkdir(parents=True, exist_ok=True)  # the plan names existing folders only
    plan_path = folder / PLAN_FILE
    Plan.of(bench.run_id, bench.results_dir, bench.weights_dir, bench.data, pending, bench.weights_binds,
            bench.force, pixel_root, use_gpu, options.runtime, options.images_dir).save(plan_path)
    script = folder / "task.sh"
    script.write_text(task_script(plan_path))
    script.chmod(0o755)
    log_dir = bench.results_dir.resolve() / LOGS_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    job_id = submit(sbatch_command(options, len(pending), name, log_dir, use_gpu, script))
    write_json(state_dir(bench.results_dir) / ACTIVE_FILE,
               {"job_id": job_id, "plan": str(plan_path), "run_id": bench.run_id, "models": len(pending)})
    console.print(f"submitted Slurm array {job_id}: {len(pending)} task(s), one per model "
                  f"(logs: {log_dir}/slurm-{job_id}_*.out)", highlight=False, soft_wrap=True)
    try:
        with progress_display(bench.console) as progress:
            array = ArrayRun(job_id, plan_path, pending, bench.results_dir, progress, options.poll_s)
            try:
                summary.outcomes += array.follow()
            except KeyboardInterrupt:
                console.print(f"cancelling Slurm array {job_id} and stopping its containers ...")
                cancel(bench.results_dir, bench.clean, console)
                raise
    finally:
        (state_dir(bench.results_dir) / ACTIVE_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    return summary.in_order_of(bench.jobs)
