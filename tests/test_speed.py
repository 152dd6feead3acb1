"""``zoobench speed`` (docker): bench.json published and reused, a killed speed bench resumed, and
``zoobench run --mode`` recorded and kept apart from default-mode runs in the resume key."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import zoobench

FAST = ["--batch-sizes", "1,2", "--iterations", "2", "--warmup", "1"]


def timed(results: Path) -> dict[str, int]:
    """Published timings (not ``.partial``) -> bench.json mtime."""
    return {p.parent.name: p.stat().st_mtime_ns for p in (results / "speed").glob("*/bench.json")
            if not p.parent.name.endswith(".partial")}


def job(**kw):
    from orchestrator.bench.plan import Job

    return Job(**{"image": "pytorch", "tag": "zoobench/pytorch:cpu-x", "model": "resnet18", "weights": "random",
                  "batch_size": 32, "timeout_s": 60, "preprocess": {}, "limit": None, **kw})


def test_batch_sizes_are_parsed_and_checked():
    from orchestrator.bench.speed import parse_batch_sizes
    from orchestrator.errors import BenchError

    assert parse_batch_sizes("1,8, 32") == (1, 8, 32)
    for bad in ("", "0", "1,1", "a,2", "-1"):
        with pytest.raises(BenchError, match="--batch-sizes"):
            parse_batch_sizes(bad)


def test_request_args_and_names():
    from orchestrator.bench.speed import SpeedRequest, bench_args, speed_name, speed_request

    req = SpeedRequest(batch_sizes=(1, 2), warmup=1, iterations=2)
    j = job(mode="channels-last", precision="bf16")
    assert speed_name(job()) == "pytorch-resnet18" and speed_name(j) == "pytorch-resnet18+bf16+channels-last"
    args = bench_args(req, j, "cpu")
    assert args[:3] == ["bench", "--model", "resnet18"]
    assert {"--batch-sizes": "1,2", "--mode": "channels-last", "--precision": "bf16", "--out": "/out"}.items() <= \
        dict(zip(args[1::2], args[2::2])).items()
    r = speed_request(req, j, "sha256:abc", "cpu")
    assert r == {"image": "pytorch", "image_id": "sha256:abc", "model": "resnet18", "weights": "random",
                 "batch_sizes": [1, 2], "warmup": 1, "iterations": 2, "precision": "bf16", "mode": "channels-last",
                 "device": "cpu"}


def test_publish_then_finished_only_for_the_same_request_and_file(tmp_path):
    from orchestrator.bench.speed import finished, publish

    partial, final = tmp_path / "a.partial", tmp_path / "a"
    partial.mkdir()
    (partial / "bench.json").write_text('{"model": "m"}')
    publish(partial, final, {"x": 1})
    assert not partial.exists() and finished(final, {"x": 1}) and not finished(final, {"x": 2})
    (final / "bench.json").write_text('{"model": "changed"}')
    assert not finished(final, {"x": 1})
    assert not finished(tmp_path / "missing", {"x": 1})


def test_speed_rows_read_the_table_figures():
    from orchestrator.bench.speed import SpeedOutcome, SpeedRun, speed_rows

    rec = {"device": "cpu", "batch1_ms": 3.5, "best": {"batch_size": 8, "samples_per_second": 900.0},
           "results": [{"batch_size": 1, "peak_memory_bytes": 10}, {"batch_size": 8, "peak_memory_bytes": 99,
                                                                    "peak_memory": "cgroup memory.peak"}]}
    row, = speed_rows(SpeedRun(Path("."), [SpeedOutcome(job(), "ok", record=rec)]))
    assert (row["batch1_ms"], row["best_samples_per_second"], row["best_batch_size"], row["peak_memory_bytes"]) == \
        (3.5, 900.0, 8, 99)
    row, = speed_rows(SpeedRun(Path("."), [SpeedOutcome(job(), "failed", "boom")]))
    assert row["batch1_ms"] is None and row["reason"] == "boom"


@pytest.mark.docker
def test_speed_writes_bench_json_and_a_second_run_reuses_it(image_tags, tmp_path):
    results = tmp_path / "results"
    args = ["speed", "--profile", "smoke", "--model", "resnet18", "--results", str(results), *FAST]
    first = zoobench(*args)
    assert first.returncode == 0, first.stderr
    folder = results / "speed" / "pytorch-resnet18"
    rec = json.loads((folder / "bench.json").read_text())
    assert rec["model"] == "resnet18" and [r["batch_size"] for r in rec["results"]] == [1, 2]
    assert rec["iterations"] == 2 and rec["warmup"] == 1 and rec["weights"] == "random"
    request = json.loads((folder / "request.json").read_text())["request"]
    assert request["batch_sizes"] == [1, 2] and request["mode"] == "default" and request["device"] == "cpu"
    assert "resnet18" in first.stdout and "@" in first.stdout  # the table: best samples/s @ batch
    stamps = timed(results)
    again = zoobench(*args)
    assert again.returncode == 0 and "reused" in again.stdout, again.stdout + again.stderr
    assert timed(results) == stamps
    other = zoobench(*args[:-6], "--batch-sizes", "1", "--iterations", "2", "--warmup", "1")  # another request
    assert other.returncode == 0 and "reused" not in other.stdout
    assert timed(results) != stamps


@pytest.mark.docker
def test_killed_speed_bench_resumes_only_unfinished_models(image_tags, tmp_path):
    results = tmp_path / "results"
    args = ["speed", "--profile", "smoke", "--results", str(results), *FAST,
            "--model", "resnet18", "--model", "mobilenet_v3_small", "--model", "squeezenet1_1"]
    exe = Path(sys.executable).with_name("zoobench")
    first = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 900
    while not timed(results):
        assert first.poll() is None, "speed bench ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # no clean-up at all: worst case
    first.wait()
    done = timed(results)
    assert 1 <= len(done) < 3
    second = zoobench(*args)
    assert second.returncode == 0, second.stderr
    after = timed(results)
    assert len(after) == 3 and not list((results / "speed").glob("*.partial"))
    for name, stamp in done.items():
        assert after[name] == stamp, f"{name} was timed again"
    assert second.stdout.count("reused") == len(done)


@pytest.mark.docker
def test_run_mode_is_recorded_and_not_reused_by_a_default_mode_run(image_tags, tmp_path):
    results = tmp_path / "results"
    base = ["run", "--profile", "smoke", "--model", "resnet18", "--results", str(results), "--limit", "3",
            "--no-pixel-cache"]
    first = zoobench(*base, "--mode", "channels-last")
    assert first.returncode == 0, first.stderr
    run = json.loads((results / "pytorch-resnet18" / "run.json").read_text())
    assert run["mode"] == "channels-last" and run["mode_settings"]["memory_format"] == "channels_last"
    request = json.loads((results / "pytorch-resnet18" / "request.json").read_text())["request"]
    assert request["mode"] == "channels-last"
    same = zoobench(*base, "--mode", "channels-last")
    assert same.returncode == 0 and same.stderr.count("reused") == 1, same.stderr
    default = zoobench(*base)
    assert default.returncode == 0, default.stderr
    assert "reused" not in default.stderr
    assert json.loads((results / "pytorch-resnet18" / "run.json").read_text())["mode"] == "default"
