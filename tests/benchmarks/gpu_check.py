"""GPU check (not a test): the `seed` profile's PyTorch and Keras models on one GPU at fp32, tf32 and
bf16, on a synthetic 1,000-image folder; prints a Markdown table in the format of docs/performance.md.

* No GPU (no nvidia-smi on PATH, or it lists none): one line, exit 2.
* Docker (the default): `zoobench run --gpus G --variant cuda --no-build --precision P --model M`, one
  call per model and precision, each into its own results folder, with the cuda images already built
  (`zoobench images build --variant cuda`). images/s end to end and compute-only come from each
  run.json (`images_per_second`, `compute_images_per_second`).
* --no-docker (or automatically when there is no `docker` command): on a machine with PyTorch, the
  runner packages are pip-installed into this Python if missing (`pip install --no-deps -e
  runners/contract runners/pytorch`) and `predict run --device cuda` runs directly, PyTorch models only.
  Run it with the Python that has PyTorch: `python tests/benchmarks/gpu_check.py --no-docker`.
Peak GPU memory: run.json does not record it, so `nvidia-smi --query-gpu=memory.used -lms 200` is read
during each run; the figure is the peak minus the reading just before that run (MiB). Top-1 agreement:
the share of images whose top-1 class equals the fp32 run's of the same model. Weights are random
(seed 0) unless --weights profile; the table says which. Every temp folder is removed on every exit;
any failure is one line and a non-zero exit.
Usage: python tests/benchmarks/gpu_check.py [--gpu 0] [--images 1000] [--precision P ...] [--model M ...]
                                            [--weights random|profile] [--batch-size N] [--no-docker]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PRECISIONS = ("fp32", "tf32", "bf16")  # zoobench_contract.cli.PRECISIONS (checked by the unit test)
PROFILE = "seed"
CLASSES_TSV = ROOT / "runners" / "contract" / "zoobench_contract" / "imagenet_classes.tsv"
ZB = ROOT / ".venv" / "bin" / "zoobench"
PIXEL_ENV = "ZOOBENCH_PIXEL_CACHE"  # orchestrator/bench/pixelcache.py: the pixel cache root
EXIT_NO_GPU = 2
RUN_TIMEOUT_S = 3600  # per model and precision (models.yaml's default timeout_s)
STOP_AFTER = 3  # runs: when the first ones all fail (no toolkit, no kernels), the check stops there
CURRENT: list[subprocess.Popen] = []  # the child running now, ended on SIGTERM


class CheckFailed(Exception):
    """The one line the user sees (exit 1)."""


def say(text: str = "") -> None:
    print(text, flush=True)


# ------------------------------------------------------------------ the GPU

def find_gpus(smi: str | None = None) -> tuple[list[dict[str, str]], str]:
    """(GPUs nvidia-smi lists: index, name, driver, memory; why none when empty)."""
    smi = smi or shutil.which("nvidia-smi")
    if not smi:
        return [], "no nvidia-smi on PATH"
    try:
        proc = subprocess.run([smi, "--query-gpu=index,name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi did not answer ({type(exc).__name__})"
    gpus = []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[0].isdigit():
            gpus.append(dict(zip(("index", "name", "driver", "memory"), parts)))
    if gpus:
        return gpus, ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()
    return [], f"nvidia-smi lists no GPU{' (' + tail[-1][:160] + ')' if tail else ''}"


class MemorySampler:
    """Peak `memory.used` (MiB) of one GPU while the block runs, minus the reading before it."""

    def __init__(self, gpu: str, smi: str | None = None, interval_ms: int = 200):
        self.smi, self.gpu, self.interval_ms = smi or shutil.which("nvidia-smi") or "nvidia-smi", gpu, interval_ms
        self.idle: float | None = None
        self.peak: float | None = None
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None

    def _query(self, extra: list[str]) -> list[str]:
        return [self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", self.gpu, *extra]

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            value = _mib(line)
            if value is not None:
                self.peak = value if self.peak is None else max(self.peak, value)

    def __enter__(self) -> "MemorySampler":
        try:
            once = subprocess.run(self._query([]), capture_output=True, text=True, timeout=30)
            self.idle = _mib(once.stdout.splitlines()[0]) if once.returncode == 0 and once.stdout.strip() else None
            self.proc = subprocess.Popen(self._query(["-lms", str(self.interval_ms)]), stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True)
        except (OSError, subprocess.TimeoutExpired):
            return self  # no figure; the run itself goes on
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.thread is not None:
            self.thread.join(timeout=10)

    @property
    def above_idle(self) -> float | None:
        if self.peak is None or self.idle is None:
            return None
        return max(self.peak - self.idle, 0.0)


def _mib(text: str) -> float | None:
    try:
        return float(text.strip().split()[0])
    except (ValueError, IndexError):
        return None


# ------------------------------------------------------------------ data and models

def make_synthetic(folder: Path, n: int, seed: int = 0, classes: int = 10) -> Path:
    """n decodable JPEGs (smooth random colour fields, short side 300-500 px, aspect 3:4 to 4:3,
    quality 75-95) in ``classes`` ImageNet synset folders (the first wnids of the contract's list),
    named like the validation set; seeded."""
    from PIL import Image

    wnids = [line.split("\t")[1] for line in CLASSES_TSV.read_text().splitlines()[:classes]]
    rng = np.random.default_rng(seed)
    for i in range(n):
        short = int(rng.integers(300, 501))
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        size = (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))
        coarse = rng.integers(0, 256, (int(rng.integers(4, 17)), int(rng.integers(4, 17)), 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        noise = rng.integers(-12, 13, (size[1], size[0], 3))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        target = folder / wnids[i % len(wnids)]
        target.mkdir(parents=True, exist_ok=True)
        img.save(target / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=int(rng.integers(75, 96)))
    for d in [folder, *folder.iterdir()]:
        d.chmod(0o755)  # the containers' user reads the folder
    return folder


def seed_models(images: tuple[str, ...], only: list[str] | None = None) -> list[str]:
    """IMAGE/MODEL of the seed profile for these images, in the profile's order, narrowed by --model."""
    import yaml

    profile = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())["profiles"][PROFILE]
    names = [f"{image}/{model}" for image in images for model in profile["models"].get(image, [])]
    if only:
        unknown = [o for o in only if not any(o in (n, n.split("/", 1)[1]) for n in names)]
        if unknown:
            raise CheckFailed(f"--model {', '.join(unknown)}: not a {'/'.join(images)} model of the {PROFILE} profile")
        names = [n for n in names if any(o in (n, n.split("/", 1)[1]) for o in only)]
    return names


