"""``predict``: the one CLI every runner image answers (list, info, run, fetch).

Exit codes: 0 ok, 2 bad input (unknown model, bad data, bad option), 3 out of memory
(the orchestrator retries at half the batch size), 4 weights unavailable, 1 anything else.
Errors are one line on stderr starting with ``error:``; never a traceback.
"""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from .backend import UsageError, WeightsUnavailable
from .classsets import restrict
from .clitools import run_app
from .dataset import DataError, set_digest
from .integrity import StateChanged, determinism_record, parameters_record, state_of
from .loader import default_workers, iter_batches
from .outputs import PREDICTIONS_FILE, RUN_FILE, SCHEMA_VERSION, softmax_topk, write_json, write_predictions
from .pixelcache import PixelCache
from .pixelcache import build as build_pixel_cache
from .preprocessing import Preprocessing
from .facts import facts_for
from .export import export_cmd
from .runtime import (BACKEND_IMPORT_S, EXIT_FAILED, EXIT_OOM, EXIT_USAGE, EXIT_WEIGHTS, PRECISIONS,  # noqa: F401
                      PROGRESS_EVERY_S, PROGRESS_PREFIX, Predictor, RunFailed, UserError, check_weights_choice,
                      check_device_and_precision, class_subset, configure_mode, configure_precision, environment, fail,
                      find_model, generated_record,
                      is_out_of_memory, load_backend, loaded_weights_file, parse_overrides, report_progress,
                      select_images, weights_record)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="zoobench runner contract: one predict CLI in every framework image.",
)


@app.command("list")
def list_models() -> None:
    """Print a JSON array of the models this image serves, with preprocessing and weights."""
    backend = load_backend()
    print(json.dumps([{"framework": backend.framework, **s.to_dict()} for s in backend.models()], indent=2))


@app.command("info")
def info() -> None:
    """Print a JSON object describing the framework, versions, CUDA/cuDNN, GPUs and image."""
    print(json.dumps(environment(load_backend()), indent=2, sort_keys=True))


@app.command("fetch")
def fetch(
    model: str = typer.Option(..., "--model", help="model name from `predict list`"),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet | imagenet:VARIANT"),
) -> None:
    """Download a model's pretrained weights into the weights cache (needs network)."""
    backend = load_backend()
    spec = find_model(backend, model)
    if not weights.startswith("imagenet"):
        fail(f"--weights {weights}: only imagenet[:VARIANT] weights can be fetched")
    if spec.weights_bundled:
        print(json.dumps({"model": spec.name, "weights": spec.weights, "status": "bundled", "cached_at": None}))
        return
    started = time.time()
    try:
        where = backend.fetch_weights(spec, weights)
    except WeightsUnavailable as exc:
        fail(str(exc), EXIT_WEIGHTS)
    except OSError as exc:  # urllib's URLError and socket errors: no network, or the server refused
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fail(f"{spec.name}: download failed ({first}); `predict fetch` needs network", EXIT_WEIGHTS)
    try:  # a download writes the file now; a cache hit leaves an older file alone
        status = "fetched" if os.stat(where).st_mtime >= started - 1 else "cached"
    except OSError:
        status = "fetched"
    print(json.dumps({"model": spec.name, "weights": spec.weights, "status": status, "cached_at": where}))


