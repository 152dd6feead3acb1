"""Overhead benchmark of ``predict bench`` (not a test): prints figures and ratios, asserts nothing.

For ResNet-50 (random weights; each image's own name for it, from the same-arch profile) in every image
of manifests/images.yaml, on the CPU at batch 32: ``predict bench`` (10 warm-up, 40 timed steps) against
the bare loop a user would write in the same framework and image (build the model, feed the same seeded
synthetic uint8 batch through ``backend.predict_pixels``, time 40 steps after 10 warm-up). Target:
``predict bench`` >= 0.97x the bare loop. ``--modes`` also times each image's non-default mode.
The two are run alternately, ``--repeats`` times each, and the best of each is compared.

Usage: .venv/bin/python tests/benchmarks/bench_overhead.py [--batch-size 32] [--repeats 2] [--modes]
Inside an image (how this script runs the bare loop): python /bench/bench_overhead.py --inside MODEL BATCH
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] if len(Path(__file__).resolve().parents) > 2 else Path("/")  # /bench in an image
WARMUP, ITERATIONS = 10, 40
OTHER_MODE = {"pytorch": "channels-last", "keras": "jit", "mxnet": "imperative"}


def bare_loop(model: str, batch: int) -> None:
    """Runs INSIDE a runner image: the plainest timing loop of the framework, printed as JSON."""
    from importlib.metadata import entry_points

    import numpy as np

    backend = next(iter(entry_points(group="zoobench.backend"))).load()()
    spec = next(s for s in backend.models() if s.name == model)
    net = backend.load(spec, "random", backend.resolve_device("cpu"))
    crop = spec.preprocessing.crop_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8)
    norm = spec.preprocessing.normalisation()
    for _ in range(WARMUP):
        backend.predict_pixels(net, pixels, norm)
    t0 = time.perf_counter()
    for _ in range(ITERATIONS):
        backend.predict_pixels(net, pixels, norm)
    seconds = time.perf_counter() - t0
    print(json.dumps({"samples_per_second": batch * ITERATIONS / seconds, "seconds": seconds}))


def predict_bench(tag: str, model: str, batch: int, mode: str = "default") -> dict:
    from bench_predict import docker  # host side only: this file also runs inside an image

    rec = json.loads(docker(tag, ["bench", "--model", model, "--weights", "random", "--device", "cpu",
                                  "--batch-sizes", str(batch), "--warmup", str(WARMUP), "--iterations",
                                  str(ITERATIONS), "--mode", mode]))
    return rec["results"][0]


def bare(tag: str, model: str, batch: int) -> float:
    from bench_predict import docker

    out = docker(tag, ["/bench/bench_overhead.py", "--inside", model, str(batch)], entry="python")
    return json.loads(out.strip().splitlines()[-1])["samples_per_second"]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import yaml

    from orchestrator.images import build as images
    from orchestrator.images import manifest as image_manifest

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variant", default="cpu")
    ap.add_argument("--modes", action="store_true", help="also time each image's non-default mode")
    ap.add_argument("--image", action="append", help="only these images (default: all)")
    args = ap.parse_args()
    specs = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
    same_arch = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())["profiles"]["same-arch"]["models"]
    print(f"predict bench vs bare loop: ResNet-50, random weights, CPU, batch {args.batch_size}, "
          f"{WARMUP} warm-up + {ITERATIONS} timed steps, best of {args.repeats}")
    print(f"{'image':8} {'model':12} {'bench samples/s':>16} {'bare samples/s':>15} {'ratio':>6} {'p50 ms':>8} "
          f"{'peak memory':>12}", flush=True)
    for name, spec in specs.items():
        if args.image and name not in args.image:
            continue
        model = next(m for m in same_arch[name] if m.startswith("resnet50"))
        tag = images.image_tag(spec, args.variant, ROOT)
        benched, bares = [], []
        for _ in range(args.repeats):  # alternately, so a slow spell of the host hits both
            benched.append(predict_bench(tag, model, args.batch_size))
            bares.append(bare(tag, model, args.batch_size))
        best = max(benched, key=lambda r: r["samples_per_second"])
        fast = max(bares)
        print(f"{name:8} {model:12} {best['samples_per_second']:16.2f} {fast:15.2f} "
              f"{best['samples_per_second'] / fast:6.3f} {best['step_ms']['p50']:8.1f} "
              f"{best['peak_memory_bytes'] / 2**20:9.0f} MiB  ({best['peak_memory']})", flush=True)
        if args.modes:
            mode = OTHER_MODE[spec.framework]
            other = max((predict_bench(tag, model, args.batch_size, mode) for _ in range(args.repeats)),
                        key=lambda r: r["samples_per_second"])
            print(f"{'':8} mode {mode}: {other['samples_per_second']:.2f} samples/s "
                  f"({other['samples_per_second'] / best['samples_per_second']:.2f}x the default mode)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        bare_loop(sys.argv[2], int(sys.argv[3]))
    else:
        try:
            main()
        except RuntimeError as exc:
            sys.exit(f"benchmark failed: {exc}")