def profile_weights(image: str) -> str:
    import yaml

    weights = yaml.safe_load((ROOT / "manifests" / "profiles.yaml").read_text())["profiles"][PROFILE]["weights"]
    return weights.get(image, "imagenet") if isinstance(weights, dict) else weights


def model_settings(name: str) -> tuple[int, dict]:
    """(batch size, preprocessing overrides) of IMAGE/MODEL from manifests/models.yaml."""
    import yaml

    manifest = yaml.safe_load((ROOT / "manifests" / "models.yaml").read_text())
    entry = (manifest.get("models") or {}).get(name) or {}
    return int(entry.get("batch_size") or manifest["defaults"]["batch_size"]), dict(entry.get("preprocessing") or {})


# ------------------------------------------------------------------ one run

@dataclass
class Record:
    model: str  # IMAGE/MODEL
    precision: str
    run_dir: Path | None = None  # holds run.json + predictions.npz when it finished
    run: dict | None = None
    peak_mib: float | None = None
    error: str | None = None


def run_child(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> int:
    """Run ``cmd`` with its output in ``log``; its exit code (124 on timeout). SIGTERM ends it too."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        CURRENT.append(proc)
        try:
            return proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
            return 124
        finally:
            CURRENT.remove(proc)


def failure_line(log: Path, model: str = "") -> str:
    """The line of a run's output that says why: the orchestrator's line for the model ("IMAGE/MODEL
    failed: reason"), else the last ``error:`` line, else the last line."""
    lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
    own = [l for l in lines if model and l.startswith(f"{model} ") and any(w in l for w in (" failed", " skipped",
                                                                                            " interrupted"))]
    errors = [l for l in lines if l.lower().startswith("error")]
    return ((own or errors or lines or ["no output"])[-1])[:300]


def finish(record: Record, rc: int, log: Path, run_dir: Path) -> Record:
    """Fill ``record`` from the run folder, or with the reason it has none."""
    run_file = run_dir / "run.json"
    if rc or not run_file.is_file():
        why = failure_line(log, record.model)
        record.error = f"exit {rc}: {why}" if rc else f"no run.json ({why})"
        return record
    record.run, record.run_dir = json.loads(run_file.read_text()), run_dir
    device = str(record.run.get("device"))
    if not device.startswith("cuda"):
        record.error = f"ran on {device}, not on the GPU"
    return record


def docker_command(model: str, precision: str, data: Path, results: Path, gpu: str, weights: str,
                   batch_size: int | None) -> list[str]:
    """``zoobench run`` of one seed model at one precision on one GPU (cuda images, never built here)."""
    cmd = [str(ZB), "run", "--profile", PROFILE, "--data", str(data), "--results", str(results), "--gpus", gpu,
           "--variant", "cuda", "--no-build", "--precision", precision, "--model", model, "--format", "csv"]
    if weights == "random":
        cmd += ["--weights", "random"]
    return cmd + (["--batch-size", str(batch_size)] if batch_size else [])


def predict_command(model: str, precision: str, data: Path, out: Path, weights: str,
                    batch_size: int | None, python: str = sys.executable) -> list[str]:
    """``predict run --device cuda`` of one PyTorch seed model (the contract's CLI, in this Python)."""
    image, name = model.split("/", 1)
    default_batch, preprocess = model_settings(model)
    cmd = [python, "-m", "zoobench_contract.cli", "run", "--model", name, "--data", str(data), "--out", str(out),
           "--device", "cuda", "--precision", precision, "--batch-size", str(batch_size or default_batch),
           "--weights", "random" if weights == "random" else profile_weights(image)]
    return cmd + (["--preprocess", json.dumps(preprocess, sort_keys=True)] if preprocess else [])


# ------------------------------------------------------------------ the table

def read_top1(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(paths, top-1 classes) of a predictions.npz, with the orchestrator's checked reader when it
    is importable (the venv), else numpy's (a bare GPU machine's Python)."""
    try:
        from orchestrator.results.ranking import read_predictions
    except ImportError:
        with np.load(path, allow_pickle=False) as z:
            return z["paths"], z["topk_indices"][:, 0]
    paths, topk, _ = read_predictions(path)
    return paths, topk[:, 0]


def top1_agreement(reference: Path, other: Path) -> float:
    """Share of the images of both runs whose top-1 classes are equal."""
    pa, ta = read_top1(reference / "predictions.npz")
    pb, tb = read_top1(other / "predictions.npz")
    _, ia, ib = np.intersect1d(pa, pb, return_indices=True)
    if ia.size == 0:
        raise CheckFailed(f"{reference} and {other} share no image; cannot compare")
    return float((ta[ia] == tb[ib]).mean())


def _num(value: object, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "n/a"


def table_rows(records: list[Record]) -> list[list[str]]:
    """model, precision, img/s end to end, img/s compute, peak GPU MiB, top-1 agreement with fp32."""
    fp32 = {r.model: r for r in records if r.precision == "fp32" and r.run_dir is not None and not r.error}
    rows = []
    for r in records:
        if r.error or r.run is None:
            rows.append([r.model, r.precision, "failed", "", "", (r.error or "no run")[:120].replace("|", "/")])
            continue
        ref = fp32.get(r.model)
        if r.precision == "fp32":
            agree = "(reference)"
        elif ref is None or r.run_dir is None:
            agree = "n/a (no fp32 run)"
        else:
            agree = f"{100 * top1_agreement(ref.run_dir, r.run_dir):.1f} %"
        rows.append([r.model, r.precision, _num(r.run.get("images_per_second")),
                     _num(r.run.get("compute_images_per_second")),
                     f"{r.peak_mib:.0f}" if r.peak_mib is not None else "n/a", agree])
    return rows


HEADER = ["model", "precision", "img/s end to end", "img/s compute", "peak GPU memory MiB", "top-1 agreement with fp32"]


def markdown_table(records: list[Record]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in table_rows(records)])


# ------------------------------------------------------------------ the two modes

def docker_ready(images: tuple[str, ...]) -> dict[str, str]:
    """The cuda image tag of each image, each present in the engine; else CheckFailed naming the fix."""
    from orchestrator.bench.imagefacts import image_tags

    if not ZB.exists():
        raise CheckFailed(f"{ZB} is missing; run `make install` first")
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode:
        raise CheckFailed("the Docker engine does not answer (`docker info` failed); start it (`make docker`), "
                          "or pass --no-docker to run predict directly")
    tags = {name: tag for name, tag in image_tags(variant="cuda").items() if name in images}
    missing = [t for t in tags.values()
               if subprocess.run(["docker", "image", "inspect", t], capture_output=True).returncode]
    if missing:
        raise CheckFailed(f"the cuda image(s) {', '.join(missing)} are not built; run "
                          "`.venv/bin/zoobench images build --variant cuda` first")
    return tags


def check_modules(python: str = sys.executable) -> None:
    """What --no-docker needs in this Python: PyTorch, and the contract's own dependencies."""
    lacking = [m for m in ("torch", "torchvision", "numpy", "PIL", "typer", "yaml") if importlib.util.find_spec(m) is None]
    if lacking:
        raise CheckFailed(f"--no-docker needs {', '.join(lacking)} in this Python ({python}); install them "
                          "(pip install torch torchvision numpy pillow typer pyyaml) or run with the Python that has PyTorch")


def local_build_backend() -> bool:
    """Whether this Python can build an editable install itself (offline): setuptools >= 70.1, or an
    older one (>= 64, PEP 660) with ``wheel`` beside it."""
    try:
        major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or (major >= 64 and importlib.util.find_spec("wheel") is not None)


def ensure_runner_packages(python: str = sys.executable) -> str:
    """The contract and the PyTorch backend pip-installed (editable, no deps) into this Python when
    missing; the contract's version."""
    wanted = []
    try:
        version("zoobench-contract")
    except PackageNotFoundError:
        wanted.append(ROOT / "runners" / "contract")
    if "pytorch" not in {ep.name for ep in entry_points(group="zoobench.backend")}:
        wanted.append(ROOT / "runners" / "pytorch")
    isolation = ["--no-build-isolation"] if local_build_backend() else []  # else pip fetches setuptools
    for package in wanted:
        proc = subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", *isolation, "-e", str(package)],
                              capture_output=True, text=True)
        if proc.returncode:
            said = [l.strip() for l in (proc.stderr + proc.stdout).splitlines() if l.strip()] or ["no output"]
            why = next((l for l in said if l.lower().startswith("error:")), said[-1])  # the first: the cause
            raise CheckFailed(f"pip install --no-deps -e {package.relative_to(ROOT)} failed: {why[:200]}")
        say(f"installed {package.relative_to(ROOT)} into {python} (pip install --no-deps -e)")
    probe = subprocess.run([python, "-c", "from importlib.metadata import version; print(version('zoobench-contract'))"],
                           capture_output=True, text=True)
    if probe.returncode:
        raise CheckFailed(f"zoobench-contract is not importable in {python} after installing it")
    return probe.stdout.strip()


def check_all(models: list[str], precisions: list[str], gpu: str, one_run) -> list[Record]:
    """Every model at every precision (fp32 first: the reference), each under a memory sampler."""
    records, total = [], len(models) * len(precisions)
    for model in models:
        for precision in precisions:
            with MemorySampler(gpu) as sampler:
                record = one_run(model, precision)
            record.peak_mib = sampler.above_idle
            records.append(record)
            got = (f"{_num(record.run.get('images_per_second'))} img/s" if record.run and not record.error
                   else f"FAILED: {record.error}")
            say(f"[{len(records)}/{total}] {model} {precision}: {got}")
            if len(records) == STOP_AFTER < total and all(r.error for r in records):
                say(f"stopping: the first {STOP_AFTER} runs all failed (the rest would fail alike)")
                return records
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="0", help="index of the GPU to use (nvidia-smi)")
    ap.add_argument("--images", type=int, default=1000, help="size of the synthetic folder")
    ap.add_argument("--precision", action="append", choices=PRECISIONS, help="default: all three")
    ap.add_argument("--model", action="append", help="only these seed models (NAME or IMAGE/MODEL, repeatable)")
    ap.add_argument("--weights", choices=["random", "profile"], default="random",
                    help="random (seed 0, no download) or the seed profile's ImageNet weights (must be cached)")
    ap.add_argument("--batch-size", type=int, help="default: manifests/models.yaml")
    ap.add_argument("--no-docker", action="store_true", help="run predict directly in this Python (PyTorch only)")
    args = ap.parse_args(argv)

    gpus, why = find_gpus()
    if not gpus:
        print(f"gpu-check: no GPU on this host ({why}); nothing to check", file=sys.stderr)
        return EXIT_NO_GPU
    gpu = next((g for g in gpus if g["index"] == args.gpu), None)
    if gpu is None:
        raise CheckFailed(f"--gpu {args.gpu}: this host has GPU(s) {', '.join(g['index'] for g in gpus)}")
    no_docker = args.no_docker or shutil.which("docker") is None
    images = ("pytorch",) if no_docker else ("pytorch", "keras")
    if no_docker:
        check_modules()
    models = seed_models(images, args.model)
    precisions = [p for p in PRECISIONS if p in (args.precision or PRECISIONS)]
    where = ensure_runner_packages() if no_docker else docker_ready(images)
    mode = (f"no Docker{' (no docker command)' if not args.no_docker else ''}: predict run --device cuda in "
            f"{sys.executable}, zoobench-contract {where}") if no_docker else \
        f"Docker, zoobench run --gpus {args.gpu}: {', '.join(where.values())}"
    work = Path(tempfile.mkdtemp(prefix="zoobench-gpu-check-"))
    work.chmod(0o755)
    data = None
    try:
        data = make_synthetic(work / "data", args.images)
        say(f"GPU check: GPU {gpu['index']} {gpu['name']} ({gpu['memory']}, driver {gpu['driver']}); {mode}")
        say(f"{args.images} synthetic JPEGs in 10 synset folders; {len(models)} models x {len(precisions)} precisions; "
            f"{'RANDOM WEIGHTS (seed 0)' if args.weights == 'random' else 'the seed profile ImageNet weights'}")
        env = {**os.environ, PIXEL_ENV: str(work / "pixels"), "COLUMNS": "250"}  # rich: no wrapped lines
        if no_docker:
            # nvidia-smi's index (as --gpus and -i use it) is the PCI order; CUDA's default order differs
            env.update(ZOOBENCH_BACKEND="pytorch", CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=args.gpu)

        def one_run(model: str, precision: str) -> Record:
            stem = f"{precision}-{model.replace('/', '-')}"
            log = work / f"{stem}.log"
            if no_docker:
                out = work / "runs" / stem
                rc = run_child(predict_command(model, precision, data, out, args.weights, args.batch_size), log, env,
                               ROOT)
                return finish(Record(model, precision), rc, log, out)
            results = work / "results" / stem
            rc = run_child(docker_command(model, precision, data, results, args.gpu, args.weights, args.batch_size),
                           log, env, ROOT)
            return finish(Record(model, precision), rc, log, results / model.replace("/", "-"))

        records = check_all(models, precisions, args.gpu, one_run)
        say("")
        say(markdown_table(records))
    finally:
        if data is not None and not no_docker:
            _forget_hashes(data)
        shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in records if r.error]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(records)} runs failed (first: {failed[0].model} "
                          f"{failed[0].precision}: {failed[0].error})")
    return 0


def _forget_hashes(data: Path) -> None:
    """Drop the temp folder's entry in the orchestrator's hash cache (.cache/datascan)."""
    try:
        from orchestrator.bench import datascan

        datascan._cache_file(ROOT / ".cache" / "datascan", data).unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - a stale cache file is harmless; never hide the real outcome
        pass


def _terminate(signum: int, frame: object) -> None:
    for proc in list(CURRENT):
        proc.terminate()
    raise SystemExit(128 + signum)


def cli() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return main()
    except CheckFailed as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gpu-check: interrupted; temp folders removed", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"gpu-check: failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
