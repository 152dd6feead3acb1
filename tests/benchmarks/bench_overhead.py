"""Overhead benchmark of ``predict bench`` in every image (not a test): prints figures and ratios, asserts nothing.

For ResNet-50 and EfficientNet-Lite0 (random weights; each image's own names, from the same-arch profile; the
runtime images serve PyTorch's, converted with ``zoobench convert``) in every image of manifests/images.yaml,
on the CPU at batch 1 and 32: ``predict bench`` against the bare loop a user would write with the same runtime
in the same image, on the same seeded synthetic batch:

* a framework image (pytorch, keras on TensorFlow/JAX/PyTorch, mxnet): build the model with the backend and
  feed ``backend.predict_pixels`` (uint8 in, normalised on the device);
* a runtime image: the runtime's own API on the converted file with its defaults (``onnxruntime.InferenceSession``
  + ``run``; ``openvino.Core().compile_model(.., "CPU")`` + an infer request), fed the normalised float batch.

Target: ``predict bench`` >= 0.97x the bare loop. The two are run alternately, ``--repeats`` times each, and the
best of each is compared. ``--modes`` also times each framework image's non-default mode.

Usage: .venv/bin/python tests/benchmarks/bench_overhead.py [--models resnet50,lite0] [--batch-sizes 1,32]
       [--repeats 1] [--image NAME ...] [--modes]
Inside an image (how this script runs the bare loop): python /bench/bench_overhead.py --inside MODEL BATCH WARMUP STEPS
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] if len(Path(__file__).resolve().parents) > 2 else Path("/")  # /bench in an image
STEPS = {1: (10, 40), 32: (3, 10)}  # batch -> (warm-up, timed steps); another batch size: (5, 20)
OTHER_MODE = {"pytorch": "channels-last", "keras": "jit", "mxnet": "imperative"}
SOURCE = "pytorch"  # the runtime images serve this image's models, converted


def runtime_session(framework: str, record_dir: Path):
    """(one step, the conversion record): the runtime's own API with its defaults on the converted model
    (``zoobench_<runtime>.bare``, inside the runtime's image)."""
    import importlib

    record = json.loads((record_dir / "convert.json").read_text())
    bare_api = importlib.import_module(f"zoobench_{framework}.bare")
    return bare_api.session(str(record_dir / "model.onnx"), record["input"]["name"]), record


def bare_loop(model: str, batch: int, warmup: int, steps: int) -> None:
    """Runs INSIDE a runner image: the plainest timing loop of its framework or runtime, printed as JSON."""
    from importlib.metadata import entry_points

    import numpy as np

    backend = next(iter(entry_points(group="zoobench.backend"))).load()()
    spec = next(s for s in backend.models() if s.name == model)
    crop = spec.preprocessing.crop_size
    if backend.framework in ("onnxruntime", "openvino"):
        source, name = model.split(".", 1)
        run, record = runtime_session(backend.framework, Path("/converted") / source / name / "random")
        nchw = record["input"]["layout"] == "NCHW"
        shape = (batch, 3, crop, crop) if nchw else (batch, crop, crop, 3)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        step = lambda: run(x)  # noqa: E731
    else:
        net = backend.load(spec, "random", backend.resolve_device("cpu"))
        pixels = np.random.default_rng(0).integers(0, 256, (batch, crop, crop, 3), dtype=np.uint8)
        norm = spec.preprocessing.normalisation()
        step = lambda: backend.predict_pixels(net, pixels, norm)  # noqa: E731
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - t0
    print(json.dumps({"samples_per_second": batch * steps / seconds, "seconds": seconds}))


def predict_bench(tag: str, model: str, batch: int, mounts: dict[str, str], mode: str = "default") -> dict:
    from bench_predict import docker  # host side only: this file also runs inside an image

    warmup, steps = STEPS.get(batch, (5, 20))
    rec = json.loads(docker(tag, ["bench", "--model", model, "--weights", "random", "--device", "cpu",
                                  "--batch-sizes", str(batch), "--warmup", str(warmup), "--iterations",
                                  str(steps), "--mode", mode], mounts=mounts))
    return rec["results"][0]


def bare(tag: str, model: str, batch: int, mounts: dict[str, str]) -> float:
    from bench_predict import docker

    warmup, steps = STEPS.get(batch, (5, 20))
    out = docker(tag, ["/bench/bench_overhead.py", "--inside", model, str(batch), str(warmup), str(steps)],
                 entry="python", mounts=mounts)
    return json.loads(out.strip().splitlines()[-1])["samples_per_second"]


def convert_sources(models: list[str]) -> dict[str, str]:
    """Convert the source models the runtime images serve (random weights; cached) and return the mount."""
    from orchestrator.bench.imagefacts import image_tags
    from orchestrator.convert.records import Conversion, mount_target

    cmd = [str(ROOT / ".venv/bin/zoobench"), "convert", "--from", SOURCE, "--to", "onnx", "--weights", "random"]
    proc = subprocess.run(cmd + [a for m in models for a in ("--model", m)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"zoobench convert failed: {(proc.stdout + proc.stderr).strip()[-600:]}")
    folder = Conversion(SOURCE, image_tags()[SOURCE], models[0], "random").source_folder()
    return {str(folder): mount_target(SOURCE)}


def model_names(names: list[str]) -> dict[str, dict[str, str]]:
    """image -> {resnet50|lite0 -> the image's model name}, from the same-arch profile (runtimes: SOURCE.MODEL)."""
    import yaml

    from orchestrator.images import manifest as image_manifest

    specs = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
    same = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())["profiles"]["same-arch"]["models"]
    out: dict[str, dict[str, str]] = {}
    for image, spec in specs.items():
        own = same.get(SOURCE if spec.reads else ("keras" if spec.framework == "keras" else image), [])
        picks = {"resnet50": next(m for m in own if m.startswith("resnet50")), "lite0": "efficientnet_lite0"}
        out[image] = {k: (f"{SOURCE}.{v}" if spec.reads else v) for k, v in picks.items() if k in names}
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from orchestrator.images import build as images
    from orchestrator.images import manifest as image_manifest

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet50,lite0")
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variant", default="cpu")
    ap.add_argument("--modes", action="store_true", help="also time each framework image's non-default mode")
    ap.add_argument("--image", action="append", help="only these images (default: all)")
    args = ap.parse_args()
    specs = image_manifest.load_manifest(ROOT / "manifests" / "images.yaml")
    names = model_names(args.models.split(","))
    batches = [int(b) for b in args.batch_sizes.split(",")]
    mounts = convert_sources(sorted({m.split(".", 1)[1] for i, s in specs.items() if s.reads for m in names[i].values()}))
    print(f"predict bench vs bare loop of the same runtime: random weights, CPU, steps per batch {STEPS}, "
          f"best of {args.repeats}")
    print(f"{'image':12} {'model':28} {'batch':>5} {'bench samples/s':>16} {'bare samples/s':>15} {'ratio':>6} "
          f"{'p50 ms':>8} {'peak memory':>12}", flush=True)
    for name, spec in specs.items():
        if args.image and name not in args.image:
            continue
        tag = images.image_tag(spec, args.variant, ROOT)
        extra = mounts if spec.reads else {}
        for model in names[name].values():
            for batch in batches:
                benched, bares = [], []
                for _ in range(args.repeats):  # alternately, so a slow spell of the host hits both
                    benched.append(predict_bench(tag, model, batch, extra))
                    bares.append(bare(tag, model, batch, extra))
                best, fast = max(benched, key=lambda r: r["samples_per_second"]), max(bares)
                print(f"{name:12} {model:28} {batch:5d} {best['samples_per_second']:16.2f} {fast:15.2f} "
                      f"{best['samples_per_second'] / fast:6.3f} {best['step_ms']['p50']:8.1f} "
                      f"{(best['peak_memory_bytes'] or 0) / 2**20:9.0f} MiB  ({best['peak_memory']})", flush=True)
                if args.modes and spec.framework in OTHER_MODE:
                    other = predict_bench(tag, model, batch, extra, OTHER_MODE[spec.framework])
                    print(f"{'':12} mode {OTHER_MODE[spec.framework]}: {other['samples_per_second']:.2f} samples/s "
                          f"({other['samples_per_second'] / best['samples_per_second']:.2f}x the default mode)",
                          flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        bare_loop(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        try:
            main()
        except RuntimeError as exc:
            sys.exit(f"benchmark failed: {exc}")