@app.command("run")
def run(
    model: str = typer.Option(..., "--model", help="model name from `predict list`"),
    data: Path = typer.Option(..., "--data", help="folder of images (any depth)"),
    out: Path = typer.Option(..., "--out", help="folder for predictions.npz and run.json"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet | imagenet:VARIANT | random | PATH"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="first N images only"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    topk: int = typer.Option(5, "--topk", min=5),
    save_logits: bool = typer.Option(False, "--save-logits", help="also store the logits"),
    logits_dtype: str = typer.Option("float16", "--logits-dtype", help="float16 (compact) | float32 (exact)"),
    preprocess_json: Optional[str] = typer.Option(None, "--preprocess", help="JSON overrides of the preprocessing"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="decode threads"),
    pixels: Optional[Path] = typer.Option(None, "--pixels", help="a pixel cache folder (predict cache) to read the crops from"),
    normalise: str = typer.Option("device", "--normalise", help="device (uint8 to the backend) | host (float32 numpy)"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (deterministic) | tf32 | bf16"),
    classes: Optional[str] = typer.Option(None, "--classes", help="imagenet-r | imagenet-a | FILE (wnids or class "
                                          "indices): logits restricted to these classes before softmax and top-k"),
    subset_images: bool = typer.Option(False, "--subset-images", help="read only the images of the --classes "
                                       "classes (their wnid folders): the clean reference of a 200-class set"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="the evaluation set's name, recorded in run.json"),
    mode: str = typer.Option("default", "--mode", help="execution mode: default, or one the backend offers "
                             "(`predict info` modes: channels-last, compile, jit, hybridize...)"),
    facts: Optional[str] = typer.Option(None, "--facts", help="the model's facts as `predict facts` printed them "
                                        "(JSON; the orchestrator caches them per image and model); default: counted now"),
) -> None:
    """Predict every image below --data; write predictions.npz and run.json atomically."""
    check_device_and_precision(device, precision)
    if logits_dtype not in ("float16", "float32"):
        fail(f"--logits-dtype {logits_dtype!r}: use float16 or float32")
    backend = load_backend()
    spec = find_model(backend, model)
    base = backend.preprocessing_for(spec, weights) if hasattr(backend, "preprocessing_for") else spec.preprocessing
    try:
        prep = base.override(parse_overrides(preprocess_json))
    except (ValueError, TypeError) as exc:
        fail(f"--preprocess: {exc}")
    subset = class_subset(classes, topk)
    paths = select_images(data, limit, subset, subset_images)
    cache = PixelCache.open(pixels, prep, paths) if pixels is not None else None
    check_weights_choice(weights)
    used_device = backend.resolve_device(device)
    precision_settings = configure_precision(backend, precision, used_device)
    mode_settings = configure_mode(backend, mode, used_device)

    t0 = time.perf_counter()
    net = backend.load(spec, weights, used_device)
    t_load = time.perf_counter() - t0
    record = weights_record(weights, spec, loaded_weights_file(backend, spec, weights))
    model_facts = facts_for(backend, net, spec, prep.crop_size, facts)
    predictor = Predictor(backend, net, prep, normalise)

    t0 = time.perf_counter()
    predictor(np.zeros((min(batch_size, len(paths)), prep.crop_size, prep.crop_size, 3), np.uint8))
    t_warm = time.perf_counter() - t0
    state_before = state_of(backend, net)  # after the warm-up: lazily built layers exist by now

    all_logits: list[np.ndarray] = []  # kept only with --save-logits: 4 kB an image (15 GB for all of ImageNet-C)
    all_indices, all_scores, digests, compute = [], [], [], 0.0
    n_workers = workers or default_workers()
    batches = (cache.iter_batches(paths, batch_size) if cache is not None
               else iter_batches(data, paths, prep, batch_size, workers=n_workers))
    t0 = last_report = time.perf_counter()
    for batch in batches:
        tc = time.perf_counter()
        logits = predictor(batch.pixels)
        compute += time.perf_counter() - tc
        if logits.shape != (len(batch.paths), spec.num_classes):
            fail(f"{spec.name}: model returned shape {logits.shape}, expected ({len(batch.paths)}, {spec.num_classes})", 1)
        if not np.isfinite(logits).all():
            fail(f"{spec.name}: non-finite logits (NaN/inf) from {weights} weights; the weights are broken", 1)
        top_indices, top_scores = softmax_topk(restrict(logits, subset), topk)
        all_indices.append(top_indices)
        all_scores.append(top_scores)
        if save_logits:
            all_logits.append(logits)
        digests.extend(batch.sha256)
        now = time.perf_counter()
        if now - last_report >= PROGRESS_EVERY_S or len(digests) == len(paths):
            report_progress(len(digests), len(paths), len(digests) / (now - t0))
            last_report = now
    t_infer = time.perf_counter() - t0

    parameters = parameters_record(state_before, state_of(backend, net), backend.framework)
    indices, scores = np.concatenate(all_indices), np.concatenate(all_scores)
    logits = np.concatenate(all_logits) if save_logits else None
    write_predictions(out / PREDICTIONS_FILE, paths, indices, scores, logits, logits_dtype)
    env = environment(backend)
    write_json(
        out / RUN_FILE,
        {
            "schema_version": SCHEMA_VERSION,
            "status": "ok",
            "framework": backend.framework,
            "framework_version": env["framework_version"],
            "model": spec.name,
            "dataset": dataset,
            "classes": subset.record() if subset is not None else None,
            "weights": record,
            "preprocessing": prep.to_dict(),
            "precision": precision,
            "precision_settings": precision_settings,
            "mode": mode,
            "mode_settings": mode_settings,
            "model_facts": model_facts,
            "converted": backend.converted_record(net) if hasattr(backend, "converted_record") else None,
            "normalise": predictor.where,
            "pixel_cache": ({"folder": str(pixels), "created": cache.index.get("created"),
                             "pillow": cache.index.get("pillow"), "digest": cache.digest,
                             "verified_chunks": len(cache.verified)} if cache is not None else None),
            "device": used_device,
            "batch_size": batch_size,
            "topk": topk,
            "n_images": len(paths),
            "images_per_second": len(paths) / t_infer if t_infer > 0 else None,
            "compute_images_per_second": len(paths) / compute if compute > 0 else None,
            "seconds": {"import": BACKEND_IMPORT_S[0] if BACKEND_IMPORT_S else None, "load": t_load,
                        "warmup": t_warm, "inference": t_infer, "compute": compute,
                        "input_wait": max(t_infer - compute, 0.0)},
            "decode_workers": n_workers,
            "parameters": parameters if parameters is not None else {
                "unchanged": None, "why": f"the {backend.framework} backend has no state_arrays"},
            "determinism": determinism_record(paths, indices, scores, env.get("deterministic"), precision),
            "data": {"root": str(data), "n_images": len(paths), "limit": limit, "digest": set_digest(zip(paths, digests)),
                     "subset_images": subset_images, "generated": generated_record(data)},
            "env": env,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    tag = " (RANDOM WEIGHTS)" if record["kind"] == "random" else ""
    tag += f" [{precision}]" if precision != "fp32" else ""
    print(f"{backend.framework} {spec.name}{tag}: {len(paths)} images, {len(paths) / t_infer:.1f} img/s -> {out}")


@app.command("cache")
def cache_cmd(
    data: Path = typer.Option(..., "--data", help="folder of images (any depth)"),
    out: Path = typer.Option(..., "--out", help="folder for pixels.npy and index.json"),
    resize_size: int = typer.Option(..., "--resize-size", min=1),
    crop_size: int = typer.Option(..., "--crop-size", min=1),
    interpolation: str = typer.Option("bilinear", "--interpolation"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="first N images only"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="decode threads"),
    classes: Optional[str] = typer.Option(None, "--classes", help="with --subset-images: as for `predict run`"),
    subset_images: bool = typer.Option(False, "--subset-images", help="only the images of the --classes classes"),
) -> None:
    """Decode every image once into a pixel cache (uint8 crops) that `predict run --pixels` reads."""
    try:
        prep = Preprocessing(crop_size=crop_size, resize_size=resize_size, interpolation=interpolation)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(str(exc))
    paths = select_images(data, limit, class_subset(classes, 1) if classes else None, subset_images)
    last = [0.0]

    def progress(done: int, total: int, ips: float) -> None:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S or done == total:
            report_progress(done, total, ips)
            last[0] = now

    index = build_pixel_cache(data, paths, prep, out, workers=workers or default_workers(), on_progress=progress)
    size = (out / "pixels.npy").stat().st_size
    print(f"pixel cache {prep.pixel_config()}: {index['n_images']} images, {size / 1e6:.1f} MB, "
          f"{index['n_images'] / max(index['seconds'], 1e-9):.1f} img/s -> {out}")


from .benchmark import bench_cmd  # noqa: E402 - each in a module of its own
from .facts import facts_cmd  # noqa: E402

app.command("facts")(facts_cmd)
app.command("bench")(bench_cmd)
app.command("export")(export_cmd)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure is one ``error:`` line and an exit code."""

    def classify(exc: BaseException) -> tuple[str, int] | None:
        if is_out_of_memory(exc):
            return f"out of memory ({type(exc).__name__}); retry with a smaller --batch-size", EXIT_OOM
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return f"no space left on device writing {exc.filename or 'the output'}; free space and run again", EXIT_FAILED
        return None

    run_app(
        app,
        argv,
        {UserError: EXIT_USAGE, DataError: EXIT_USAGE, UsageError: EXIT_USAGE, WeightsUnavailable: EXIT_WEIGHTS,
         RunFailed: EXIT_FAILED, StateChanged: EXIT_FAILED},
        classify,
        interrupted="interrupted; no output was written",
    )


if __name__ == "__main__":
    main()
