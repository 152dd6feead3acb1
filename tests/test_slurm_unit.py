"""The Slurm engine's pieces that need no cluster: the sbatch command, the plan a task reads, the GPU a
task was given, what a task that died without an outcome reports, and the one-line CLI errors."""
from __future__ import annotations

import pytest

from conftest import one_line_error, zoobench
from orchestrator.engines import slurm, slurm_task
from orchestrator.bench.plan import Job
from orchestrator.bench.runner import DataMount, Outcome
from orchestrator.bench.mounts import Bind
from orchestrator.bench.pixelcache import PixelConfig

JOBS = [Job("pytorch", "zoobench/pytorch:cpu-1", "resnet18", "random", 32, 600, {"resize_size": 240}, 3,
            memory="8g", precision="bf16", pixels=PixelConfig(240, 224, "bilinear")),
        Job("keras", "zoobench/keras:cpu-2", "resnet50", "imagenet", 16, 900, {}, None)]


def test_sbatch_command_asks_for_a_gpu_only_for_the_cuda_variant(tmp_path):
    script = tmp_path / "task.sh"
    cpu = slurm.sbatch_command(slurm.SlurmOptions(), 3, "zoobench-smoke", tmp_path, False, script)
    assert cpu[:2] == ["sbatch", "--parsable"] and "--array=0-2" in cpu and cpu[-1] == str(script)
    assert not [a for a in cpu if a.startswith("--gres")]
    assert f"--output={tmp_path}/slurm-%A_%a.out" in cpu
    cuda = slurm.sbatch_command(slurm.SlurmOptions(partition="gpu", account="lab", time_limit="1:00:00",
                                                   max_parallel=4,
                                                   sbatch_args=slurm.parse_sbatch_args(["--qos=high --mem=32G"])),
                                34, "zoobench-seed", tmp_path, True, script)
    for arg in ("--gres=gpu:1", "--array=0-33%4", "--partition=gpu", "--account=lab", "--time=1:00:00",
                "--qos=high", "--mem=32G"):
        assert arg in cuda, (arg, cuda)
    forced = slurm.sbatch_command(slurm.SlurmOptions(gres="gpu:a100:1"), 1, "z", tmp_path, False, script)
    assert "--gres=gpu:a100:1" in forced and "--array=0-0" in forced


def test_the_plan_gives_each_task_the_job_and_data_the_submitter_planned(tmp_path):
    val, weights_file = str(tmp_path / "val"), str(tmp_path / "r18.pt")
    (tmp_path / "weights").mkdir()
    (tmp_path / "r18.pt").write_bytes(b"w")
    data = DataMount(val, [Bind(val, val)], {None: "d-all", 3: "d-3"}, {None: 6, 3: 3})
    plan = slurm_task.Plan.of("run1", tmp_path / "results", tmp_path / "weights", data, JOBS,
                              {"r18.pt": Bind(weights_file, weights_file)}, True, tmp_path / "pixels", True,
                              "podman", "/shared/images")
    path = tmp_path / "results" / ".slurm" / "run1" / "plan.json"
    plan.save(path)
    back = slurm_task.Plan.load(path)
    assert [back.job(i) for i in range(2)] == JOBS
    assert back.job(0).pixels == PixelConfig(240, 224, "bilinear") and back.job(1).pixels is None
    assert back.data_mount() == data  # int and None limits survive JSON
    assert back.binds() == {"r18.pt": Bind(weights_file, weights_file)}
    assert (back.force, back.use_gpu, back.runtime, back.images_dir) == (True, True, "podman", "/shared/images")
    assert back.results_dir == str((tmp_path / "results").resolve())
    with pytest.raises(slurm_task.SlurmError, match="index 2"):
        back.job(2)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(slurm_task.SlurmError, match="bad.json"):
        slurm_task.Plan.load(tmp_path / "bad.json")


def test_the_task_script_runs_this_checkout_s_zoobench_on_the_plan(tmp_path):
    text = slurm.task_script(tmp_path / "my plan.json")
    assert text.startswith("#!/bin/bash\n")
    assert "-m orchestrator.cli slurm task" in text and f"'{tmp_path}/my plan.json'" in text


def test_a_task_uses_the_gpu_slurm_allocated(monkeypatch):
    for name in slurm_task.GPU_ENV:
        monkeypatch.delenv(name, raising=False)
    assert slurm_task.allocated_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("SLURM_JOB_GPUS", "3,5")
    assert slurm_task.allocated_gpus() == ["3", "5"]  # host indices, not the renumbered CUDA_VISIBLE_DEVICES
    monkeypatch.setenv("SLURM_STEP_GPUS", "5")
    assert slurm_task.allocated_gpus() == ["5"]


def test_outcomes_round_trip_and_a_task_that_died_says_why(tmp_path):
    plan = tmp_path / "plan.json"
    slurm_task.write_outcome(plan, 1, Outcome(JOBS[1], "failed", "timed out after 2 s", 16, None, "/r/logs/x.log"),
                             {"job": "7", "task": "1", "node": "n1", "gpus": ["0"]})
    back = slurm_task.read_outcome(plan, 1, JOBS[1])
    assert (back.status, back.reason, back.batch_size, back.log) == ("failed", "timed out after 2 s", 16, "/r/logs/x.log")
    assert slurm_task.read_outcome(plan, 0, JOBS[0]) is None
    (tmp_path / "slurm-7_0.out").write_text("zoobench slurm task 0: ...\nslurmstepd: error: *** JOB 8 CANCELLED ***\n")
    timeout = slurm.lost_outcome(JOBS[0], "7", 0, "TIMEOUT", "None", tmp_path)
    assert timeout.status == "failed" and timeout.reason.startswith("reached the Slurm time limit (--time)")
    assert "JOB 8 CANCELLED" in timeout.reason and timeout.log == str(tmp_path / "slurm-7_0.out")
    assert slurm.lost_outcome(JOBS[0], "7", 0, "CANCELLED", "", tmp_path).status == "interrupted"
    gone = slurm.lost_outcome(JOBS[0], "7", 2, "FAILED", "NonZeroExitCode", tmp_path)
    assert gone.status == "failed" and gone.reason == "Slurm task 7_2 ended FAILED (NonZeroExitCode)"


