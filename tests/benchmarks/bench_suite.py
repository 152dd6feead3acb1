"""Suite benchmark (not a test): prints figures and ratios measured in one run, asserts nothing.

1. builds a synthetic ImageNet-like folder (--images JPEGs made from the embedded sample photos:
   random crops and flips, short side 300-500, aspect 3:4..4:3, JPEG quality 75-95, in the
   sample's synset folders; seeded);
2. a 6-model suite (3 PyTorch + 3 Keras, random weights) in a private copy of manifests/, with
   three pixel configurations, each shared by two models (so the orchestrator caches each):
     A resize 256 crop 224 bilinear: pytorch/resnet18, keras/mobilenetv2 (both native)
     B resize 341 crop 299 bilinear: keras/inceptionv3 (native), pytorch/mobilenet_v3_small (override)
     C resize 256 crop 224 bicubic:  pytorch/squeezenet1_1, keras/efficientnetb0 (overrides)
3. runs it with `zoobench run` three ways, each into a fresh results folder: no pixel cache,
   cold cache, warm cache; per model: import, load, decode wait, compute, img/s; per way: wall
   time and the derived per-model container overhead;
4. decode images/s per core (`predict cache --workers 1` in the pytorch image);
5. planning + data hashing of a first and a second run (in-process scan, and `zoobench run` of a
   finished suite with and without the hash cache);
6. ResNet-50 (random weights, batch 32): `predict run` vs the bare loop of the same framework
   (bare_loop.py) and vs the seed's own methods (seed_methods.py), PyTorch and Keras.
Usage: .venv/bin/python tests/benchmarks/bench_suite.py [--images 1000] [--compare-images N] [--seed 0] [--keep]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from orchestrator.bench import datascan
from orchestrator.bench.imagefacts import image_tags  # noqa: E402
from orchestrator.data.sample import make_sample  # noqa: E402
from zoobench_contract.dataset import list_images  # noqa: E402
from bench_predict import docker  # noqa: E402  (same folder: one docker-run helper for both benchmarks)

ZB = str(ROOT / ".venv" / "bin" / "zoobench")
HASH_CACHE = ROOT / ".cache" / "datascan"  # where `zoobench run` keeps the per-file hashes (orchestrator/bench/service.py)
PIXEL_ENV = "ZOOBENCH_PIXEL_CACHE"  # orchestrator/bench/pixelcache.py: the pixel cache root

SUITE = {
    "pytorch": ["resnet18", "mobilenet_v3_small", "squeezenet1_1"],
    "keras": ["mobilenetv2", "inceptionv3", "efficientnetb0"],
}
OVERRIDES = {  # models.yaml preprocessing overrides that force the three shared configurations
    "pytorch/mobilenet_v3_small": {"resize_size": 341, "crop_size": 299},
    "pytorch/squeezenet1_1": {"interpolation": "bicubic"},
    "keras/efficientnetb0": {"interpolation": "bicubic"},  # keeps its "raw" mode
}
CONFIGS = {
    "A 256/224 bilinear": ["pytorch/resnet18", "keras/mobilenetv2"],
    "B 341/299 bilinear": ["keras/inceptionv3", "pytorch/mobilenet_v3_small"],
    "C 256/224 bicubic": ["pytorch/squeezenet1_1", "keras/efficientnetb0"],
}


def say(text: str = "") -> None:
    print(text, flush=True)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} cores"


# ------------------------------------------------------------------ 1. data

def make_data(work: Path, n: int, seed: int) -> Path:
    """n ImageNet-like JPEGs from the six sample photos, in the photos' synset folders."""
    sample = work / "sample"
    make_sample(sample)
    photos = [(p.parent.name, Image.open(p).convert("RGB")) for p in sorted(sample.glob("*/*.*"))
              if p.suffix.lower() != ".md"]
    rng = random.Random(seed)
    data = work / "data"
    for i in range(n):
        wnid, img = photos[i % len(photos)]
        w, h = img.size
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))  # width / height
        short = rng.randint(300, 500)
        size = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
        # the largest box of that aspect inside the photo, scaled by 0.5..1, at a random place
        bw, bh = (w, w / aspect) if w / aspect <= h else (h * aspect, h)
        f = rng.uniform(0.5, 1.0)
        bw, bh = bw * f, bh * f
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        out = img.resize(size, Image.Resampling.BICUBIC, box=(x0, y0, x0 + bw, y0 + bh))
        if rng.random() < 0.5:
            out = ImageOps.mirror(out)
        folder = data / wnid
        folder.mkdir(parents=True, exist_ok=True)
        out.save(folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=rng.randint(75, 95))
    for d in [data, *data.iterdir()]:
        d.chmod(0o755)
    return data


