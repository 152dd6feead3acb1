"""Throughput benchmark (not a test): prints figures and ratios, asserts nothing.

For EfficientNet-Lite0 (real weights) and ResNet-50 (random weights; each image's own name for it,
from the same-arch profile) in every image of manifests/images.yaml, on the same images:
  * `predict run` (parallel decode overlapped with compute) vs a bare in-process loop of the
    same framework and model (tests/benchmarks/bare_loop.py, run in the same image);
  * batched vs one image at a time.
Usage: .venv/bin/python tests/benchmarks/bench_predict.py [--images 96] [--batch-size 32] [--model lite0|resnet50]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from orchestrator.images import build as images  # noqa: E402
from orchestrator.images import manifest as image_manifest
from orchestrator.data.sample import make_sample  # noqa: E402


def make_images(out: Path, n: int) -> Path:
    """n JPEGs made from the real sample photos (crops and flips, ImageNet-like sizes)."""
    sample = out / "sample"
    make_sample(sample)
    photos = [Image.open(p).convert("RGB") for p in sorted(sample.glob("*/*.*")) if p.suffix != ".md"]
    data = out / "bench"
    data.mkdir()
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        f = 0.6 + 0.4 * ((i * 7) % 10) / 10
        box = (int((1 - f) * w / 2), int((1 - f) * h / 2), int((1 + f) * w / 2), int((1 + f) * h / 2))
        img = img.crop(box).resize((500, 375))
        (ImageOps.mirror(img) if i % 2 else img).save(data / f"{i:05d}.jpg", quality=90)
    data.chmod(0o755)
    return data


def docker(tag: str, args: list[str], data: Path | None = None, out: Path | None = None,
           entry: str | None = None, mounts: dict[str, str] | None = None) -> str:
    """``docker run`` of one image with the data, these scripts and ``mounts`` (host -> container, read-only)
    mounted; RuntimeError on failure. (shm 1g: a torch DataLoader with workers needs more than Docker's 64 MB.)"""
    cmd = ["docker", "run", "--rm", "--network", "none", "--shm-size", "1g", "-v", f"{Path(__file__).parent}:/bench:ro"]
    for host, target in (mounts or {}).items():
        cmd += ["-v", f"{host}:{target}:ro"]
    if data is not None:
        cmd += ["-v", f"{data}:/data:ro"]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o777)
        cmd += ["-v", f"{out}:/out"]
    if entry:
        cmd += ["--entrypoint", entry]
    proc = subprocess.run(cmd + [tag, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args[:3])} failed in {tag}: {proc.stderr.strip()[-600:]}")
    return proc.stdout


def predict_ips(tag: str, model: str, weights: str, data: Path, work: Path, batch: int) -> float:
    out = work / f"{tag.replace('/', '_').replace(':', '_')}-{model}-{batch}"
    docker(tag, ["run", "--model", model, "--weights", weights, "--data", "/data", "--out", "/out",
                 "--batch-size", str(batch)], data, out)
    return json.loads((out / "run.json").read_text())["images_per_second"]


def resnet50_names() -> dict[str, str]:
    """Each image's name for ResNet-50 (v1), from the same-arch profile."""
    profile = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())["profiles"]["same-arch"]["models"]
    return {image: next(m for m in models if m.startswith("resnet50")) for image, models in profile.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--variant", default="cpu")
    ap.add_argument("--model", action="append", choices=["lite0", "resnet50"], help="default: both")
    args = ap.parse_args()
    specs = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
    resnet50 = resnet50_names()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_images(work, args.images)
        print(f"{args.images} images (500x375 JPEG), batch {args.batch_size}, {args.variant}")
        print(f"{'image':8} {'model':18} {'weights':8} {'predict img/s':>14} {'bare img/s':>11} {'ratio':>6} "
              f"{'batch-1 img/s':>14} {'batched/1':>9}")
        for which in args.model or ["lite0", "resnet50"]:
            for name, spec in specs.items():
                model = "efficientnet_lite0" if which == "lite0" else resnet50.get(name)
                if model is None:
                    continue
                weights = "imagenet" if which == "lite0" else "random"
                tag = images.image_tag(spec, args.variant, ROOT)
                ips = predict_ips(tag, model, weights, data, work, args.batch_size)
                bare = json.loads(docker(tag, ["/bench/bare_loop.py", model, "/data", str(args.batch_size)],
                                         data, entry="python"))["images_per_second"]
                one = predict_ips(tag, model, weights, data, work, 1)
                print(f"{name:8} {model:18} {weights:8} {ips:14.1f} {bare:11.1f} {ips / bare:6.2f} {one:14.1f} "
                      f"{ips / one:9.2f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as exc:
        sys.exit(f"benchmark failed: {exc}")
