"""Start a bench as ``zoobench run`` asks: every check first, then the results folder's lock, the
data scan, the plan, and the run itself, on this host or as a Slurm array.

:func:`run_bench` is the one service behind ``zoobench run``: it takes the parsed options
(:class:`BenchRequest`), prints progress on a console, and returns the :class:`BenchRun` (the
summary, the results folder and the data used) that the CLI ranks and reports. Everything that can
be checked is checked before the first container (or image build) starts, each as one line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from zoobench_contract.dataset import list_images

from ..engines import slurm
from ..errors import BenchError, EngineError
from ..images import manifest as image_manifest
from ..images.manifest import ImageSpec
from ..images.ensure import ensure_built
from ..manifests import get_profile, load_models
from ..paths import DATASCAN_CACHE, MANIFEST_DIR, MODELS_CACHE, RESULTS, ROOT, SAMPLE_DATA, WEIGHTS_CACHE
from . import containers, datascan, gpus, imagefacts, mounts, pixelcache, runlock
from ..data.datasets import DatasetsManifest, load_datasets
from .evalset import EvalSet, counts_note, evalset_for
from ..convert.bench import bench_conversions
from .layout import log_dir
from .plan import Job, PlanOptions, check_precision, lane_plan
from .runner import Bench, BenchSummary, DataMount, Outcome, PixelSettings
from .variants import ImageVariants, parse_variants, runs_on_gpu

ENGINES = ("local", "slurm")


@dataclass(frozen=True)
class BenchRequest:
    """``zoobench run``'s options, parsed (the Slurm ones only count with ``engine="slurm"``)."""

    profile: str = "sample"
    data: Path | None = None
    results: Path | None = None
    gpus: str | None = None
    variant: str | None = None
    plan: PlanOptions = field(default_factory=lambda: PlanOptions())
    labels: Any = None  # a parsed --labels (results.labels.Labels): checked against the scanned files
    force: bool = False
    build: bool = True
    jobs_per_gpu: int = 1
    pixel_cache: bool = True
    engine: str = "local"
    runtime: str = "docker"
    slurm: slurm.SlurmOptions = field(default_factory=lambda: slurm.SlurmOptions())
    images_dir: Path | None = None
    manifests: Path = MANIFEST_DIR
    dataset: str | None = None  # --dataset (manifests/datasets.yaml; None: the default set)


@dataclass(frozen=True)
class BenchRun:
    """What a finished :func:`run_bench` gives the CLI to rank and report."""

    summary: BenchSummary
    results: Path  # the results folder as asked (a set's runs may be in a sub-folder of it: ``runs``)
    data: Path
    runs: Path | None = None  # where this bench's runs are (``results``, or its set's sub-folder)
    evalset: EvalSet | None = None


def parse_gpus(text: str | None) -> list[str]:
    if not text:
        return []
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not all(g.isdigit() for g in gpus):
        raise BenchError(f"--gpus {text!r}: give GPU indices separated by commas, e.g. 0,1")
    return gpus


def engine_client(runtime: str, engine: str, console: Console) -> Any:
    """The container engine's client; for ``--engine slurm`` None when this host has none (a login
    node): then the bench is planned from the shared caches and the tasks find the images on their nodes."""
    try:
        return containers.connect(runtime)
    except EngineError as exc:
        if engine != "slurm":
            raise
        console.print(f"note: no container engine on this host ({exc}); planning from {MODELS_CACHE}, "
                      "the tasks run the images on their nodes", highlight=False, soft_wrap=True)
        return None


def sample_data() -> Path:
    from ..data.sample import make_sample

    target = SAMPLE_DATA
    make_sample(target)
    return target


def visible_gpus() -> list[str]:
    """Indices of the host's NVIDIA GPUs (nvidia-smi); empty when there are none or no driver."""
    return [g.index for g in gpus.host_gpus()]


def check_gpus(wanted: list[str], images: list[str], variants: ImageVariants, specs: dict[str, ImageSpec]) -> None:
    """Every ``--gpus`` index must be a GPU of this host, and every image of the bench that runs on a
    GPU must serve each chosen one (kernels or PTX, driver new enough), before any image is built."""
    if not wanted:
        return
    host = gpus.host_gpus()
    have = [g.index for g in host]
    missing = [g for g in wanted if g not in have]
    if missing:
        where = f"this host has GPU(s) {','.join(have)}" if have else "no NVIDIA GPU is visible on this host (nvidia-smi)"
        raise BenchError(f"--gpus {','.join(wanted)}: {where}; drop --gpus to run on the CPU")
    on_gpu = [i for i in images if i in specs and runs_on_gpu(variants.spec(specs, i))]
    if not on_gpu:
        raise BenchError(f"--gpus {','.join(wanted)} with --variant {variants.text()}: no image of this bench runs "
                         "a GPU variant; drop --gpus, or pass --variant cuda")
    chosen = [g for g in host if g.index in wanted]
    for image in on_gpu:
        spec = variants.spec(specs, image)
        if spec.gpu is None:  # a GPU variant that declares no gpu: build in images.yaml: nothing to check
            continue
        way_out = f"--variant {variants.with_override(image, 'cpu').text()}"
        problem = gpus.refusal(image, spec.name, spec.gpu, chosen, host, way_out)
        if problem:
            raise BenchError(problem)


