"""Matching the host's GPUs to the cuda images before anything starts (issue 16, item 3), without a
GPU or Docker: a stand-in ``nvidia-smi`` on PATH reports an H100, a V100 or an old driver."""
from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from conftest import ROOT, one_line_error, zoobench
from orchestrator.bench import gpus, imagefacts, service
from orchestrator.bench.gpus import Gpu, can_serve
from orchestrator.bench.runner import Bench, DataMount, Outcome
from orchestrator.bench.service import BenchRequest, plan_images, prepare
from orchestrator.bench.variants import parse_variants
from orchestrator.errors import BenchError
from orchestrator.images import build as images
from orchestrator.images import manifest as image_manifest
from zoobench_contract.gpubuild import GpuBuild

H100 = ("NVIDIA H100 80GB HBM3", "9.0", "580.65.06")
V100 = ("Tesla V100-SXM2-32GB", "7.0", "580.65.06")
A100_OLD = ("NVIDIA A100-SXM4-80GB", "8.0", "470.182.03")

GPU_BLOCKS = {  # as the images declare them (shapes of manifests/images.yaml's gpu: blocks)
    "pytorch": 'gpu: {cuda: "13.0", archs: [sm_75, sm_80, sm_86, sm_90, sm_100, sm_120], ptx: [compute_120]}',
    "keras": 'gpu: {cuda: "12.5", archs: [sm_60, sm_70, sm_80, sm_89, sm_90], ptx: [compute_90]}',
    "mxnet": 'gpu: {cuda: "11.2", archs: [sm_50, sm_60, sm_70, sm_80, sm_86]}',
}
LOCKS = {"pytorch": ("images/pytorch/requirements.lock",) * 2,
         "keras": ("images/keras/requirements-cpu.lock", "images/keras/requirements-cuda.lock"),
         "mxnet": ("images/mxnet/requirements-cpu.lock", "images/mxnet/requirements-cuda.lock")}


def manifests_dir(tmp_path: Path) -> Path:
    """The real profiles and models, and an images.yaml of our own with gpu: blocks."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    for name in ("models.yaml", "datasets.yaml"):
        shutil.copy(ROOT / "manifests" / name, folder / name)
    profiles = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())
    for prof in profiles["profiles"].values():  # only the images of this images.yaml
        prof["models"] = {i: m for i, m in prof["models"].items() if i in LOCKS}
    (folder / "profiles.yaml").write_text(yaml.safe_dump(profiles))
    text = "images:\n"
    for image, (cpu, cuda) in LOCKS.items():
        text += (f"  {image}:\n    framework: {image}\n    dockerfile: images/Dockerfile\n"
                 f"    inputs: [runners/contract, runners/{image}]\n    variants:\n"
                 f"      cpu: {{lock: {cpu}, base_image: offline}}\n"
                 f"      cuda:\n        lock: {cuda}\n        base_image: offline\n        {GPU_BLOCKS[image]}\n")
    (folder / "images.yaml").write_text(text)
    return folder


def fake_smi(folder: Path, *cards: tuple[str, str, str], old: bool = False) -> Path:
    """A stand-in nvidia-smi answering ``--query-gpu=FIELDS --format=csv,noheader`` for ``cards``
    (name, compute capability, driver); ``old``: refuses compute_cap, as nvidia-smi before R510 does."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"""#!{sys.executable}
import sys
cards, old = {list(cards)!r}, {old!r}
query = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--query-gpu="))
fields = query.split(",")
if old and "compute_cap" in fields:
    print('Field "compute_cap" is not a valid field to query.', file=sys.stderr)
    sys.exit(2)
for i, (name, cap, driver) in enumerate(cards):
    row = {{"index": str(i), "name": name, "compute_cap": cap, "driver_version": driver}}
    print(", ".join(row[f] for f in fields))
