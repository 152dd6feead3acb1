"""tests/benchmarks/gpu_check.py (`make gpu-check`) without Docker and without a GPU: the no-GPU exit,
the synthetic folder, the table, mode B's `predict run` command line, the memory sampler, the setup
failures (one line each) and the temp folder removed on every exit path."""
from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoobench_contract import cli as contract_cli
from zoobench_contract.dataset import list_images
from zoobench_contract.imagenet import wnids
from zoobench_contract.outputs import PREDICTIONS_FILE, RUN_FILE, write_json, write_predictions

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gc = load_script()

H100 = "0, NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB"


def stand_in(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def smi_script(gpu_line: str | None, memory: list[int] = (100, 900, 300)) -> str:
    """A stand-in nvidia-smi: the GPU list (or none), one memory reading, or -lms readings."""
    listing = f'echo "{gpu_line}"; exit 0' if gpu_line else 'echo "No devices were found"; exit 6'
    readings = "; ".join(f"echo {m}" for m in memory)
    return (f'case "$*" in\n  *index,name*) {listing};;\n  *-lms*) {readings}; sleep 30;;\n'
            f'  *memory.used*) echo {memory[0]};;\nesac\n')


def run_script(*args: str, path: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path, "TMPDIR": str(cwd)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]


# ------------------------------------------------------------------ no GPU: one line, exit 2

def test_no_nvidia_smi_is_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = run_script(path=str(empty), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert lines(proc) == ["gpu-check: no GPU on this host (no nvidia-smi on PATH); nothing to check"]


@pytest.mark.parametrize("body", [smi_script(None), "exit 0\n"])
def test_nvidia_smi_listing_no_gpu_is_exit_2(tmp_path, body):
    stand_in(tmp_path / "bin", "nvidia-smi", body)
    proc = run_script(path=str(tmp_path / "bin"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = lines(proc)
    assert line.startswith("gpu-check: no GPU on this host (nvidia-smi lists no GPU") and "Traceback" not in line


def test_find_gpus_reads_the_listing(tmp_path):
    smi = stand_in(tmp_path / "bin", "nvidia-smi", smi_script(H100))
    gpus, why = gc.find_gpus(str(smi))
    assert why == "" and gpus == [{"index": "0", "name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15",
                                   "memory": "81559 MiB"}]


# ------------------------------------------------------------------ setup failures: one line, exit 1

def test_no_docker_without_pytorch_is_one_line(tmp_path):
    """--no-docker in a Python without torch (this venv): one line naming what is missing."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("this Python has PyTorch")
    stand_in(tmp_path / "bin", "nvidia-smi", smi_script(H100))
    proc = run_script("--no-docker", path=str(tmp_path / "bin"), cwd=tmp_path)
    assert proc.returncode == 1
    (line,) = lines(proc)
    assert line.startswith("gpu-check: --no-docker needs torch, torchvision") and str(sys.executable) in line


def test_no_docker_command_means_mode_b(tmp_path):
    """No `docker` on PATH: mode B is chosen by itself (here it then stops at the missing PyTorch)."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("this Python has PyTorch")
    stand_in(tmp_path / "bin", "nvidia-smi", smi_script(H100))
    proc = run_script(path=str(tmp_path / "bin"), cwd=tmp_path)
    assert proc.returncode == 1 and "--no-docker needs torch" in proc.stderr, proc.stderr


def test_engine_down_and_images_not_built_name_the_way_out(tmp_path):
    bin_dir = tmp_path / "bin"
    stand_in(bin_dir, "nvidia-smi", smi_script(H100))
    stand_in(bin_dir, "docker", "exit 1\n")
    path = f"{bin_dir}:{os.environ['PATH']}"  # the stand-in docker shadows any real one
    proc = run_script(path=path, cwd=tmp_path)
    assert proc.returncode == 1
    assert lines(proc) == ["gpu-check: the Docker engine does not answer (`docker info` failed); start it "
                           "(`make docker`), or pass --no-docker to run predict directly"]
    stand_in(bin_dir, "docker", 'case "$1" in info) echo 27.0;; *) exit 1;; esac\n')
    proc = run_script("--model", "resnet18", path=path, cwd=tmp_path)
    assert proc.returncode == 1
    (line,) = lines(proc)
    assert "zoobench/pytorch:cuda-" in line and "zoobench/keras:cuda-" in line
    assert line.endswith("are not built; run `.venv/bin/zoobench images build --variant cuda` first")
    assert not list(tmp_path.glob("zoobench-gpu-check-*")), "a temp folder was left behind"


def test_unknown_model_is_one_line():
    with pytest.raises(gc.CheckFailed, match="--model nosuchnet: not a pytorch/keras model of the seed profile"):
        gc.seed_models(("pytorch", "keras"), ["nosuchnet"])
    assert gc.seed_models(("pytorch", "keras"), ["resnet50"]) == ["pytorch/resnet50", "keras/resnet50"]
    assert gc.seed_models(("pytorch",), ["pytorch/vgg16"]) == ["pytorch/vgg16"]
    everything = gc.seed_models(("pytorch", "keras"))
    assert len(everything) == 34 and "keras/nasnetlarge" in everything


# ------------------------------------------------------------------ the synthetic folder

def test_synthetic_folder_holds_n_decodable_images_in_synset_folders(tmp_path):
    data = gc.make_synthetic(tmp_path / "data", 23)
    found = list_images(data)
    assert len(found) == 23
    folders = {p.split("/")[0] for p in found}
    assert len(folders) == 10 and folders <= set(wnids())
    for rel in found:
        with Image.open(data / rel) as img:
            img.load()
            assert img.format == "JPEG" and img.mode == "RGB" and 300 <= min(img.size) <= 500
    assert gc.make_synthetic(tmp_path / "again", 23) and \
        (tmp_path / "again" / found[0]).read_bytes() == (data / found[0]).read_bytes()  # seeded


# ------------------------------------------------------------------ the table

def fake_run(folder: Path, model: str, precision: str, top1: list[int], ips: float, compute: float) -> Path:
    """A finished run folder: predictions.npz of these top-1 classes (distinct top-5) and its run.json."""
    n = len(top1)
    topk = np.array([[(c + j) % 1000 for j in range(5)] for c in top1], dtype=np.int64)
    scores = np.tile(np.array([0.5, 0.2, 0.1, 0.1, 0.05], np.float32), (n, 1))
    write_predictions(folder / PREDICTIONS_FILE, [f"n01440764/{i:03d}.JPEG" for i in range(n)], topk, scores)
    write_json(folder / RUN_FILE, {"schema_version": 1, "status": "ok", "model": model.split("/")[1],
                                   "precision": precision, "device": "cuda:0", "images_per_second": ips,
                                   "compute_images_per_second": compute})
    return folder


def record(tmp_path: Path, model: str, precision: str, top1: list[int], ips: float, compute: float,
           peak: float | None) -> object:
    folder = fake_run(tmp_path / f"{precision}-{model.replace('/', '-')}", model, precision, top1, ips, compute)
    return gc.Record(model, precision, folder, json.loads((folder / RUN_FILE).read_text()), peak)


def test_table_rows_from_fake_runs(tmp_path):
    ref = list(range(10))
    records = [
        record(tmp_path, "pytorch/resnet18", "fp32", ref, 1234.56, 2345.67, 1536),
        record(tmp_path, "pytorch/resnet18", "tf32", ref, 2000.0, 4000.04, 1540.4),
        record(tmp_path, "pytorch/resnet18", "bf16", ref[:8] + [98, 99], 3000.0, 7000.0, None),
        gc.Record("keras/vgg16", "fp32", error="exit 1: keras/vgg16 failed: out of | memory"),
        record(tmp_path, "keras/vgg16", "bf16", ref, 10.0, 20.0, 10),
    ]
    assert gc.table_rows(records) == [
        ["pytorch/resnet18", "fp32", "1234.6", "2345.7", "1536", "(reference)"],
        ["pytorch/resnet18", "tf32", "2000.0", "4000.0", "1540", "100.0 %"],
        ["pytorch/resnet18", "bf16", "3000.0", "7000.0", "n/a", "80.0 %"],
        ["keras/vgg16", "fp32", "failed", "", "", "exit 1: keras/vgg16 failed: out of / memory"],
        ["keras/vgg16", "bf16", "10.0", "20.0", "10", "n/a (no fp32 run)"],
    ]
    table = gc.markdown_table(records).splitlines()
    assert table[0] == ("| model | precision | img/s end to end | img/s compute | peak GPU memory MiB | "
                        "top-1 agreement with fp32 |")
    assert table[1] == "|---|---|---|---|---|---|"  # as docs/performance.md's tables
    assert table[4] == "| pytorch/resnet18 | bf16 | 3000.0 | 7000.0 | n/a | 80.0 % |"
    assert all(row.count("|") == 7 for row in table)


def test_agreement_pairs_images_by_path(tmp_path):
    a = fake_run(tmp_path / "a", "pytorch/x", "fp32", [1, 2, 3, 4], 1, 1)
    b = tmp_path / "b"
    paths = [f"n01440764/{i:03d}.JPEG" for i in (3, 2, 1, 0)]  # the same images, in another order
    topk = np.array([[(c + j) % 1000 for j in range(5)] for c in (4, 3, 9, 1)], dtype=np.int64)
    write_predictions(b / PREDICTIONS_FILE, paths, topk, np.full((4, 5), 0.2, np.float32))
    assert gc.top1_agreement(a, b) == 0.75


# ------------------------------------------------------------------ mode B's command line

def test_predict_command_is_what_predict_run_accepts(tmp_path):
    cmd = gc.predict_command("pytorch/resnet18", "bf16", tmp_path / "data", tmp_path / "out", "random", None)
    assert cmd[:4] == [sys.executable, "-m", "zoobench_contract.cli", "run"]
    args = cmd[4:]
    assert args[args.index("--device") + 1] == "cuda" and args[args.index("--precision") + 1] == "bf16"
    assert args[args.index("--batch-size") + 1] == "32" and args[args.index("--weights") + 1] == "random"
    helped = subprocess.run([*cmd[:4], "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})
    assert helped.returncode == 0, helped.stderr
    for option in (a for a in args if a.startswith("--")):
        assert option in helped.stdout, f"predict run has no {option}"
    import typer

    command = typer.main.get_command(contract_cli.app).commands["run"]
    parsed = command.make_context("run", list(args)).params  # click parses and checks them
    assert parsed["device"] == "cuda" and parsed["precision"] == "bf16" and parsed["batch_size"] == 32
    profile = gc.predict_command("pytorch/vgg16", "fp32", tmp_path, tmp_path, "profile", 8)
    assert profile[profile.index("--weights") + 1] == "imagenet:IMAGENET1K_V1"
    assert profile[profile.index("--batch-size") + 1] == "8"


def test_constants_match_the_contract():
    assert gc.PRECISIONS == contract_cli.PRECISIONS
    assert (PREDICTIONS_FILE, RUN_FILE) == ("predictions.npz", "run.json")  # spelled so in the script


def test_docker_command_runs_one_model_on_the_gpu(tmp_path):
    cmd = gc.docker_command("keras/vgg16", "tf32", tmp_path / "d", tmp_path / "r", "1", "random", None)
    assert cmd[1:] == ["run", "--profile", "seed", "--data", str(tmp_path / "d"), "--results", str(tmp_path / "r"),
                       "--gpus", "1", "--variant", "cuda", "--no-build", "--precision", "tf32", "--model",
                       "keras/vgg16", "--format", "csv", "--weights", "random"]


# ------------------------------------------------------------------ peak memory

def test_memory_sampler_peak_above_idle(tmp_path):
    smi = stand_in(tmp_path / "bin", "nvidia-smi", smi_script(H100, [100, 900, 300]))
    import time

    with gc.MemorySampler("0", str(smi), interval_ms=50) as sampler:
        deadline = time.monotonic() + 10
        while sampler.peak != 900 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sampler.idle == 100 and sampler.peak == 900 and sampler.above_idle == 800
    assert sampler.proc.poll() is not None  # the -lms reader was ended
    with gc.MemorySampler("0", str(tmp_path / "no-such-smi")) as none:
        pass
    assert none.above_idle is None


# ------------------------------------------------------------------ the whole flow, Docker and GPU faked

def fake_child(good: bool = True):
    """run_child's stand-in: writes what `zoobench run` / `predict run` would, bf16 differing from fp32 (and tf32) on 1 in 10."""
    def child(cmd: list[str], log: Path, env: dict, cwd: Path) -> int:
        if not good:
            log.write_text("pytorch/resnet18 failed: CUDA error: no kernel image is available\nerror: 1 of 1 model(s)\n")
            return 1
        model, precision = cmd[cmd.index("--model") + 1], cmd[cmd.index("--precision") + 1]
        data = Path(cmd[cmd.index("--data") + 1])
        out = Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else \
            Path(cmd[cmd.index("--results") + 1]) / model.replace("/", "-")
        paths = list_images(data)
        top1 = [(i if precision != "bf16" or i % 10 else i + 1) % 1000 for i in range(len(paths))]
        topk = np.array([[(c + j) % 1000 for j in range(5)] for c in top1], dtype=np.int64)
        write_predictions(out / PREDICTIONS_FILE, paths, topk, np.full((len(paths), 5), 0.2, np.float32))
        write_json(out / RUN_FILE, {"schema_version": 1, "status": "ok", "device": "cuda:0",
                                    "images_per_second": 100.0, "compute_images_per_second": 200.0})
        log.write_text("ok\n")
        return 0
    return child


@pytest.fixture
def faked(tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(gc, "find_gpus", lambda smi=None: ([{"index": "0", "name": "NVIDIA H100", "driver": "550",
                                                             "memory": "80 GiB"}], ""))
    monkeypatch.setattr(gc, "docker_ready", lambda images: {i: f"zoobench/{i}:cuda-test" for i in images})
    monkeypatch.setattr(gc.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(gc, "MemorySampler", lambda gpu: _NoSampler())
    return temp


class _NoSampler:
    above_idle = 512.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_the_whole_flow_prints_the_table_and_cleans_up(faked, monkeypatch, capsys):
    monkeypatch.setattr(gc, "run_child", fake_child())
    assert gc.main(["--images", "20", "--model", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "NVIDIA H100" in out
    assert "| pytorch/resnet18 | fp32 | 100.0 | 200.0 | 512 | (reference) |" in out
    assert "| keras/resnet18" not in out
    assert "| pytorch/resnet18 | bf16 | 100.0 | 200.0 | 512 | 90.0 % |" in out
    assert "| pytorch/resnet18 | tf32 | 100.0 | 200.0 | 512 | 100.0 % |" in out
    assert list(faked.iterdir()) == []


def test_a_failed_run_is_one_line_exit_1_and_cleans_up(faked, monkeypatch, capsys):
    monkeypatch.setattr(gc, "run_child", fake_child(good=False))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--images", "5", "--model", "pytorch/resnet18",
                                      "--precision", "fp32"])
    assert gc.cli() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gpu-check: 1 of 1 runs failed (first: pytorch/resnet18 fp32: exit 1: pytorch/resnet18 failed: "
                   "CUDA error: no kernel image is available)"]
    assert list(faked.iterdir()) == []


def test_an_interrupt_cleans_up(faked, monkeypatch, capsys):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(gc, "run_child", interrupted)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--images", "3", "--model", "pytorch/resnet18"])
    assert gc.cli() == 130
    assert capsys.readouterr().err.strip() == "gpu-check: interrupted; temp folders removed"
    assert list(faked.iterdir()) == []


def test_the_check_stops_when_the_first_runs_all_fail(faked, monkeypatch, capsys):
    calls = []

    def child(cmd, log, env, cwd):
        calls.append(cmd)
        return fake_child(good=False)(cmd, log, env, cwd)

    monkeypatch.setattr(gc, "run_child", child)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--images", "3", "--model", "resnet18", "--model", "vgg16"])
    assert gc.cli() == 1
    captured = capsys.readouterr()
    assert len(calls) == gc.STOP_AFTER and "stopping: the first 3 runs all failed" in captured.out
    assert captured.err.strip().startswith("gpu-check: 3 of 3 runs failed")
    assert list(faked.iterdir()) == []
