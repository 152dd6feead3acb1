"""``zoobench k8s render``: a profile as Kubernetes Indexed Jobs (rendered and schema-checked, not run)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..bench.evalset import evalset_offline
from ..bench.imagefacts import image_tags
from ..bench.plan import PlanOptions, check_precision
from ..bench.variants import default_variant
from ..errors import BenchError
from ..images.manifest import load_manifest
from ..manifests import get_profile, load_models
from ..paths import K8S
from . import options
from .output import console, out

k8s_app = typer.Typer(no_args_is_help=True, help="Render a bench for Kubernetes: one Indexed Job per image "
                      "(rendered and schema-checked here, not run).")


@k8s_app.command("render")
def k8s_render(
    profile: str = options.profile(),
    data_claim: str = typer.Option(..., "--data-claim", help="PersistentVolumeClaim holding the validation images"),
    results_claim: str = typer.Option(..., "--results-claim", help="PersistentVolumeClaim the results go to"),
    weights_claim: Optional[str] = typer.Option(None, "--weights-claim",
                                                help="PersistentVolumeClaim holding .cache/weights (read-only)"),
    variant: Optional[str] = options.Variant,
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
    model: Optional[list[str]] = options.Model,
    batch_size: Optional[int] = options.BatchSize,
    weights: Optional[str] = options.weights("override the profile: imagenet|imagenet:VARIANT|random"),
    limit: Optional[int] = options.Limit,
    precision: Optional[str] = options.Precision,
    dataset: Optional[str] = options.Dataset,
    manifests: Path = options.Manifests,
) -> None:
    """Write one batch/v1 Indexed Job per image of a profile (one completion index per model) and a README."""
    from ..engines import k8s, k8s_inputs

    evalset = evalset_offline(manifests, dataset)  # None: the default set
    target = k8s.Target(
        profile=profile,
        data_claim=k8s_inputs.check_name(data_claim, "--data-claim"),
        results_claim=k8s_inputs.check_name(results_claim, "--results-claim"),
        weights_claim=k8s_inputs.check_name(weights_claim, "--weights-claim") if weights_claim is not None else None,
        variant=k8s_inputs.check_variant(variant or default_variant(gpus)),
        parallelism=gpus or 1,
        namespace=k8s_inputs.check_name(namespace, "--namespace", label=True) if namespace is not None else None,
        registry=k8s_inputs.check_registry(image_registry),
        data_path=k8s_inputs.check_data_path(data_path),
        slot=evalset.slot if evalset is not None else None,
    )
    k8s_inputs.check_weights(weights)
    if precision is not None:
        check_precision(precision)
    note = lambda m: console.print(f"note: {m}", highlight=False, soft_wrap=True)  # noqa: E731
    prof = without_runtimes(get_profile(profile, manifests), manifests, note)
    models_manifest = load_models(manifests)
    tags = image_tags(manifests, target.variant)
    served = k8s_inputs.served_offline(prof, tags, k8s_inputs.parse_models_from(models_from, list(prof.models)), note)
    plan = PlanOptions(model, batch_size, weights, limit, precision, evalset)
    jobs = plan.plan(prof, models_manifest, tags, served)
    if not jobs:
        raise BenchError(f"profile {profile!r} lists no models; add some in {manifests / 'profiles.yaml'}")
    rendered = k8s.render(jobs, target, note)
    folder = out_dir or K8S / profile
    for path in k8s.write(folder, rendered, target, sample=prof.data == "sample"):
        out.print(str(path), highlight=False, soft_wrap=True)
    console.print(f"{len(rendered)} Indexed Job(s), {len(jobs)} model(s), in {folder}: "
                  f"`kubectl apply -f {folder}`; {folder / k8s.README} says how to collect and rank the results",
                  highlight=False, soft_wrap=True)


def without_runtimes(prof: Any, manifests: Path, note: Callable[[str], None]) -> Any:
    """The profile without its runtime images (images.yaml ``reads:``): a pod cannot see the conversions cache
    yet, so their converted models run locally or on Slurm; each left-out image is one note."""
    specs = load_manifest(manifests / "images.yaml")
    left = sorted(i for i in prof.models if i in specs and specs[i].reads)
    for image in left:
        note(f"{image}: its converted models are not rendered (a pod cannot mount the conversions cache); bench "
             "them with `zoobench run` here or with --engine slurm")
    return prof.model_copy(update={"models": {i: m for i, m in prof.models.items() if i not in left}}) if left else prof