""")
    script.chmod(0o755)
    return folder


def path_env(folder: Path) -> dict[str, str]:
    import os

    return {"PATH": f"{folder}:{os.environ['PATH']}", "DOCKER_HOST": f"unix://{folder}/no-docker.sock"}


def gpu(cap: tuple[int, int], driver: str = "580.65.06", name: str = "card") -> Gpu:
    return Gpu("0", name, cap, driver)


# ---------------------------------------------------------------- can_serve

@pytest.mark.parametrize("build, cap, driver, ok", [
    (GpuBuild("12.4", archs=("sm_86",)), (8, 9), "560.35.03", True),     # same major, higher minor: binary compatible
    (GpuBuild("12.4", archs=("sm_86",)), (8, 0), "560.35.03", False),    # lower minor: no
    (GpuBuild("12.4", archs=("sm_80",)), (9, 0), "560.35.03", False),    # another major: a cubin never runs there
    (GpuBuild("12.4", archs=("sm_80",), ptx=("compute_80",)), (9, 0), "560.35.03", True),  # PTX JIT-compiled
    (GpuBuild("12.8", archs=("sm_80",), ptx=("compute_80",)), (9, 0), "560.35.03", False),  # driver older than the PTX
    (GpuBuild("12.8", ptx=("compute_90",)), (8, 9), "580.65.06", False),  # PTX only for capability >= 9.0
    (GpuBuild("12.4", archs=("sm_90a",)), (9, 0), "560.35.03", True),    # arch-specific: exactly 9.0 ...
    (GpuBuild("12.4", archs=("sm_90a",)), (9, 2), "560.35.03", False),   # ... and no other
    (GpuBuild("12.4", archs=("sm_90a",)), (10, 0), "570.26", False),
    (GpuBuild("13.0", archs=("sm_75", "sm_120")), (7, 0), "580.65.06", False),  # CUDA 13 dropped Volta
    (GpuBuild("13.0", archs=("sm_90",)), (9, 0), "470.182.03", False),   # driver too old for CUDA 13
    (GpuBuild("11.2", archs=("sm_80",)), (8, 6), "470.182.03", True),    # CUDA 11 on a 470 driver
    (GpuBuild(None), (9, 0), "580.65.06", False),                        # a CPU-only build
])
def test_can_serve_matrix(build, cap, driver, ok):
    reason = can_serve(build, gpu(cap, driver), "img", "cuda")
    assert (reason is None) == ok, reason
    if reason:
        assert "image img (cuda;" in reason and f"sm_{cap[0]}{cap[1]}" in reason and "\n" not in reason


def test_reasons_name_the_image_the_gpu_and_the_build():
    mxnet = GpuBuild("11.2", archs=("sm_50", "sm_60", "sm_70", "sm_80", "sm_86"))
    assert can_serve(mxnet, Gpu("1", "NVIDIA H100 80GB HBM3", (9, 0), "580.65.06"), "mxnet", "cuda") == (
        "image mxnet (cuda; CUDA 11.2, sm_50..sm_86, no PTX) has no kernels for GPU 1 (NVIDIA H100 80GB HBM3, "
        "sm_90) and no PTX the driver could compile for it")
    old = can_serve(GpuBuild("13.0", archs=("sm_90",)), gpu((9, 0), "470.182.03"), "pytorch")
    assert old == ("image pytorch (CUDA 13.0, sm_90, no PTX) needs NVIDIA driver >= 580.65.06 (CUDA 13.x); "
                   "GPU 0 (card, sm_90) has driver 470.182.03: update the driver")
    jit = can_serve(GpuBuild("12.8", ptx=("compute_80",)), gpu((9, 0), "560.35.03"), "keras")
    assert "JIT-compiling its PTX compute_80" in jit and "as new as CUDA 12.8 (>= 570.26)" in jit


def test_nvidia_smi_is_read_once_with_a_fallback_for_old_drivers(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path / "new", H100, V100)))
    assert gpus.host_gpus() == [Gpu("0", "NVIDIA H100 80GB HBM3", (9, 0), "580.65.06"),
                                Gpu("1", "Tesla V100-SXM2-32GB", (7, 0), "580.65.06")]
    assert service.visible_gpus() == ["0", "1"]
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path / "old", A100_OLD, old=True)))
    assert gpus.host_gpus() == [Gpu("0", "NVIDIA A100-SXM4-80GB", None, "470.182.03")]
    assert gpus.parse_smi("0, Name, with comma, 8.6, 550.54.14\n") == [Gpu("0", "Name, with comma", (8, 6), "550.54.14")]
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert gpus.host_gpus() == []


# ---------------------------------------------------------------- zoobench doctor

def doctor_lines(tmp_path: Path, *cards, old: bool = False) -> list[str]:
    folder = fake_smi(tmp_path / "bin", *cards, old=old)
    proc = zoobench("doctor", "--manifests", str(manifests_dir(tmp_path)), env=path_env(folder), timeout=120)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)  # no engine here (and some image cannot serve)
    return [line.strip() for line in proc.stdout.splitlines()]


def test_doctor_h100(tmp_path):
    lines = doctor_lines(tmp_path, H100)
    assert "GPU 0: NVIDIA H100 80GB HBM3, compute capability 9.0 (sm_90), driver 580.65.06" in lines
    assert ("ok  image pytorch (cuda) on GPU 0: kernels sm_90 (CUDA 13.0, sm_75..sm_120, PTX compute_120)"
            in lines)
    assert "ok  image keras (cuda) on GPU 0: kernels sm_90 (CUDA 12.5, sm_60..sm_90, PTX compute_90)" in lines
    assert ("BAD image mxnet (cuda) on GPU 0: image mxnet (cuda; CUDA 11.2, sm_50..sm_86, no PTX) has no kernels "
            "for GPU 0 (NVIDIA H100 80GB HBM3, sm_90) and no PTX the driver could compile for it; run its models "
            "on the CPU with --variant cuda,mxnet=cpu") in lines
    assert any(line.startswith("BAD docker engine") for line in lines)


def test_doctor_v100(tmp_path):
    lines = doctor_lines(tmp_path, V100)
    assert "GPU 0: Tesla V100-SXM2-32GB, compute capability 7.0 (sm_70), driver 580.65.06" in lines
    assert any(line.startswith("BAD image pytorch (cuda) on GPU 0: image pytorch (cuda; CUDA 13.0, sm_75..sm_120, "
                               "PTX compute_120) has no kernels for GPU 0 (Tesla V100-SXM2-32GB, sm_70)") for line in lines)
    assert "ok  image keras (cuda) on GPU 0: kernels sm_70 (CUDA 12.5, sm_60..sm_90, PTX compute_90)" in lines
    assert "ok  image mxnet (cuda) on GPU 0: kernels sm_70 (CUDA 11.2, sm_50..sm_86, no PTX)" in lines


def test_doctor_old_driver(tmp_path):
    lines = doctor_lines(tmp_path, A100_OLD)
    assert ("BAD image pytorch (cuda) on GPU 0: image pytorch (cuda; CUDA 13.0, sm_75..sm_120, PTX compute_120) "
            "needs NVIDIA driver >= 580.65.06 (CUDA 13.x); GPU 0 (NVIDIA A100-SXM4-80GB, sm_80) has driver "
            "470.182.03: update the driver; run its models on the CPU with --variant cuda,pytorch=cpu") in lines
    assert any(line.startswith("BAD image keras (cuda) on GPU 0:") and "needs NVIDIA driver >= 525.60.13" in line
               for line in lines)
    assert "ok  image mxnet (cuda) on GPU 0: kernels sm_80 (CUDA 11.2, sm_50..sm_86, no PTX)" in lines


def test_doctor_without_a_gpu(tmp_path):
    (tmp_path / "bin").mkdir()
    proc = zoobench("doctor", env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
                                   "DOCKER_HOST": f"unix://{tmp_path}/no.sock"}, timeout=120)
    assert "GPUs: none visible (CPU runs only)" in proc.stdout and " on GPU " not in proc.stdout


# ---------------------------------------------------------------- zoobench run --gpus: refused before anything

@pytest.mark.parametrize("cards, extra, needle", [
    ((H100,), [], "error: image mxnet (cuda; CUDA 11.2, sm_50..sm_86, no PTX) has no kernels for GPU 0 (NVIDIA "
     "H100 80GB HBM3, sm_90) and no PTX the driver could compile for it; run its models on the CPU with "
     "--variant cuda,mxnet=cpu (no GPU of this host serves it)"),
    ((H100, V100), ["--gpus", "0"], "run its models on the CPU with --variant cuda,mxnet=cpu, or pass --gpus 1 "
     "(the GPU(s) of this host it serves)"),
    ((V100,), ["--variant", "cuda,mxnet=cpu"], "error: image pytorch (cuda; CUDA 13.0, sm_75..sm_120, PTX "
     "compute_120) has no kernels for GPU 0 (Tesla V100-SXM2-32GB, sm_70) and no PTX the driver could compile for "
     "it; run its models on the CPU with --variant cuda,mxnet=cpu,pytorch=cpu (no GPU of this host serves it)"),
    ((A100_OLD,), ["--model", "pytorch/efficientnet_lite0"], "error: image pytorch (cuda; CUDA 13.0, "
     "sm_75..sm_120, PTX compute_120) needs NVIDIA driver >= 580.65.06 (CUDA 13.x); GPU 0 (NVIDIA A100-SXM4-80GB, "
     "sm_80) has driver 470.182.03: update the driver; run its models on the CPU with --variant cuda,pytorch=cpu"),
    ((H100,), ["--variant", "cpu"], "--gpus 0 with --variant cpu: no image of this bench runs a GPU variant"),
    ((H100,), ["--variant", "cuda,mxnet"], "--variant cuda,mxnet: 'mxnet' is not IMAGE=VARIANT"),
    ((H100,), ["--variant", "cuda,caffe=cpu"], "no image 'caffe' in images.yaml (it has keras, mxnet, pytorch)"),
    ((H100,), ["--variant", "cuda,mxnet=rocm"], "image mxnet has no variant 'rocm' in images.yaml (it has cpu, cuda)"),
    ((H100,), ["--variant", "mxnet=cpu"], "start with the variant of every image"),
])
def test_run_refuses_before_any_build_or_container(tmp_path, cards, extra, needle):
    folder = fake_smi(tmp_path / "bin", *cards)
    args = ["run", "--manifests", str(manifests_dir(tmp_path)), "--results", str(tmp_path / "r")]
    proc = zoobench(*args, *(extra if "--gpus" in extra else ["--gpus", "0", *extra]), env=path_env(folder),
                    timeout=120)
    one_line_error(proc, needle)
    assert "building" not in proc.stdout + proc.stderr and not (tmp_path / "r").exists()


def test_the_way_out_passes_the_check(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path / "bin", H100)))
    req = BenchRequest(gpus="0", variant="cuda,mxnet=cpu", manifests=manifests_dir(tmp_path), results=tmp_path / "r")
    assert prepare(req).variants.of("mxnet") == "cpu"
    with pytest.raises(BenchError, match="image mxnet"):
        prepare(BenchRequest(gpus="0", manifests=req.manifests, results=req.results))


def test_slurm_and_k8s_refuse_per_image_variants_in_one_line(tmp_path):
    one_line_error(zoobench("run", "--engine", "slurm", "--variant", "cuda,mxnet=cpu"),
                   "per-image variants are for runs on this host")
    one_line_error(zoobench("k8s", "render", "-p", "sample", "--data-claim", "d", "--results-claim", "r",
                            "--variant", "cuda,mxnet=cpu", "--out", str(tmp_path / "k")),
                   "k8s render takes one variant, cpu or cuda, for every image")


def test_parse_variants():
    specs = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
    assert parse_variants(None, [], specs).default == "cpu" and parse_variants(None, ["0"], specs).default == "cuda"
    parsed = parse_variants("cuda, mxnet=cpu ,keras=cpu", ["0"], specs)
    assert (parsed.of("pytorch"), parsed.of("mxnet"), parsed.of("keras")) == ("cuda", "cpu", "cpu")
    assert parsed.text() == "cuda,keras=cpu,mxnet=cpu"
    assert parsed.of("openvino") == "cpu"  # no cuda variant (Intel GPUs only): its cpu one, not in the text
    with pytest.raises(BenchError, match="mxnet is given twice"):
        parse_variants("cuda,mxnet=cpu,mxnet=cuda", [], specs)


# ---------------------------------------------------------------- the override reaches the plan and the lanes

def test_overridden_image_runs_on_the_cpu_with_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_smi(tmp_path / "bin", H100)))
    monkeypatch.setattr(images, "image_tag", lambda spec, variant, root: f"zoobench/{spec.name}:{variant}-test")
    monkeypatch.setattr(imagefacts, "served_models", lambda client, tag: {"efficientnet_lite0": {"preprocessing": {}}})
    monkeypatch.setattr(imagefacts, "image_id", lambda client, tag: f"sha256:{tag}")
    req = BenchRequest(gpus="0", variant="cuda,mxnet=cpu", manifests=manifests_dir(tmp_path),
                       results=tmp_path / "r", build=False)
    console = Console(file=io.StringIO())
    setup = prepare(req)
    jobs, ids = plan_images(req, setup, None, console)
    by_image = {j.image: j for j in jobs}
    assert by_image["mxnet"].tag == "zoobench/mxnet:cpu-test" and by_image["mxnet"].cpu_only
    assert by_image["pytorch"].tag == "zoobench/pytorch:cuda-test" and not by_image["pytorch"].cpu_only
    assert by_image["keras"].tag == "zoobench/keras:cuda-test" and not by_image["keras"].cpu_only

    (tmp_path / "r").mkdir()
    bench = Bench(None, jobs, DataMount("/data", [], {None: "d"}, {None: 1}), tmp_path / "r", tmp_path / "w",
                  setup.gpus, console, run_id="t", image_ids=ids)
    assert bench.lanes == [("0", "gpu 0"), (None, "cpu")]  # the CPU job gets a lane of its own, not the GPU's
    ran: dict[str, str | None] = {}

    def fake_guarded(job, gpu, progress, lane):
        ran[job.image] = gpu
        return Outcome(job, "ok", "")

    monkeypatch.setattr(bench, "_guarded", fake_guarded)
    bench._run()
    assert ran == {"pytorch": "0", "keras": "0", "mxnet": None}
    assert "--device cpu" in " ".join(bench._args(by_image["mxnet"], 8, None))
    assert "--device cuda" in " ".join(bench._args(by_image["pytorch"], 8, "0"))


def test_an_old_nvidia_smi_refuses_only_on_what_it_can_tell():
    unknown = Gpu("0", "Tesla K80", None, "470.182.03")
    mxnet, torch = GpuBuild("11.2", archs=("sm_50",)), GpuBuild("13.0", archs=("sm_90",))
    assert "cannot tell" in can_serve(mxnet, unknown, "mxnet")  # doctor says so ...
    assert gpus.refusal("mxnet", "cuda", mxnet, [unknown], [unknown], "--variant cuda,mxnet=cpu") is None  # ... run goes on
    assert "needs NVIDIA driver >= 580.65.06" in gpus.refusal("pytorch", "cuda", torch, [unknown], [unknown], "X")