def test_cli_errors_are_one_line(tmp_path):
    one_line_error(zoobench("run", "--engine", "lsf"), "--engine 'lsf': use one of local|slurm")
    one_line_error(zoobench("run", "--runtime", "rkt"), "--runtime 'rkt': use one of docker|podman")
    one_line_error(zoobench("run", "--engine", "slurm", "--gpus", "0"), "each task gets its GPU from Slurm")
    one_line_error(zoobench("run", "--engine", "slurm", "--images-dir", str(tmp_path / "nope")),
                   "--images-dir")
    one_line_error(zoobench("slurm", "task", str(tmp_path / "plan.json"), env={"SLURM_ARRAY_TASK_ID": ""}),
                   "runs inside a Slurm array task")
    one_line_error(zoobench("slurm", "cancel", str(tmp_path)), "no Slurm array is running on")
    one_line_error(zoobench("images", "load", str(tmp_path)), "holds no image tar")
    one_line_error(zoobench("run", "--runtime", "podman", "--results", str(tmp_path / "r"),
                            env={"CONTAINER_HOST": f"unix://{tmp_path}/no.sock"}), "cannot reach Podman's API")


def test_a_live_array_record_without_squeue_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue
    (tmp_path / ".slurm").mkdir()
    (tmp_path / ".slurm" / "active.json").write_text('{"job_id": "12"}')
    with pytest.raises(slurm.SlurmError, match="cannot check"):
        slurm.refuse_if_live(tmp_path)
    monkeypatch.setattr(slurm, "task_states", lambda job: {0: ("COMPLETED", ""), 1: ("RUNNING", "")})
    monkeypatch.setattr(slurm.shutil, "which", lambda name: "/usr/bin/" + name)
    with pytest.raises(slurm.SlurmError, match="being written by Slurm array 12"):
        slurm.refuse_if_live(tmp_path)
    monkeypatch.setattr(slurm, "task_states", lambda job: {0: ("COMPLETED", ""), 1: ("CANCELLED", "")})
    slurm.refuse_if_live(tmp_path)  # over: the stale record is dropped
    assert not (tmp_path / ".slurm" / "active.json").exists()


def test_doctor_line_names_the_partitions_or_why_not(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm.cluster_summary().startswith("no sbatch on this host")
    for name, body in (("sbatch", "exit 0"), ("sinfo", "echo 'gpu* up 4 gpu:8'; echo 'cpu up 2 (null)'")):
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    assert slurm.cluster_summary() == "partitions gpu* (up, 4 node(s), gres gpu:8), cpu (up, 2 node(s), gres (null))"
    (tmp_path / "sinfo").write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller' >&2\nexit 1\n")
    assert "Unable to contact slurm controller" in slurm.cluster_summary()


def test_following_an_array_survives_a_silent_slurm_and_reports_every_ending(tmp_path, monkeypatch):
    import io

    from rich.console import Console
    from rich.progress import Progress

    jobs = [JOBS[0], JOBS[1], Job("mxnet", "zoobench/mxnet:cpu-3", "resnet18_v1", "random", 8, 60, {}, None)]
    plan = tmp_path / ".slurm" / "run1" / "plan.json"
    plan.parent.mkdir(parents=True)
    polls = iter([
        {0: ("RUNNING", ""), 1: ("PENDING", "Resources"), 2: ("PENDING", "Resources")},
        None, None, None, None,  # slurmctld did not answer: nobody is declared lost
        {0: ("COMPLETED", ""), 1: ("TIMEOUT", ""), 2: ("FAILED", "NonZeroExitCode")},
    ])
    last = {}

    def states(job_id):
        try:
            last["v"] = next(polls)
            if last["v"] is not None and last["v"][0][0] == "COMPLETED":
                slurm_task.write_outcome(plan, 0, Outcome(jobs[0], "ok", "", 32, 12.5, None), {})
                slurm_task.write_outcome(plan, 1, Outcome(jobs[1], "interrupted", "interrupted", None, None, None), {})
        except StopIteration:
            pass
        return last["v"]

    monkeypatch.setattr(slurm, "task_states", states)
    console = Console(file=io.StringIO())
    with Progress(console=console) as progress:
        got = slurm.ArrayRun("9", plan, jobs, tmp_path, progress, poll_s=0).follow()
    assert [o.status for o in got] == ["ok", "failed", "failed"]
    assert got[0].images_per_second == 12.5
    assert got[1].reason == "reached the Slurm time limit (--time)"
    assert got[2].reason == "Slurm task 9_2 ended FAILED (NonZeroExitCode)"


def test_without_an_engine_uncached_images_are_one_clear_line():
    from orchestrator.bench import imagefacts as cli
    from orchestrator.errors import BenchError

    tag = "zoobench/never-listed:cpu-000000000000"
    with pytest.raises(BenchError, match="run `zoobench models never-listed` once on a host with the images"):
        cli.image_id(None, tag)
    with pytest.raises(BenchError, match="no cached `predict list` of " + tag):
        cli.served_models(None, tag)
