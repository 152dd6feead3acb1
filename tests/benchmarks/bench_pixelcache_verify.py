"""What verifying the pixel cache costs (not a test): build and read a 1,000-image cache at 224 px with
the contract's own code, with and without the chunk digests, and the alternative the issue weighed
(one sha256 of the whole ``pixels.npy`` before each use), all measured in one run.

Prints seconds (median of ``--repeat`` runs), the ratios with/without, and each figure scaled
linearly to the 50,000 ImageNet validation images. Usage:
    .venv/bin/python tests/benchmarks/bench_pixelcache_verify.py [--images 1000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "runners" / "contract"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from zoobench_contract import pixelcache  # noqa: E402
from zoobench_contract.dataset import list_images  # noqa: E402
from zoobench_contract.preprocessing import Preprocessing  # noqa: E402

N_VAL = 50_000


def make_images(folder: Path, n: int) -> list[str]:
    """``n`` JPEGs of ImageNet's typical size (500 x 375), distinct pixels, in one class folder."""
    from orchestrator.data.sample import make_sample

    sample = folder / "sample"
    make_sample(sample)
    photos = [Image.open(p).convert("RGB").resize((500, 375)) for p in sorted(sample.rglob("*.jpg"))]
    out = folder / "val" / "n01440764"
    out.mkdir(parents=True)
    for i in range(n):
        photos[i % len(photos)].rotate(i % 360).save(out / f"img{i:05d}.JPEG", quality=90)
    return list_images(folder / "val")


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    prep = Preprocessing()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        paths = make_images(tmp, args.images)
        data = tmp / "val"
        real_digest = pixelcache.chunk_digest

        def build(with_digests: bool) -> None:
            pixelcache.chunk_digest = real_digest if with_digests else (lambda block: "")
            try:
                out = tmp / ("cache-d" if with_digests else "cache-n")
                pixelcache.build(data, paths, prep, out, workers=2)
            finally:
                pixelcache.chunk_digest = real_digest

        build_with = median_time(lambda: build(True), args.repeat)
        build_without = median_time(lambda: build(False), args.repeat)
        folder = tmp / "cache-d"

        def read(verify: bool) -> None:
            cache = pixelcache.PixelCache.open(folder, prep, paths)
            if not verify:
                cache.verify_rows = lambda rows: None  # type: ignore[method-assign]
            for batch in cache.iter_batches(paths, 32):
                np.array(batch.pixels)  # what a backend does first: copy the crops into its tensor

        read(True)  # the page cache warm, as for the second and later models of a bench
        read_with = median_time(lambda: read(True), args.repeat)
        read_without = median_time(lambda: read(False), args.repeat)

        def whole_file() -> None:
            h = hashlib.sha256()
            with open(folder / "pixels.npy", "rb") as f:
                while block := f.read(8 << 20):
                    h.update(block)

        whole = median_time(whole_file, args.repeat)
        size = (folder / "pixels.npy").stat().st_size

    scale = N_VAL / args.images
    print(f"pixel cache verification, {args.images} images at 224 px ({size / 1e6:.1f} MB), median of {args.repeat}")
    rows = [("build with chunk digests", build_with), ("build without digests", build_without),
            ("read with verification (every chunk hashed once)", read_with),
            ("read without verification", read_without),
            ("alternative: sha256 of the whole pixels.npy before use", whole)]
    for name, seconds in rows:
        print(f"  {name:56s} {seconds:8.3f} s   ({seconds * scale:7.1f} s at {N_VAL:,})")
    print(f"  build: with/without = {build_with / build_without:.3f} (+{build_with - build_without:.3f} s)")
    print(f"  read:  with/without = {read_with / read_without:.2f} (+{read_with - read_without:.3f} s, "
          f"{(read_with - read_without) / args.images * 1e3:.3f} ms per image)")
    print(f"  verification added per model read: {read_with - read_without:.3f} s; a whole-file hash per model: "
          f"{whole:.3f} s ({whole / max(read_with - read_without, 1e-9):.2f}x)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