def subset(data: Path, out: Path, n: int) -> Path:
    """The first n images of ``data`` (sorted order, same synset folders), copied."""
    for rel in list_images(data)[:n]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data / rel, out / rel)
    for d in [out, *out.iterdir()]:
        d.chmod(0o755)
    return out


# ------------------------------------------------------------------ 2. manifests

def make_manifests(work: Path) -> Path:
    target = work / "manifests"
    shutil.copytree(ROOT / "manifests", target)
    profiles = yaml.safe_load((target / "profiles.yaml").read_text())
    profiles["profiles"]["suite"] = {
        "description": "suite benchmark: 3 PyTorch + 3 Keras models, random weights, 3 shared pixel configurations",
        "data": "required",
        "weights": "random",
        "models": SUITE,
    }
    (target / "profiles.yaml").write_text(yaml.safe_dump(profiles, sort_keys=False))
    models = yaml.safe_load((target / "models.yaml").read_text())
    for key, prep in OVERRIDES.items():
        entry = models["models"].setdefault(key, {}) or {}
        entry["preprocessing"] = {**(entry.get("preprocessing") or {}), **prep}
        models["models"][key] = entry
    (target / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    return target


# ------------------------------------------------------------------ docker and zoobench

def last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def zoobench(args: list[str], log: Path, env: dict[str, str]) -> tuple[int, float]:
    """Run the zoobench CLI; (exit code, wall seconds); its output goes to ``log``."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run([ZB, *args], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    return rc, time.perf_counter() - t0


def help_text(args: list[str]) -> str:
    proc = subprocess.run([ZB, *args, "--help"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "250"})  # rich cuts long option names otherwise
    return proc.stdout + proc.stderr if proc.returncode == 0 else ""


def log_tail(log: Path, n: int = 6) -> str:
    lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
    return "\n".join("    " + l for l in lines[-n:])


# ------------------------------------------------------------------ 3. the three ways

def run_rows(results: Path) -> list[dict]:
    rows = []
    for image, models in SUITE.items():
        for model in models:
            path = results / f"{image}-{model}" / "run.json"
            run = json.loads(path.read_text()) if path.is_file() else None
            rows.append({"name": f"{image}/{model}", "run": run})
    return rows


def fmt(value: float | None, width: int = 7, digits: int = 1) -> str:
    return f"{value:{width}.{digits}f}" if isinstance(value, (int, float)) else f"{'n/a':>{width}}"


def print_way(name: str, wall: float, rows: list[dict], builds: float) -> dict:
    say(f"  {'model':28} {'px':>3} {'cache':>5} {'import s':>8} {'load s':>7} {'warmup s':>8} {'decode s':>8} "
        f"{'compute s':>9} {'infer s':>7} {'img/s':>7} {'compute img/s':>13}")
    in_container = 0.0
    ok = 0
    for r in rows:
        run = r["run"]
        if run is None:
            say(f"  {r['name']:28} no run.json (failed or skipped; see the log)")
            continue
        ok += 1
        s = run.get("seconds", {})
        in_container += sum(s.get(k) or 0.0 for k in ("import", "load", "warmup", "inference"))
        prep = run.get("preprocessing", {})
        say(f"  {r['name']:28} {prep.get('crop_size', '?'):>3} {'yes' if run.get('pixel_cache') else 'no':>5} "
            f"{fmt(s.get('import'), 8, 2)} {fmt(s.get('load'), 7, 2)} {fmt(s.get('warmup'), 8, 2)} "
            f"{fmt(s.get('input_wait'), 8, 2)} {fmt(s.get('compute'), 9, 2)} {fmt(s.get('inference'), 7, 2)} "
            f"{fmt(run.get('images_per_second'))} {fmt(run.get('compute_images_per_second'), 13)}")
    overhead = (wall - in_container - builds) / ok if ok else None
    say(f"  {name}: suite wall {wall:.1f} s; in-container import+load+warmup+inference {in_container:.1f} s; "
        f"pixel cache builds {builds:.1f} s")
    say(f"  {name}: container start/stop + orchestration per model (DERIVED: (wall - in-container - cache builds)"
        f" / {ok} models) = {fmt(overhead, 0, 1)} s")
    return {"wall": wall, "in_container": in_container, "builds": builds, "overhead": overhead, "ok": ok}


def cache_builds(root: Path) -> tuple[float, list[str]]:
    """Seconds of the `predict cache` builds found under the pixel cache root, and one line per cache."""
    total, lines = 0.0, []
    if not root.is_dir():
        return total, lines
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            index = json.loads((folder / "index.json").read_text())
        except (OSError, ValueError):
            lines.append(f"{folder.name}: no index.json")
            continue
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        total += index.get("seconds") or 0.0
        lines.append(f"{folder.name}: {index.get('config')}, {index.get('n_images')} images, {size / 1e6:.0f} MB, "
                     f"built in {index.get('seconds', 0):.1f} s")
    return total, lines


# ------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000, help="size of the synthetic folder")
    ap.add_argument("--compare-images", type=int, default=0,
                    help="ResNet-50 comparison (part 6) on the first N images only (default 0: all); for slow "
                         "hosts: the seed's Keras loop runs one image at a time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--variant", default="cpu")
    ap.add_argument("--skip", action="append", default=[], choices=["suite", "decode", "hash", "resnet50"])
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    tags = {name: tag for name, tag in image_tags(variant=args.variant).items() if name in ("pytorch", "keras")}
    work = Path(tempfile.mkdtemp(prefix="zoobench-suite-"))
    work.chmod(0o755)
    pixel_root = work / "pixels"
    env = {**os.environ, PIXEL_ENV: str(pixel_root)}
    figures: dict = {}
    started = time.perf_counter()
    say(f"suite benchmark: {args.images} images, seed {args.seed}, images {tags['pytorch']} {tags['keras']}")
    say(f"machine: {os.cpu_count()} cores, variant {args.variant}; {load()}; work folder {work}")
    data = None
    try:
        # 1 -----------------------------------------------------------------------
        t0 = time.perf_counter()
        data = make_data(work, args.images, args.seed)
        sizes = [Image.open(data / p).size for p in list_images(data)]
        mb = sum((data / p).stat().st_size for p in list_images(data)) / 1e6
        say(f"[1] data: {len(sizes)} JPEGs in {len({p.split('/')[0] for p in list_images(data)})} synset folders, "
            f"{mb:.0f} MB, short side {min(min(s) for s in sizes)}-{max(min(s) for s in sizes)} px, "
            f"mean {sum(s[0] * s[1] for s in sizes) / len(sizes) / 1e3:.0f} kpx ({time.perf_counter() - t0:.0f} s)")
        manifests = make_manifests(work)
        say("[2] suite (random weights), one pixel configuration per pair:")
        for config, models in CONFIGS.items():
            say(f"    {config}: {', '.join(models)}")

        # 5a (first, so that every way below starts with the same warm hash cache) ----
        hash_file = datascan._cache_file(HASH_CACHE, data)
        if "hash" not in args.skip:
            paths = list_images(data)
            workers = max(2, os.cpu_count() or 2)
            hash_file.unlink(missing_ok=True)
            t0 = time.perf_counter()
            first = datascan.scan(data, paths, HASH_CACHE, workers=workers)
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            second = datascan.scan(data, paths, HASH_CACHE, workers=workers)
            t_second = time.perf_counter() - t0
            figures["hash"] = (t_first, t_second)
            say(f"[5] data scan in-process (orchestrator.datascan.scan, {workers} threads, cache {hash_file}):")
            say(f"    first (empty hash cache, {first.reread} files read) {t_first:.2f} s; second (warm, "
                f"{second.reread} read) {t_second:.3f} s; first/second {t_first / max(t_second, 1e-9):.0f}x")

        # 3 -----------------------------------------------------------------------
        if "suite" not in args.skip:
            run_help = help_text(["run"])
            has_no_cache = "--no-pixel-cache" in run_help
            has_cache_cmd = bool(help_text(["cache", "clear"]))
            if not run_help:
                say("[3] `zoobench run --help` fails: the orchestrator CLI is broken; the suite is skipped")
            else:
                base = ["run", "--profile", "suite", "--data", str(data), "--manifests", str(manifests), "--no-build",
                        "--format", "csv"]
                say(f"[3] warm-up (not measured): the suite on 32 images, {'--no-pixel-cache' if has_no_cache else ''}"
                    " (fills the `predict list` cache and the page cache of the images)")
                rc, wall = zoobench(base + ["--limit", "32", "--results", str(work / "r-warmup")]
                                    + (["--no-pixel-cache"] if has_no_cache else []), work / "warmup.log", env)
                say(f"    warm-up: exit {rc}, {wall:.0f} s" + (f"\n{log_tail(work / 'warmup.log')}" if rc else ""))
                ways = [("no-cache", ["--no-pixel-cache"] if has_no_cache else [])]
                if has_no_cache:
                    ways += [("cold", []), ("warm", [])]
                else:
                    say("    `zoobench run` has no --no-pixel-cache yet: only the default way runs (labelled no-cache"
                        " only if the orchestrator builds no pixel cache)")
                for name, extra in ways:
                    if name == "cold":
                        if has_cache_cmd:  # only this benchmark's cache folder, never .cache/pixels
                            subprocess.run([ZB, "cache", "clear", "--all", "--cache-dir", str(pixel_root)], env=env,
                                           cwd=ROOT, capture_output=True)
                        shutil.rmtree(pixel_root, ignore_errors=True)
                    results = work / f"r-{name}"
                    log = work / f"{name}.log"
                    say(f"[3] way {name}: zoobench run {' '.join(extra) or '(pixel cache on)'} "
                        f"-> {results.name} ({load()})")
                    rc, wall = zoobench(base + ["--results", str(results)] + extra, log, env)
                    builds, lines = cache_builds(pixel_root) if name == "cold" else (0.0, [])
                    if rc:
                        say(f"    exit {rc}; log {log}:\n{log_tail(log)}")
                    for line in lines:
                        say(f"    pixel cache {line}")
                    figures.setdefault("ways", {})[name] = print_way(name, wall, run_rows(results), builds)
                    notes = [l for l in log.read_text(errors="replace").splitlines()
                             if l.startswith("note:") or l.startswith("pixel cache")]
                    for l in notes[:8]:
                        say(f"    | {l}")
                ways_f = figures.get("ways", {})
                if "no-cache" in ways_f:
                    base_wall = ways_f["no-cache"]["wall"]
                    for name in ("cold", "warm"):
                        if name in ways_f:
                            say(f"    {name}/no-cache wall ratio {ways_f[name]['wall'] / base_wall:.2f}")

                # 5b: the same finished suite again, all models reused: with and without the hash cache
                if "warm" in ways_f and "hash" not in args.skip:
                    results = work / "r-warm"
                    hash_file.unlink(missing_ok=True)
                    rc1, t1 = zoobench(base + ["--results", str(results)], work / "reuse-cold.log", env)
                    rc2, t2 = zoobench(base + ["--results", str(results)], work / "reuse-warm.log", env)
                    figures["reuse"] = (t1, t2)
                    say(f"[5] `zoobench run` of the finished suite (6 models reused; planning + hashing + reuse "
                        f"checks + ranking): hash cache deleted {t1:.1f} s (exit {rc1}), kept {t2:.1f} s (exit {rc2}); "
                        f"ratio {t1 / t2:.1f}x")

        # 4 -----------------------------------------------------------------------
        if "decode" not in args.skip:
            for workers in (1, os.cpu_count() or 1):
                out = work / f"decode-{workers}"
                docker(tags["pytorch"], ["cache", "--data", "/data", "--out", "/out", "--resize-size", "256",
                                         "--crop-size", "224", "--interpolation", "bilinear", "--workers",
                                         str(workers)], data, out)
                index = json.loads((out / "index.json").read_text())
                ips = index["n_images"] / index["seconds"]
                figures.setdefault("decode", {})[workers] = ips
                say(f"[4] decode (predict cache 256/224 bilinear, pytorch image, --workers {workers}): "
                    f"{index['n_images']} images in {index['seconds']:.1f} s = {ips:.1f} img/s"
                    + (f" = {ips / workers:.1f} img/s per core" if workers > 1 else " (per core)"))
                shutil.rmtree(out, ignore_errors=True)

        # 6 -----------------------------------------------------------------------
        if "resnet50" not in args.skip:
            folder = data
            if args.compare_images and args.compare_images < args.images:
                folder = subset(data, work / "compare", args.compare_images)
                say(f"[6] ResNet-50 on the first {args.compare_images} of the {args.images} images only "
                    "(--compare-images: the seed's Keras loop runs one image at a time)")
            n = len(list_images(folder))
            figures["r50_images"] = n
            say(f"[6] ResNet-50, random weights, batch {args.batch_size}, {n} images ({load()})")
            for fw in ("pytorch", "keras"):
                out = work / f"r50-{fw}"
                docker(tags[fw], ["run", "--model", "resnet50", "--weights", "random", "--data", "/data", "--out",
                                  "/out", "--batch-size", str(args.batch_size)], folder, out)
                run = json.loads((out / "run.json").read_text())
                say(f"    {fw} predict run: {run['images_per_second']:.1f} img/s "
                    f"(compute {run['compute_images_per_second']:.1f} img/s, decode wait "
                    f"{run['seconds'].get('input_wait', 0):.1f} s, preprocessing {run['preprocessing']['resize_size']}"
                    f"/{run['preprocessing']['crop_size']})")
                bare = last_json(docker(tags[fw], ["/bench/bare_loop.py", "resnet50", "/data", str(args.batch_size)],
                                        folder, entry="python"))
                say(f"    {fw} bare loop (bare_loop.py): {bare['images_per_second']:.1f} img/s")
                seed = last_json(docker(tags[fw], ["/bench/seed_methods.py", fw, "/data", str(args.batch_size)],
                                        folder, entry="python"))
                say(f"    {fw} seed method ({seed['method']}): {seed['images_per_second']:.1f} img/s")
                figures.setdefault("r50", {})[fw] = (run["images_per_second"], bare["images_per_second"],
                                                      seed["images_per_second"])
                say(f"    {fw}: predict/bare {run['images_per_second'] / bare['images_per_second']:.3f}, "
                    f"predict/seed {run['images_per_second'] / seed['images_per_second']:.2f}")
    finally:
        if data is not None:
            datascan._cache_file(HASH_CACHE, data).unlink(missing_ok=True)  # the temp folder's hash cache
        if args.keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    summary(figures, time.perf_counter() - started)


def summary(f: dict, total: float) -> None:
    def target(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    say("")
    say(f"=== summary (one run, {os.cpu_count()} cores, no GPU; {load()}; benchmark took {total / 60:.1f} min) ===")
    ways = f.get("ways", {})
    for name, w in ways.items():
        say(f"suite {name:8}: wall {w['wall']:6.1f} s, in-container {w['in_container']:6.1f} s, cache builds "
            f"{w['builds']:5.1f} s, derived overhead/model {fmt(w['overhead'], 0, 1)} s ({w['ok']}/6 models ok)")
    if "no-cache" in ways:
        for name in ("cold", "warm"):
            if name in ways:
                r = ways[name]["wall"] / ways["no-cache"]["wall"]
                tail = f" (target <= 0.70: {target(r <= 0.7)})" if name == "warm" else ""
                say(f"ratio {name}/no-cache wall: {r:.2f}{tail}")
    for workers, ips in sorted(f.get("decode", {}).items()):
        say(f"decode --workers {workers}: {ips:.1f} img/s ({ips / workers:.1f} img/s per core)")
    if "hash" in f:
        a, b = f["hash"]
        say(f"hashing in-process: first {a:.2f} s, second {b:.3f} s, ratio {a / max(b, 1e-9):.0f}x "
            f"(target >= 20x: {target(a / max(b, 1e-9) >= 20)})")
    if "reuse" in f:
        a, b = f["reuse"]
        say(f"zoobench run of a finished suite: hash cache deleted {a:.1f} s, kept {b:.1f} s, ratio {a / b:.1f}x")
    if f.get("r50"):
        say(f"resnet50 comparison on {f['r50_images']} images:")
    for fw, (ips, bare, seed) in f.get("r50", {}).items():
        line = (f"resnet50 {fw:7}: predict {ips:.1f} img/s, bare {bare:.1f}, seed {seed:.1f}; predict/bare "
                f"{ips / bare:.3f} (target >= 0.95: {target(ips / bare >= 0.95)}), predict/seed {ips / seed:.2f}")
        if fw == "keras":
            line += f" (target >= 3: {target(ips / seed >= 3)})"
        say(line)


if __name__ == "__main__":
    main()
