"""``zoobench``: build the framework images, run a model zoo one container per model, rank it."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from zoobench_contract.clitools import run_app
from zoobench_contract.dataset import DataError, list_images
from zoobench_contract.outputs import write_json

from . import containers, datascan, images, mounts, pixelcache, runlock, slurm
from .bench import (PARTIAL_SUFFIX, Bench, BenchError, DataMount, PixelSettings, check_precision, lane_plan, plan_jobs,
                    summary_rows)
from .manifests import MANIFEST_DIR, ManifestError, get_profile, load_models

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
console = Console(stderr=True)
out = Console()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible cross-framework ImageNet benchmark: one container per model.")
images_app = typer.Typer(no_args_is_help=True, help="Build and list the framework images.")
weights_app = typer.Typer(no_args_is_help=True, help="Fetch pretrained weights into the cache (needs network).")
cache_app = typer.Typer(no_args_is_help=True, help="List and clear the pixel caches (decoded crops shared by models).")
app.add_typer(images_app, name="images")
app.add_typer(weights_app, name="weights")
k8s_app = typer.Typer(no_args_is_help=True, help="Render a bench for Kubernetes: one Indexed Job per image "
                      "(rendered and schema-checked here, not run).")
app.add_typer(cache_app, name="cache")
app.add_typer(k8s_app, name="k8s")
slurm_app = typer.Typer(no_args_is_help=True, help="Follow and stop benches submitted with --engine slurm.")
app.add_typer(slurm_app, name="slurm")
try:
    from .data.cli import data_app

    app.add_typer(data_app, name="data", help="Prepare, check and sample validation data.")
except ImportError:  # pragma: no cover - only while the data package is absent
    pass

ManifestOpt = typer.Option(MANIFEST_DIR, "--manifests", help="folder of YAML manifests")
MixedOpt = typer.Option(False, "--mixed-precision", help="rank runs of different precisions together")
LabelsOpt = typer.Option(None, "--labels", help="real (the ReaL labels), or a CSV filename,wnid "
                         "(default: synset folder names)")
CacheDirOpt = typer.Option(None, "--cache-dir",
                           help=f"pixel cache folder (default ${pixelcache.ROOT_ENV} or .cache/pixels)")
ENGINES = ("local", "slurm")
VariantOpt = typer.Option(None, "--variant", help="image variant (cpu|cuda); default cuda with --gpus, else cpu")


def variant_for(variant: str | None, gpus: list[str]) -> str:
    return variant or ("cuda" if gpus else "cpu")


def parse_gpus(text: str | None) -> list[str]:
    if not text:
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not all(g.isdigit() for g in gpus):
        raise BenchError(f"--gpus {text!r}: give GPU indices separated by commas, e.g. 0,1")
    return gpus


def image_tags(manifest_dir: Path, variant: str) -> dict[str, str]:
    specs = images.load_manifest(manifest_dir / "images.yaml")
    return {name: images.image_tag(spec, variant, ROOT) for name, spec in specs.items()}


def predict_cache_file(tag: str, command: str = "list") -> Path:
    """Where an image's `predict list` (or `info`) is cached, per tag: tags are content hashes."""
    suffix = "" if command == "list" else f".{command}"
    return CACHE / "models" / f"{images.tag_file_stem(tag)}{suffix}.json"


def cached_listing(tag: str) -> list[dict[str, Any]] | None:
    """The cached `predict list` of an image tag, or None when no run has listed that image yet."""
    cache = predict_cache_file(tag)
    return json.loads(cache.read_text()) if cache.is_file() else None


def engine_client(runtime: str, engine: str) -> Any:
    """The container engine's client; for ``--engine slurm`` None when this host has none (a login
    node): then the bench is planned from the shared caches and the tasks find the images on their nodes."""
    try:
        return containers.connect(runtime)
    except containers.EngineError as exc:
        if engine != "slurm":
            raise
        console.print(f"note: no container engine on this host ({exc}); planning from {CACHE / 'models'}, "
                      "the tasks run the images on their nodes", highlight=False, soft_wrap=True)
        return None


def _no_engine(tag: str, what: str) -> BenchError:
    image = tag.split(":")[0].rsplit("/", 1)[-1]
    return BenchError(f"no container engine here and no cached {what} of {tag} in {CACHE / 'models'}; run "
                      f"`zoobench models {image}` once on a host with the images (the cache is shared), then again")


def image_id(client: Any, tag: str) -> str:
    """The id of the image ``tag`` (it must be built), remembered per tag for hosts without an engine."""
    cache = predict_cache_file(tag, "id")
    if client is None:
        if not cache.is_file():
            raise _no_engine(tag, "image id")
        return str(json.loads(cache.read_text())["id"])
    found = containers.require_image(client, tag).id
    if not cache.is_file() or json.loads(cache.read_text()).get("id") != found:
        write_json(cache, {"id": found})
    return found


def cached_predict_json(client: Any, tag: str, command: str) -> Any:
    """`predict COMMAND` (list, info) of an image, run once per tag and cached atomically (a bench
    reading it while another writes it never sees half a file)."""
    cache = predict_cache_file(tag, command)
    if cache.is_file():
        return json.loads(cache.read_text())
    if client is None:
        raise _no_engine(tag, f"`predict {command}`")
    containers.require_image(client, tag)  # "not built" in one line, never a pull from a registry
    answer = containers.predict_json(client, tag, command)
    write_json(cache, answer)
    return answer


