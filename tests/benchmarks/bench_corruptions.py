"""ImageNet-C cost benchmark (not a test): prints figures and projections, asserts nothing.

Full ImageNet-C is 15 corruptions x 5 severities x 50,000 = 3.75 M images per model. This measures,
on this host, on a generated -C of the sample photos (224 px JPEGs, quality 85, as released):
  * generation: `zoobench data corrupt` seconds per source image for all 75 variants;
  * decode + preprocessing per image (the contract's loader, one thread), as a run reads -C;
  * `predict run` end to end and compute-only img/s for PyTorch Lite0 (real weights) and ResNet-50
    (random weights), batch 32, the -C preprocessing (centre crop 224 only);
then projects one model over full -C here, on a 16-core host with one H100, and as a Slurm array.
Usage: .venv/bin/python tests/benchmarks/bench_corruptions.py [--batch-size 32]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_predict import docker  # noqa: E402
from orchestrator.data.sample import make_sample  # noqa: E402
from orchestrator.images import build as images  # noqa: E402
from orchestrator.images import manifest as image_manifest  # noqa: E402
from zoobench_contract.dataset import list_images  # noqa: E402
from zoobench_contract.loader import iter_batches  # noqa: E402
from zoobench_contract.preprocessing import Preprocessing  # noqa: E402

FULL_C = 15 * 5 * 50_000
H100_FP32_FLOPS = 30e12  # sustained fp32 (TF32 off), as in docs/performance.md's seed projection: an assumption
HOST_CORES = 16
FIXED_S = 10.0  # per task: container start, import, model load, warm-up on a GPU host (docs/performance.md)
GMAC = {"efficientnet_lite0": 0.385, "resnet50": 4.089}  # per 224 px image (timm / torchvision _ops)


def zoobench(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "zoobench"), *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def decode_ms(data: Path) -> float:
    """Milliseconds per image to read, decode and crop a -C file, one thread."""
    paths = list_images(data)
    prep = Preprocessing(crop_size=224, resize_size=224, interpolation="bilinear")
    t0 = time.perf_counter()
    for _ in iter_batches(data, paths, prep, 32, workers=1):
        pass
    return 1000 * (time.perf_counter() - t0) / len(paths)


def predict(tag: str, model: str, weights: str, data: Path, out: Path, batch: int) -> dict:
    docker(tag, ["run", "--model", model, "--weights", weights, "--data", "/data", "--out", "/out", "--batch-size",
                 str(batch), "--preprocess", json.dumps({"crop_fraction": 1.0}), "--dataset", "imagenet-c"], data, out)
    return json.loads((out / "run.json").read_text())


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    spec = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")["pytorch"]
    tag = images.image_tag(spec, "cpu", ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sample = work / "sample"
        make_sample(sample)
        corrupted = work / "c"
        gen_s = zoobench("data", "corrupt", "--data", str(sample), "--out", str(corrupted))
        n = len(list_images(corrupted))
        corrupted.chmod(0o755)
        per_source = gen_s / 6
        print(f"generated -C of the 6 sample photos: {n} images in {gen_s:.1f} s ({per_source:.2f} s per source image "
              f"for its 75 variants, {1000 * gen_s / n:.1f} ms per variant, process start included)")
        dec = decode_ms(corrupted)
        print(f"decode + crop of a 224 px -C JPEG, one thread: {dec:.2f} ms per image")
        print()
        print("| model | weights | predict img/s (end to end) | compute img/s | ms/img here | full -C here | "
              "full -C on 1 H100 (projected) | Slurm: per model | Slurm: per model x corruption |")
        print("|---|---|---|---|---|---|---|---|---|")
        for model, weights in (("efficientnet_lite0", "imagenet"), ("resnet50", "random")):
            run = predict(tag, model, weights, corrupted, work / model, args.batch_size)
            ips, cips = run["images_per_second"], run["compute_images_per_second"]
            here = FULL_C / ips
            gpu_ips = H100_FP32_FLOPS / (2 * GMAC[model] * 1e9)
            decode_ips = HOST_CORES * 1000 / dec
            h100 = FULL_C / min(gpu_ips, decode_ips) + FIXED_S  # decode overlaps compute: the slower one bounds
            per_corruption = FULL_C / 15 / min(gpu_ips, decode_ips) + FIXED_S
            print(f"| {model} | {weights} | {ips:.1f} | {cips:.1f} | {1000 / ips:.1f} | {hours(here)} | {hours(h100)} "
                  f"(bound: {'decode' if decode_ips < gpu_ips else 'compute'}, {min(gpu_ips, decode_ips):.0f} img/s) | "
                  f"1 task, {hours(h100)} | 15 tasks of {hours(per_corruption)} |", flush=True)
        print()
        print(f"Assumptions: H100 fp32 sustained {H100_FP32_FLOPS / 1e12:.0f} TFLOP/s, 1 MAC = 2 FLOP, GMAC/img "
              f"{GMAC}; decode on {HOST_CORES} cores at this host's per-core rate; {FIXED_S:.0f} s fixed per task.")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        sys.exit(f"benchmark failed: {exc}")