def bench_images(req: BenchRequest, profile: Any) -> list[str]:
    """The images a bench can start: the profile's, narrowed by ``--model`` when every one is IMAGE/MODEL
    (a bare model name may be any image's until the images are listed)."""
    images = sorted(profile.models)
    only = req.plan.only or []
    if only and all("/" in o for o in only):
        images = [i for i in images if any(o.split("/", 1)[0] == i for o in only)]
    return images


def check_weights_option(weights: str | None) -> None:
    if weights is None or weights == "random" or weights == "imagenet" or weights.startswith("imagenet:"):
        return
    if not Path(weights).is_file():
        raise BenchError(f"--weights {weights}: no such file; use imagenet, imagenet:VARIANT, random or a weights file")


def scan_data(data: Path, jobs: list[Job], results: Path, console: Console,
              evalset: EvalSet | None = None) -> tuple[list[str], dict[int | None, str]]:
    """Decode and hash, once on the host, every file the jobs will read (of ``evalset``'s classes only when
    it reads only those); bad files end the bench here, all named in one report. Returns (the files read,
    the data digest per --limit); the files read cover every --limit, so ``len(files[:limit])`` is the
    image count of each."""
    paths = evalset.select(data) if evalset is not None else list_images(data)
    limits = {j.limit for j in jobs}
    needed = paths if None in limits else paths[:max(limits)]
    with Progress(TextColumn("scanning data"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("scan", total=len(needed))
        scanned = datascan.scan(data, needed, DATASCAN_CACHE, workers=max(2, os.cpu_count() or 2),
                                progress=lambda done, total: progress.update(task, completed=done))
    if scanned.problems:
        report = log_dir(results) / "data-problems.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("".join(f"{data / p}: {why}\n" for p, why in scanned.problems))
        first, why = scanned.problems[0]
        raise BenchError(f"{len(scanned.problems)} file(s) in {data} cannot be used (first: {data / first}: {why}); "
                         f"fix or remove them (all listed in {report}), then run again")
    return needed, {limit: scanned.digest(paths[:limit] if limit else paths) for limit in limits}


def inside(path: Path, folder: Path) -> bool:
    real, top = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return real == top or top in real.parents


def check_outside_data(data: Path, results: Path, pixel_root: Path | None) -> None:
    """A results folder or pixel cache inside the data folder would be read back as data next time."""
    if inside(results, data):
        raise BenchError(f"--results {results} is inside the data folder {data}: its files would be read as "
                         "images by the next run; pass a results folder outside the data")
    if pixel_root is not None and inside(pixel_root, data):
        raise BenchError(f"pixel cache folder {pixel_root} is inside the data folder {data}; set "
                         f"${pixelcache.ROOT_ENV} to a folder outside the data, or pass --no-pixel-cache")


def results_folder_problem(results: Path, exc: OSError) -> str:
    """One line for a results folder that cannot be made or locked, with the fix that fits the cause."""
    blocker = next((p for p in (results, *results.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return (f"--results {results}: {blocker} is a file, not a folder; pass a folder (it is created "
                "when missing)")
    return f"results folder {results}: {exc.strerror or exc}; make it writable, free space or pass another --results"


def check_request(req: BenchRequest) -> tuple[str, ...]:
    """The checks that need nothing but the options, each one line, before anything is read or run;
    returns the ``--sbatch-arg`` words."""
    check_weights_option(req.plan.weights)
    if req.plan.precision is not None:
        check_precision(req.plan.precision)
    if req.engine not in ENGINES:
        raise BenchError(f"--engine {req.engine!r}: use one of {'|'.join(ENGINES)}")
    containers.check_runtime(req.runtime)
    sbatch_tokens = slurm.parse_sbatch_args(list(req.slurm.sbatch_args))
    if req.engine == "slurm" and req.gpus:
        raise BenchError("--gpus picks GPUs of this host; with --engine slurm each task gets its GPU from Slurm "
                         "(--variant cuda asks for --gres gpu:1)")
    if req.engine == "slurm" and req.variant and "," in req.variant:
        raise BenchError(f"--variant {req.variant}: per-image variants are for runs on this host; with --engine "
                         "slurm submit one bench per variant (e.g. --variant cpu --model IMAGE/MODEL)")
    if req.images_dir is not None and not req.images_dir.is_dir():
        raise BenchError(f"--images-dir {req.images_dir}: no such folder; fill it with `zoobench images export`")
    return sbatch_tokens


@dataclass
class Setup:
    """What :func:`run_bench` has checked and read before it takes the results folder's lock."""

    profile: Any
    models: Any
    gpus: list[str]
    variants: ImageVariants
    images: dict[str, ImageSpec]  # images.yaml, read once
    results: Path
    data: Path | None
    data_mount: tuple[str, list[mounts.Bind]] | None
    evalset: EvalSet | None = None  # None: the default set
    runs: Path | None = None  # where the runs go: ``results``, or the set's sub-folder of it
    data_note: str | None = None  # the set's folder is not the whole set (counts against datasets.yaml)
    not_converted: list[Outcome] = field(default_factory=list)  # runtime models whose conversion failed


def prepare(req: BenchRequest) -> Setup:
    """Read the manifests, check GPUs and data (one line each); nothing is written yet."""
    prof = get_profile(req.profile, req.manifests)
    models_manifest = load_models(req.manifests)
    gpu_list = parse_gpus(req.gpus)
    lane_plan(gpu_list, req.jobs_per_gpu)  # --jobs-per-gpu needs --gpus: one line, before anything runs
    specs = image_manifest.load_manifest(req.manifests / "images.yaml")
    variants = parse_variants(req.variant, gpu_list, specs)
    check_gpus(gpu_list, bench_images(req, prof), variants, specs)
    if req.data is None and prof.data != "sample":
        raise BenchError(f"profile {req.profile!r} needs ImageNet: pass --data /path/to/imagenet/val (synset folders)")
    data_mount = None
    if req.data is not None:
        list_images(req.data)  # fails early, one line, on a missing or empty folder
        data_path, binds, dangling = mounts.data_binds(req.data)
        if dangling:
            raise BenchError(f"{len(dangling)} symlink(s) in {req.data} point nowhere (first: {req.data / dangling[0]}); "
                             "fix or remove them")
        data_mount = (data_path, binds)
    results = req.results or RESULTS / req.profile
    check_outside_data(req.data if req.data is not None else SAMPLE_DATA, results,
                       pixelcache.cache_root() if req.pixel_cache else None)
    datasets = load_datasets(req.manifests)
    evalset = bench_evalset(req, datasets)
    note = counts_note(datasets, evalset, req.data)
    runs = results / evalset.slot if evalset is not None and evalset.slot else results
    if evalset is not None and req.data is not None:
        check_outside_data(req.data, runs, None)
    return Setup(prof, models_manifest, gpu_list, variants, specs, results, req.data, data_mount, evalset, runs, note)


def bench_evalset(req: BenchRequest, manifest: DatasetsManifest) -> EvalSet | None:
    """The evaluation set of ``--dataset`` on ``--data``, checked; None for the default set (its runs keep the
    resume key and place of earlier releases)."""
    name, dataset = manifest.get(req.dataset)
    if req.data is None and name != manifest.default and not dataset.subset_images:
        raise BenchError(f"--dataset {name} needs --data DIR: the sample set is ImageNet val; prepare the set with "
                         f"`zoobench data prepare --dataset {name} --from ARCHIVE --out DIR`")
    evalset = evalset_for(manifest, name, req.data)
    return None if evalset.name == manifest.default and not evalset.generated else evalset


def run_bench(req: BenchRequest, console: Console) -> BenchRun:
    """Check everything, lock the results folder, plan, scan the data, run (locally or on Slurm)."""
    from ..results.labels import truth_for

    sbatch_tokens = check_request(req)
    setup = prepare(req)
    try:
        setup.runs.mkdir(parents=True, exist_ok=True)
        lock = runlock.ResultsLock(setup.runs, note=lambda m: console.print(f"note: {m}"))
        holder = lock.acquire()
    except OSError as exc:
        raise BenchError(results_folder_problem(setup.runs, exc)) from None
    try:
        slurm.refuse_if_live(setup.runs)  # an array of an earlier run may still write here
        client = engine_client(req.runtime, req.engine, console)
        data, (data_path, binds) = setup.data, setup.data_mount or (None, [])
        if data is None:
            data = sample_data()
            data_path, binds, _ = mounts.data_binds(data)
            console.print(f"data: embedded sample set at {data}")
        jobs, image_ids = plan_images(req, setup, client, console)
        if not jobs:  # every model was a runtime model whose conversion failed
            return BenchRun(BenchSummary(list(setup.not_converted)), setup.results, data, setup.runs, setup.evalset)
        scanned, digests = scan_data(data, jobs, setup.runs, console, setup.evalset)
        truth_for(scanned, req.labels)  # a file with no label is one line now, not after every model ran
        weights_binds = {}
        if req.plan.weights is not None and Path(req.plan.weights).is_file():
            weights_binds[req.plan.weights] = mounts.file_bind(Path(req.plan.weights), "--weights file")[1]
        if setup.data_note:
            console.print(f"note: {setup.data_note}", highlight=False, soft_wrap=True)
        on = f" on {setup.evalset.describe()}" if setup.evalset is not None else ""
        console.print(f"{len(jobs)} model(s){on}, results in {setup.runs}", highlight=False, soft_wrap=True)
        counts = {lim: len(scanned[:lim]) if lim else len(scanned) for lim in digests}
        pixels = (PixelSettings(pixelcache.cache_root(), lambda tag: imagefacts.pillow_version(client, tag))
                  if req.pixel_cache else None)
        bench = Bench(client, jobs, DataMount(data_path, binds, digests, counts), setup.runs, WEIGHTS_CACHE,
                      setup.gpus, console, run_id=holder.run_id, force=req.force, weights_binds=weights_binds,
                      jobs_per_gpu=req.jobs_per_gpu, pixels=pixels, image_ids=image_ids)
        if req.engine == "slurm":
            options = slurm.SlurmOptions(req.slurm.partition, req.slurm.account, req.slurm.time_limit,
                                         req.slurm.gres, req.slurm.max_parallel, sbatch_tokens, req.runtime,
                                         str(req.images_dir.resolve()) if req.images_dir else None)
            summary = slurm.run_array(bench, options, f"zoobench-{req.profile}", pixels.root if pixels else None,
                                      setup.variants.default == "cuda", console)
        else:
            summary = bench.run()
        summary.outcomes.extend(setup.not_converted)
    finally:
        lock.release()
    return BenchRun(summary, setup.results, data, setup.runs, setup.evalset)


def plan_images(req: BenchRequest, setup: Setup, client: Any, console: Console) -> tuple[list[Job], dict[str, str]]:
    """Load or build the profile's images (when there is an engine), plan the jobs, give each its model's
    facts (`predict facts`, cached per image tag) and get the image id of each chosen model's image. A
    job whose image runs a CPU-only variant gets no GPU."""
    tags = imagefacts.tags_of(setup.images, setup.variants.default, dict(setup.variants.overrides))
    needed = sorted(set(setup.profile.models))
    if req.images_dir is not None and client is not None:  # exported images first: then nothing to build
        from ..images import store

        for tag in store.load_missing(client, [tags[n] for n in needed], req.images_dir, strict=False):
            console.print(f"loaded {tag} from {req.images_dir}", highlight=False)
    def ensure(name: str) -> None:
        if req.build and client is not None:
            ensure_built(client, name, setup.variants.of(name), req.manifests, console, ROOT)

    for name in needed:
        ensure(name)
    conv = bench_conversions(client, setup.profile, setup.images, tags, req.plan.only, req.plan.weights, ensure,
                             lambda o: console.print(("[red]" if o.status == "failed" else "") + o.line(),
                                                     highlight=False, soft_wrap=True))
    served = (lambda img: conv.listing(img) if img in conv.runtimes else imagefacts.served_models(client, tags[img]))
    jobs = [conv.attach(j) for j in replace(req.plan, evalset=setup.evalset).plan(setup.profile, setup.models, tags,
                                                                                   served)]
    setup.not_converted = [Outcome(j, "failed", why) for j in jobs if (why := conv.failure(j))]
    jobs = [j for j in jobs if not conv.failure(j)]
    if setup.gpus:
        jobs = [j if runs_on_gpu(setup.variants.spec(setup.images, j.image)) else replace(j, cpu_only=True)
                for j in jobs]
    if not jobs and not setup.not_converted:
        raise BenchError(f"profile {req.profile!r} lists no models; add some in {req.manifests / 'profiles.yaml'}")
    if client is not None:  # parameters and multiply-adds, counted once per image, model and input size
        jobs = [j if j.conversion is not None else  # a runtime reads its model's facts from the conversion's record
                replace(j, facts=imagefacts.model_facts(client, j.tag, j.model, j.pixels.crop_size if j.pixels else
                                                        imagefacts.listed_crop(client, j.tag, j.model))) for j in jobs]
    return jobs, {tag: imagefacts.image_id(client, tag) for tag in sorted({j.tag for j in jobs})}