def served_models(client: Any, tag: str) -> dict[str, dict[str, Any]]:
    """The image's `predict list` as name -> spec, cached per image tag."""
    return {m["name"]: m for m in cached_predict_json(client, tag, "list")}


def pillow_version(client: Any, tag: str) -> str:
    """The Pillow version of an image (what its pixel crops depend on)."""
    version = cached_predict_json(client, tag, "info").get("pillow")
    if not version:
        raise BenchError(f"`predict info` of {tag} names no Pillow version; rebuild the image")
    return str(version)


def sample_data() -> Path:
    from .data.sample import make_sample

    target = CACHE / "sample"
    make_sample(target)
    return target


def visible_gpus() -> list[str]:
    """Indices of the host's NVIDIA GPUs (nvidia-smi); empty when there are none or no driver."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    proc = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip().isdigit()] if proc.returncode == 0 else []


def check_gpus(wanted: list[str]) -> None:
    """Every ``--gpus`` index must be a GPU of this host, before any image is built."""
    if not wanted:
        return
    have = visible_gpus()
    missing = [g for g in wanted if g not in have]
    if missing:
        where = f"this host has GPU(s) {','.join(have)}" if have else "no NVIDIA GPU is visible on this host (nvidia-smi)"
        raise BenchError(f"--gpus {','.join(wanted)}: {where}; drop --gpus to run on the CPU")


def check_weights_option(weights: str | None) -> None:
    if weights is None or weights == "random" or weights == "imagenet" or weights.startswith("imagenet:"):
        return
    if not Path(weights).is_file():
        raise BenchError(f"--weights {weights}: no such file; use imagenet, imagenet:VARIANT, random or a weights file")


def scan_data(data: Path, jobs: list[Any], results: Path) -> tuple[list[str], dict[int | None, str]]:
    """Decode and hash, once on the host, every file the jobs will read; bad files end the bench
    here, all named in one report. Returns (the files read, the data digest per --limit); the
    files read cover every --limit, so ``len(files[:limit])`` is the image count of each."""
    paths = list_images(data)
    limits = {j.limit for j in jobs}
    needed = paths if None in limits else paths[:max(limits)]
    with Progress(TextColumn("scanning data"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("scan", total=len(needed))
        scanned = datascan.scan(data, needed, CACHE / "datascan", workers=max(2, os.cpu_count() or 2),
                                progress=lambda done, total: progress.update(task, completed=done))
    if scanned.problems:
        report = results / "logs" / "data-problems.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("".join(f"{data / p}: {why}\n" for p, why in scanned.problems))
        first, why = scanned.problems[0]
        raise BenchError(f"{len(scanned.problems)} file(s) in {data} cannot be used (first: {data / first}: {why}); "
                         f"fix or remove them (all listed in {report}), then run again")
    return needed, {limit: scanned.digest(paths[:limit] if limit else paths) for limit in limits}


def _inside(path: Path, folder: Path) -> bool:
    real, top = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real == top or top in real.parents


def check_outside_data(data: Path, results: Path, pixel_root: Path | None) -> None:
    """A results folder or pixel cache inside the data folder would be read back as data next time."""
    if _inside(results, data):
        raise BenchError(f"--results {results} is inside the data folder {data}: its files would be read as "
                         "images by the next run; pass a results folder outside the data")
    if pixel_root is not None and _inside(pixel_root, data):
        raise BenchError(f"pixel cache folder {pixel_root} is inside the data folder {data}; set "
                         f"${pixelcache.ROOT_ENV} to a folder outside the data, or pass --no-pixel-cache")


def results_folder_problem(results: Path, exc: OSError) -> str:
    """One line for a results folder that cannot be made or locked, with the fix that fits the cause."""
    blocker = next((p for p in (results, *results.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return (f"--results {results}: {blocker} is a file, not a folder; pass a folder (it is created "
                "when missing)")
    return f"results folder {results}: {exc.strerror or exc}; make it writable, free space or pass another --results"


@app.command()
def run(
    profile: str = typer.Option("sample", "--profile", "-p", help="bench profile from manifests/profiles.yaml"),
    data: Optional[Path] = typer.Option(None, "--data", help="validation folder (synset sub-folders)"),
    results: Optional[Path] = typer.Option(None, "--results", help="results folder (default results/PROFILE)"),
    gpus: Optional[str] = typer.Option(None, "--gpus",
                                       help="GPU indices, e.g. 0,1 (--jobs-per-gpu models per GPU at a time)"),
    variant: Optional[str] = VariantOpt,
    model: Optional[list[str]] = typer.Option(None, "--model", help="only these models (repeatable)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    weights: Optional[str] = typer.Option(None, "--weights", help="override the profile: imagenet|random|PATH"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="first N images only"),
    labels: Optional[str] = LabelsOpt,
    force: bool = typer.Option(False, "--force", help="re-run models that already finished"),
    build: bool = typer.Option(True, "--build/--no-build", help="build missing images first"),
    fmt: str = typer.Option("table", "--format", help="ranking format: table|markdown|csv|json"),
    precision: Optional[str] = typer.Option(None, "--precision", help="override the profile: fp32|tf32|bf16"),
    mixed_precision: bool = MixedOpt,
    jobs_per_gpu: int = typer.Option(1, "--jobs-per-gpu", min=1, help="models sharing each GPU at a time"),
    pixel_cache: bool = typer.Option(True, "--pixel-cache/--no-pixel-cache",
                                     help="decode each image set once per pixel configuration, shared by the models"),
    engine: str = typer.Option("local", "--engine", help="local (this host) | slurm (one job array, a task per model)"),
    runtime: str = typer.Option("docker", "--runtime", help="container runtime: docker | podman (its Docker API)"),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition", rich_help_panel="Slurm"),
    account: Optional[str] = typer.Option(None, "--account", help="Slurm account", rich_help_panel="Slurm"),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Slurm time limit per task, e.g. 2:00:00",
                                             rich_help_panel="Slurm"),
    gres: Optional[str] = typer.Option(None, "--gres", help="Slurm gres per task (default gpu:1 for the cuda "
                                       "variant, none for cpu)", rich_help_panel="Slurm"),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1, help="Slurm: at most N tasks at once",
                                               rich_help_panel="Slurm"),
    sbatch_arg: Optional[list[str]] = typer.Option(None, "--sbatch-arg", help="extra sbatch options, e.g. '--qos=high' "
                                                   "(repeatable; split into words as a shell would, never run by one)",
                                                   rich_help_panel="Slurm"),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="a shared folder of `zoobench images export`; "
                                              "this host and every Slurm node load the images they lack from it",
                                              rich_help_panel="Slurm"),
    manifests: Path = ManifestOpt,
) -> None:
    """Run a bench profile: one container per model (on this host or as a Slurm array), then print the ranking."""
    from .labels import parse_labels, truth_for
    from .ranking import FORMATS, RankError, run_rank

    # Everything that can be checked is checked before the first container (or build) starts.
    if fmt not in FORMATS:
        raise RankError(f"--format {fmt!r}: use one of {'|'.join(FORMATS[:-1])}")
    labels = parse_labels(labels)
    if isinstance(labels, Path) and not labels.is_file():
        raise BenchError(f"--labels {labels}: no such file; pass real or a CSV with columns filename,wnid")
    check_weights_option(weights)
    if precision is not None:
        check_precision(precision)
    if engine not in ENGINES:
        raise BenchError(f"--engine {engine!r}: use one of {'|'.join(ENGINES)}")
    containers.check_runtime(runtime)
    sbatch_tokens = slurm.parse_sbatch_args(sbatch_arg or [])
    if engine == "slurm" and gpus:
        raise BenchError("--gpus picks GPUs of this host; with --engine slurm each task gets its GPU from Slurm "
                         "(--variant cuda asks for --gres gpu:1)")
    if images_dir is not None and not images_dir.is_dir():
        raise BenchError(f"--images-dir {images_dir}: no such folder; fill it with `zoobench images export`")
    prof = get_profile(profile, manifests)
    models_manifest = load_models(manifests)
    gpu_list = parse_gpus(gpus)
    lane_plan(gpu_list, jobs_per_gpu)  # --jobs-per-gpu needs --gpus: one line, before anything runs
    check_gpus(gpu_list)
    var = variant_for(variant, gpu_list)
    if data is None and prof.data != "sample":
        raise BenchError(f"profile {profile!r} needs ImageNet: pass --data /path/to/imagenet/val (synset folders)")
    if data is not None:
        list_images(data)  # fails early, one line, on a missing or empty folder
        data_path, binds, dangling = mounts.data_binds(data)
        if dangling:
            raise BenchError(f"{len(dangling)} symlink(s) in {data} point nowhere (first: {data / dangling[0]}); "
                             "fix or remove them")
    results = results or ROOT / "results" / profile
    check_outside_data(data if data is not None else CACHE / "sample", results,
                       pixelcache.cache_root() if pixel_cache else None)
    try:
        results.mkdir(parents=True, exist_ok=True)
        lock = runlock.ResultsLock(results, note=lambda m: console.print(f"note: {m}"))
        holder = lock.acquire()
    except OSError as exc:
        raise BenchError(results_folder_problem(results, exc)) from None
    try:
        slurm.refuse_if_live(results)  # an array of an earlier run may still write here
        client = engine_client(runtime, engine)
        if data is None:
            data = sample_data()
            data_path, binds, _ = mounts.data_binds(data)
            console.print(f"data: embedded sample set at {data}")
        tags = image_tags(manifests, var)
        needed = sorted(set(prof.models))
        if images_dir is not None and client is not None:  # exported images first: then nothing to build
            from . import imagestore

            for tag in imagestore.load_missing(client, [tags[n] for n in needed], images_dir, strict=False):
                console.print(f"loaded {tag} from {images_dir}", highlight=False)
        if build and client is not None:
            for name in needed:
                images_build_one(client, name, var, manifests)
        jobs = plan_jobs(prof, models_manifest, tags, lambda img: served_models(client, tags[img]),
                         only=model, batch_size=batch_size, weights=weights, limit=limit, precision=precision)
        if not jobs:
            raise BenchError(f"profile {profile!r} lists no models; add some in {manifests / 'profiles.yaml'}")
        image_ids = {tag: image_id(client, tag) for tag in sorted({j.tag for j in jobs})}  # the chosen models' only
        scanned, digests = scan_data(data, jobs, results)
        truth_for(scanned, labels)  # a file with no label is one line now, not after every model ran
        weights_binds = {}
        if weights is not None and Path(weights).is_file():
            weights_binds[weights] = mounts.file_bind(Path(weights), "--weights file")[1]
        console.print(f"{len(jobs)} model(s), results in {results}")
        counts = {lim: len(scanned[:lim]) if lim else len(scanned) for lim in digests}
        pixels = (PixelSettings(pixelcache.cache_root(), lambda tag: pillow_version(client, tag))
                  if pixel_cache else None)
        bench = Bench(client, jobs, DataMount(data_path, binds, digests, counts), results, CACHE / "weights",
                      gpu_list, console, run_id=holder.run_id, force=force, weights_binds=weights_binds,
                      jobs_per_gpu=jobs_per_gpu, pixels=pixels, image_ids=image_ids)
        if engine == "slurm":
            options = slurm.SlurmOptions(partition, account, time_limit, gres, max_parallel, sbatch_tokens,
                                         runtime, str(images_dir.resolve()) if images_dir else None)
            summary = slurm.run_array(bench, options, f"zoobench-{profile}", pixels.root if pixels else None,
                                      var == "cuda", console)
        else:
            summary = bench.run()
    finally:
        lock.release()
    rows = summary_rows(summary)
    print_summary(rows)
    if summary.count("ok") + summary.count("reused"):
        ranked = run_rank(results, labels, fmt, out, mixed_precision=mixed_precision)
        try:
            html = write_reports(ranked, results, results, labels, data, manifests)[-1]
            console.print(f"report: {html} (with results.md and acc_vs_speed.png)", highlight=False, soft_wrap=True)
        except Exception as exc:  # noqa: BLE001 - a report that cannot be written never fails a finished bench
            console.print(f"note: no report written ({type(exc).__name__}: {exc}); `zoobench report {results}` "
                          "retries it", highlight=False, soft_wrap=True)
    failed = [r for r in rows if r["status"] in ("failed", "interrupted")]
    for r in failed:  # in full, one line each, after the ranking: the table cuts long reasons
        log = f" (log: {r['log']})" if r["log"] else ""
        console.print(f"[red]{r['image']}/{r['model']} {r['status']}: {r['reason']}{log}", highlight=False, soft_wrap=True)
    if failed:
        console.print(f"[red]error: {len(failed)} of {len(rows)} model(s) did not finish (reasons above); "
                      f"fix them and run the same command again: finished models are kept", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1)
    if not summary.count("ok") + summary.count("reused"):  # all skipped: nothing was measured
        console.print(f"[red]error: no model ran: all {len(rows)} were skipped (reasons above); fetch their weights "
                      "(`zoobench weights fetch`) or pass --weights random", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def print_summary(rows: list[dict[str, Any]]) -> None:
    """One row per model; the reasons of models that did not run follow, each on one full line."""
    table = Table(title="bench", show_lines=False)
    for col in ("image", "model", "weights", "status", "batch", "img/s"):
        table.add_column(col)
    colours = {"ok": "green", "reused": "cyan", "skipped": "yellow", "failed": "red", "interrupted": "red"}
    for r in rows:
        ips = f"{r['images_per_second']:.1f}" if r["images_per_second"] else ""
        table.add_row(r["image"], r["model"], r["weights"], f"[{colours[r['status']]}]{r['status']}",
                      str(r["batch_size"] or ""), ips)
    console.print(table)
    for r in rows:
        if r["status"] == "skipped":
            console.print(f"[yellow]{r['image']}/{r['model']} skipped: {r['reason']}", highlight=False, soft_wrap=True)


@app.command()
def rank(
    results_dir: Path = typer.Argument(..., help="folder holding one sub-folder per model run"),
    labels: Optional[str] = LabelsOpt,
    fmt: str = typer.Option("table", "--format", help="table|markdown|csv|json"),
    mixed_precision: bool = MixedOpt,
) -> None:
    """Score every predictions.npz + run.json below RESULTS_DIR and print the ranking."""
    from .labels import parse_labels
    from .ranking import run_rank

    run_rank(results_dir, parse_labels(labels), fmt, out, mixed_precision=mixed_precision)


@app.command()
def report(
    results_dir: Path = typer.Argument(...),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="default: RESULTS_DIR"),
    labels: Optional[str] = LabelsOpt,
    mixed_precision: bool = MixedOpt,
    data: Optional[Path] = typer.Option(None, "--data", help="the data folder the runs were made on, for the "
                                        "gallery's thumbnails (default: the folder run.json records, if it is here)"),
    manifests: Path = ManifestOpt,
) -> None:
    """Write results.md, a PNG of Acc@1 against images/s per framework, and report.html (one self-contained
    page: sortable ranking, plot, environments, agreement matrices, disagreement gallery)."""
    from .labels import parse_labels
    from .ranking import run_rank

    parsed = parse_labels(labels)
    rows = run_rank(results_dir, parsed, "none", out, mixed_precision=mixed_precision)
    for path in write_reports(rows, results_dir, out_dir or results_dir, parsed, data, manifests):
        out.print(str(path))


def write_reports(rows: list[Any], results_dir: Path, out_dir: Path, labels: Any, data: Path | None,
                  manifests: Path) -> list[Path]:
    """results.md, acc_vs_speed.png and report.html of ranked ``rows`` into ``out_dir``."""
    from .architectures import ARCHITECTURES_FILE, load_architectures
    from .htmlreport import data_roots, write_html_report
    from .report import write_report

    architectures = load_architectures(manifests / ARCHITECTURES_FILE)
    data_roots(rows, data)  # a bad --data is one line before anything is written
    try:
        written = write_report(rows, out_dir)
        written.append(write_html_report(rows, results_dir, out_dir, architectures, labels=labels, data=data,
                                         png=written[1]))
    except OSError as exc:
        raise BenchError(f"report folder {out_dir}: cannot write {Path(exc.filename or out_dir).name} "
                         f"({exc.strerror or exc}); pass a writable folder with --out") from None
    return written


@app.command()
def compare(
    folders: list[Path] = typer.Argument(..., help="RUN_A RUN_B (two run folders), or RESULTS with --matrix"),
    matrix: bool = typer.Option(False, "--matrix", help="agreement of the runs of each architecture in RESULTS "
                                "(manifests/architectures.yaml)"),
    labels: Optional[str] = LabelsOpt,
    fmt: str = typer.Option("table", "--format", help="table|json"),
    manifests: Path = ManifestOpt,
) -> None:
    """Compare two runs image by image (agreement, who is right, McNemar, the images they disagree on
    most), or with --matrix the runs of each architecture across frameworks in one results folder."""
    from .compare import run_compare, run_matrix
    from .labels import parse_labels
    from .ranking import RankError

    if matrix:
        if len(folders) != 1:
            raise RankError(f"--matrix takes one results folder, got {len(folders)}; "
                            "`zoobench compare RESULTS --matrix`")
        from .architectures import ARCHITECTURES_FILE, load_architectures

        run_matrix(folders[0], load_architectures(manifests / ARCHITECTURES_FILE), fmt, out)
    elif len(folders) != 2:
        raise RankError(f"compare takes two run folders, got {len(folders)}; `zoobench compare RUN_A RUN_B` "
                        "or `zoobench compare RESULTS --matrix`")
    else:
        run_compare(folders[0], folders[1], parse_labels(labels), fmt, out)


@app.command("models")
def models_cmd(
    image: str = typer.Argument(..., help="image name from manifests/images.yaml"),
    variant: Optional[str] = VariantOpt,
    manifests: Path = ManifestOpt,
) -> None:
    """List the models an image serves, with their preprocessing (cached per image tag, with its image id,
    for `k8s render` and for a Slurm submit host that has no container engine)."""
    client = containers.connect()
    tags = image_tags(manifests, variant_for(variant, []))
    if image not in tags:
        raise BenchError(f"unknown image {image!r}; manifests/images.yaml defines {', '.join(sorted(tags))}")
    image_id(client, tags[image])  # must be built; remembered, like the listing, for hosts with no engine
    listing = list(served_models(client, tags[image]).values())  # cached: `k8s render` and Slurm use it offline
    table = Table(title=f"{image} ({tags[image]}): {len(listing)} models")
    for col in ("model", "crop", "resize", "interp", "mode", "weights"):
        table.add_column(col)
    for m in listing:
        p = m["preprocessing"]
        table.add_row(m["name"], str(p["crop_size"]), str(p["resize_size"]), p["interpolation"], p["mode"], m["weights"])
    out.print(table)


@images_app.command("build")
def images_build(
    names: Optional[list[str]] = typer.Argument(None, help="images to build (default: all)"),
    variant: str = typer.Option("cpu", "--variant"),
    manifests: Path = ManifestOpt,
) -> None:
    """Build images whose content hash changed (an unchanged image is never rebuilt)."""
    client = containers.connect()
    specs = images.load_manifest(manifests / "images.yaml")
    for name in names or sorted(specs):
        images_build_one(client, name, variant, manifests)


def images_build_one(client: Any, name: str, variant: str, manifests: Path) -> str:
    specs = images.load_manifest(manifests / "images.yaml")
    if name not in specs:
        raise BenchError(f"unknown image {name!r}; manifests/images.yaml defines {', '.join(sorted(specs))}")
    tag = images.image_tag(specs[name], variant, ROOT)
    if images.image_exists(client, tag):
        console.print(f"{name} ({variant}): {tag} up to date")
        return tag
    from .livestatus import LiveStatus, elapsed_text

    console.print(f"{name} ({variant}): building {tag} ...", highlight=False)
    with LiveStatus(console, f"{name} ({variant})") as status:  # step, elapsed, last line; failures: the log
        images.build(specs[name], variant, ROOT, client, on_log=status.log, on_step=status.step)
    console.print(f"{name} ({variant}): built {tag} in {elapsed_text(status.elapsed)}", highlight=False)
    return tag


@images_app.command("export")
def images_export(
    names: Optional[list[str]] = typer.Argument(None, help="images to export (default: all)"),
    to: Path = typer.Option(..., "--to", help="folder on the shared filesystem the nodes can read"),
    variant: str = typer.Option("cpu", "--variant"),
    manifests: Path = ManifestOpt,
) -> None:
    """Save built images as tar files (docker save) for nodes that cannot build them."""
    from . import imagestore

    imagestore.check_folder(to)  # a bad --to is one line before the engine is asked anything
    client = containers.connect()
    tags = image_tags(manifests, variant)
    unknown = [n for n in names or [] if n not in tags]
    if unknown:
        raise BenchError(f"unknown image(s) {', '.join(unknown)}; manifests/images.yaml defines {', '.join(sorted(tags))}")
    imagestore.export(client, [tags[n] for n in names or sorted(tags)], to, lambda m: console.print(m, highlight=False))


@images_app.command("load")
def images_load(folder: Path = typer.Argument(..., help="a folder written by `zoobench images export`"),
                runtime: str = typer.Option("docker", "--runtime", help="docker | podman")) -> None:
    """Load every exported image of FOLDER into this node's container engine (docker load)."""
    from . import imagestore

    client = containers.connect(runtime)
    for tag in imagestore.load_all(client, folder):
        console.print(f"loaded {tag}", highlight=False)


@images_app.command("list")
def images_list(variant: str = typer.Option("cpu", "--variant"), manifests: Path = ManifestOpt) -> None:
    """Show each image's content-hash tag and whether it is built."""
    client = containers.connect()
    specs = images.load_manifest(manifests / "images.yaml")
    table = Table()
    for col in ("image", "variant", "tag", "built"):
        table.add_column(col)
    for name, spec in sorted(specs.items()):
        tag = images.image_tag(spec, variant, ROOT)
        table.add_row(name, variant, tag, "yes" if images.image_exists(client, tag) else "[red]no")
    out.print(table)


@weights_app.command("fetch")
def weights_fetch(
    profile: str = typer.Option("full", "--profile", "-p"),
    model: Optional[list[str]] = typer.Option(None, "--model"),
    variant: str = typer.Option("cpu", "--variant"),
    network: str = typer.Option("bridge", "--network", help="docker network for the downloads (e.g. one with a proxy)"),
    manifests: Path = ManifestOpt,
) -> None:
    """Download the pretrained weights of a profile's models into .cache/weights (the only networked
    step). Exits 1 when any model's weights could not be fetched."""
    prof = get_profile(profile, manifests)
    client = containers.connect()
    tags = image_tags(manifests, variant)
    for name in sorted(set(prof.models)):
        containers.require_image(client, tags[name])
    jobs = plan_jobs(prof, load_models(manifests), tags, lambda img: served_models(client, tags[img]), only=model)
    groups: dict[str, list[str]] = {}
    failures: dict[str, list[str]] = {}
    weights_dir = CACHE / "weights"
    weights_dir.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        name = f"{job.image}/{job.model}"
        if not job.weights.startswith("imagenet"):
            groups.setdefault(f"need nothing ({job.weights} weights)", []).append(name)
            continue
        log = CACHE / "logs" / f"fetch-{job.run_name}.log"
        with containers.handed_over(weights_dir):
            result = containers.predict_in_container(
                client, job.tag, ["fetch", "--model", job.model, "--weights", job.weights], [], None, weights_dir,
                log_path=log, timeout_s=1800, network=network, weights_writable=True)
        if result.exit_code == 0:
            status = fetch_status(log)
            groups.setdefault({"bundled": "bundled in the image", "cached": "already cached"}.get(status, "fetched"),
                              []).append(name)
        else:
            failures.setdefault(failure_cause(result.reason, job.model), []).append(name)
    for what, names in groups.items():
        console.print(f"{what}: {len(names)} ({', '.join(names)})", highlight=False, soft_wrap=True)
    if failures:
        for cause, names in failures.items():
            console.print(f"[red]could not fetch {len(names)}: {', '.join(names)}: {cause}", highlight=False,
                          soft_wrap=True)
        failed = sum(map(len, failures.values()))
        console.print(f"[red]error: weights of {failed} of {len(jobs)} model(s) could not be fetched (logs in "
                      f"{CACHE / 'logs'}); `zoobench run` reports them as skipped", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def fetch_status(log: Path) -> str:
    """``fetched``, ``cached`` or ``bundled``, from the JSON line ``predict fetch`` prints last."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return str(json.loads(line).get("status", "fetched"))
            except ValueError:
                break
    return "fetched"


def failure_cause(reason: str, model: str) -> str:
    """A fetch failure's cause without what is particular to one model (URL, name), so models
    failing for the same reason are listed once."""
    os_error = re.search(r"\[Errno [^\]]+\][^)(;>]*", reason)
    if os_error:
        return os_error.group(0).strip()
    return reason.removeprefix(f"{model}: ")


@cache_app.command("list")
def cache_list(
    cache_dir: Optional[Path] = CacheDirOpt,
    as_json: bool = typer.Option(False, "--json", help="print the caches as JSON"),
) -> None:
    """Show every pixel cache: key, pixel config, Pillow version, images, size, state (a folder that is
    not a cache zoobench made is listed as foreign: `cache clear` never removes it)."""
    root = cache_dir or pixelcache.cache_root()
    entries = pixelcache.list_caches(root)
    if as_json:
        out.print_json(json.dumps([{**{k: v for k, v in vars(e).items() if k != "path"}, "path": str(e.path)}
                                   for e in entries]))
        return
    table = Table(title=f"pixel caches in {root}", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for col in ("key", "resize/crop", "pillow", "images", "size", "created", "state"):
        table.add_column(col, justify="right" if col in ("images", "size") else "left", no_wrap=True)
    colours = {"complete": "green", "partial": "yellow", "broken": "red", "foreign": "dim"}
    for e in entries:
        images = "" if e.n_images is None else str(e.n_images)
        table.add_row(e.key, e.config.replace("resize ", "").replace(" crop ", "/"), e.pillow, images,
                      pixelcache.size_text(e.size), e.created[:10], f"[{colours[e.state]}]{e.state}")
    out.print(table)
    total = sum(e.size for e in entries if e.state != "foreign")
    foreign = [e for e in entries if e.state == "foreign"]
    out.print(f"{len(entries) - len(foreign)} cache folder(s), {pixelcache.size_text(total)}"
              + (f"; {len(foreign)} other folder(s) that zoobench did not make (never removed)" if foreign else ""),
              highlight=False)


@cache_app.command("clear")
def cache_clear(
    keys: Optional[list[str]] = typer.Argument(None, help="keys to remove (`zoobench cache list` shows them)"),
    everything: bool = typer.Option(False, "--all", help="remove every cache zoobench made, complete or partial"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only say what would be removed"),
    cache_dir: Optional[Path] = CacheDirOpt,
) -> None:
    """Remove pixel caches (complete and partial folders); a bench rebuilds what it needs. Only folders
    zoobench can prove it made are removed (a cache key name, only a build's files, a marker or index
    that gives back the key); anything else is left alone and named."""
    root = cache_dir or pixelcache.cache_root()
    if not keys and not everything:
        raise BenchError("zoobench cache clear: give the KEY(s) to remove or --all (`zoobench cache list` shows them)")
    if keys and everything:
        raise BenchError("zoobench cache clear: give KEY(s) or --all, not both")
    try:
        done = pixelcache.clear(root, keys or [], everything, dry_run=dry_run)
    except KeyError as exc:
        raise BenchError(f"no pixel cache {exc.args[0]} in {root}; `zoobench cache list` shows the keys") from None
    except pixelcache.NotACache as exc:
        raise BenchError(str(exc)) from None
    verb = "would remove" if dry_run else "removed"
    for e in done.removed:
        console.print(f"{verb} {e.path.name} ({e.state}, {pixelcache.size_text(e.size)})", highlight=False)
    for e in done.left:
        console.print(f"left alone: {e.path} ({e.why}): not a pixel cache zoobench made", highlight=False,
                      soft_wrap=True)
    console.print(f"{verb} {len(done.removed)} cache folder(s), "
                  f"{pixelcache.size_text(sum(e.size for e in done.removed))} {'to free' if dry_run else 'freed'}"
                  + (f"; {len(done.left)} other folder(s) left alone" if done.left else ""), highlight=False)


@k8s_app.command("render")
def k8s_render(
    profile: str = typer.Option(..., "--profile", "-p", help="bench profile from manifests/profiles.yaml"),
    data_claim: str = typer.Option(..., "--data-claim", help="PersistentVolumeClaim holding the validation images"),
    results_claim: str = typer.Option(..., "--results-claim", help="PersistentVolumeClaim the results go to"),
    weights_claim: Optional[str] = typer.Option(None, "--weights-claim",
                                                help="PersistentVolumeClaim holding .cache/weights (read-only)"),
    variant: Optional[str] = typer.Option(None, "--variant", help="cpu|cuda; default cuda with --gpus, else cpu"),
    gpus: Optional[int] = typer.Option(None, "--gpus", min=1,
                                       help="models running at once per image (the Job's parallelism, one GPU "
                                            "each for cuda); default 1"),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="namespace of the Jobs (default: kubectl's)"),
    image_registry: Optional[str] = typer.Option(None, "--image-registry",
                                                 help="prefix of the image references, e.g. registry.example.com/team"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="folder for the YAML files (default k8s/PROFILE)"),
    data_path: str = typer.Option("/data", "--data-path", help="where the pods mount the data claim"),
    models_from: Optional[list[str]] = typer.Option(None, "--models-from",
                                                    help="IMAGE=FILE: that image's `predict list` JSON (repeatable)"),
    model: Optional[list[str]] = typer.Option(None, "--model", help="only these models (repeatable)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    weights: Optional[str] = typer.Option(None, "--weights", help="override the profile: imagenet|imagenet:VARIANT|random"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="first N images only"),
    precision: Optional[str] = typer.Option(None, "--precision", help="override the profile: fp32|tf32|bf16"),
    manifests: Path = ManifestOpt,
) -> None:
    """Write one batch/v1 Indexed Job per image of a profile (one completion index per model) and a README."""
    from . import k8s

    target = k8s.Target(
        profile=profile,
        data_claim=k8s.check_name(data_claim, "--data-claim"),
        results_claim=k8s.check_name(results_claim, "--results-claim"),
        weights_claim=k8s.check_name(weights_claim, "--weights-claim") if weights_claim is not None else None,
        variant=k8s.check_variant(variant or ("cuda" if gpus else "cpu")),
        parallelism=gpus or 1,
        namespace=k8s.check_name(namespace, "--namespace", label=True) if namespace is not None else None,
        registry=k8s.check_registry(image_registry),
        data_path=k8s.check_data_path(data_path),
    )
    k8s.check_weights(weights)
    if precision is not None:
        check_precision(precision)
    prof = get_profile(profile, manifests)
    models_manifest = load_models(manifests)
    tags = image_tags(manifests, target.variant)
    note = lambda m: console.print(f"note: {m}", highlight=False, soft_wrap=True)  # noqa: E731
    served = k8s.served_offline(prof, tags, cached_listing, k8s.parse_models_from(models_from, list(prof.models)),
                                note)
    jobs = plan_jobs(prof, models_manifest, tags, served, only=model, batch_size=batch_size, weights=weights,
                     limit=limit, precision=precision)
    if not jobs:
        raise BenchError(f"profile {profile!r} lists no models; add some in {manifests / 'profiles.yaml'}")
    rendered = k8s.render(jobs, target, note)
    folder = out_dir or ROOT / "k8s" / profile
    for path in k8s.write(folder, rendered, target, sample=prof.data == "sample"):
        out.print(str(path), highlight=False, soft_wrap=True)
    console.print(f"{len(rendered)} Indexed Job(s), {len(jobs)} model(s), in {folder}: "
                  f"`kubectl apply -f {folder}`; {folder / k8s.README} says how to collect and rank the results",
                  highlight=False, soft_wrap=True)


@slurm_app.command("cancel")
def slurm_cancel(results: Path = typer.Argument(..., help="results folder of a bench run with --engine slurm"),
                 runtime: str = typer.Option("docker", "--runtime", help="docker | podman")) -> None:
    """Cancel the bench's Slurm array and stop its containers; finished models are kept."""
    try:
        client = containers.connect(runtime)
    except containers.EngineError:
        client = None  # a login node: the tasks stop their own containers
    label = str(results.resolve())
    job_id, removed = slurm.cancel(results, lambda: containers.remove_containers(client, label) if client else 0,
                                   console)
    done = len([p for p in results.glob("*/request.json") if not p.parent.name.endswith(PARTIAL_SUFFIX)])
    console.print(f"cancelled Slurm array {job_id}; {removed} container(s) removed on this host, {done} finished "
                  "model(s) kept; run the same `zoobench run` again to finish the rest", highlight=False)


@slurm_app.command("task", hidden=True)
def slurm_task(plan_file: Path = typer.Argument(..., help="the plan.json of a submitted array")) -> None:
    """One array task (run by Slurm on a node): the plan's job number $SLURM_ARRAY_TASK_ID, run as a
    local bench of one model would run it."""
    index_text = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not index_text.isdigit():
        raise BenchError("`zoobench slurm task` runs inside a Slurm array task (SLURM_ARRAY_TASK_ID is not set)")
    outcome = slurm.run_task(plan_file, int(index_text), console, pillow_version)
    if outcome.status not in ("ok", "reused", "skipped"):
        raise typer.Exit(1)


@app.command()
def doctor(
    data: Optional[Path] = typer.Option(None, "--data"),
    variant: str = typer.Option("cpu", "--variant"),
    manifests: Path = ManifestOpt,
) -> None:
    """Check the Docker engine, the GPU runtime, the images and the data layout."""
    problems = 0

    def line(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += not ok
        out.print(f"[{'green' if ok else 'red'}]{'ok ' if ok else 'BAD'}[/] {what}: {detail}")

    try:
        client = containers.connect()
        line(True, "docker engine", client.version().get("Version", "?"))
    except containers.EngineError as exc:
        line(False, "docker engine", str(exc))
        raise typer.Exit(1) from None
    runtimes = client.info().get("Runtimes", {})
    smi = shutil.which("nvidia-smi")
    gpu_text = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip() if smi else ""
    out.print(f"    GPUs: {gpu_text or 'none visible (CPU runs only)'}; nvidia runtime: {'nvidia' in runtimes}")
    try:
        tags = image_tags(manifests, variant)
        for name, tag in sorted(tags.items()):
            line(images.image_exists(client, tag), f"image {name}", tag if images.image_exists(client, tag)
                 else f"{tag} not built: run `zoobench images build --variant {variant}`")
    except ManifestError as exc:
        line(False, "manifests", str(exc))
    try:
        defaults = load_models(manifests).defaults
        out.print(f"    containers: no capabilities, no-new-privileges, read-only root with tmpfs /tmp, "
                  f"{containers.PIDS_LIMIT} PIDs, memory limit {defaults.memory or 'none'} "
                  "(defaults.memory / models.IMAGE/MODEL.memory in manifests/models.yaml)")
    except ManifestError as exc:
        line(False, "manifests", str(exc))
    out.print(f"    slurm: {slurm.cluster_summary()}", highlight=False)
    if shutil.which("podman") or os.environ.get("CONTAINER_HOST"):
        try:
            podman = containers.connect("podman").version().get("Version", "?")
            out.print(f"    podman API: {podman} at {containers.podman_socket()} (--runtime podman)", highlight=False)
        except containers.EngineError as exc:
            out.print(f"    podman API: {exc}", highlight=False)
    if data is not None:
        try:
            found = list_images(data)
            classes = {p.split("/")[0] for p in found if "/" in p}
            line(True, "data", f"{data}: {len(found)} images in {len(classes)} folders (`zoobench data check` for details)")
        except DataError as exc:
            line(False, "data", str(exc))
    if problems:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors are one line and exit code 2; Ctrl-C keeps finished work."""
    signal.signal(signal.SIGTERM, _interrupt)
    errors = {ManifestError: 2, BenchError: 2, containers.EngineError: 2, DataError: 2, mounts.MountError: 2,
              runlock.ResultsBusy: 2}
    from .imagestore import ImageStoreError

    errors[ImageStoreError] = 2
    from .ranking import ERRORS as RANK_ERRORS

    errors.update({kind: 2 for kind in (*images.ERRORS, *RANK_ERRORS)})
    run_app(app, argv, errors, echo=lambda m: console.print(f"[red]{m}", highlight=False, soft_wrap=True),
            interrupted="interrupted; finished models are kept, run the same command again to resume")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
