"""Each option shared by several commands, typed and documented once (``zoobench run`` and ``k8s
render`` take the same planning options; a new one is defined here and in
:class:`orchestrator.bench.plan.PlanOptions`)."""
from __future__ import annotations

import typer

from ..bench import pixelcache
from ..paths import MANIFEST_DIR


def profile(default: str | None = None) -> typer.models.OptionInfo:
    """``--profile/-p``; ``default`` None makes it required."""
    return typer.Option(... if default is None else default, "--profile", "-p",
                        help="bench profile from manifests/profiles.yaml")


Manifests = typer.Option(MANIFEST_DIR, "--manifests", help="folder of YAML manifests")
Mixed = typer.Option(False, "--mixed-precision", help="rank runs of different precisions together")
Labels = typer.Option(None, "--labels", help="real (the ReaL labels), or a CSV filename,wnid "
                      "(default: synset folder names)")
CacheDir = typer.Option(None, "--cache-dir", help=f"pixel cache folder (default ${pixelcache.ROOT_ENV} or .cache/pixels)")
Variant = typer.Option(None, "--variant", help="image variant (cpu|cuda), then IMAGE=VARIANT overrides (zoobench run: "
                       "e.g. cuda,mxnet=cpu runs mxnet's models on the CPU); default cuda with --gpus, else cpu")
DataSets = typer.Option(None, "--data", help="the data folder (synset sub-folders), or NAME=DIR per evaluation set "
                        "of the profile (repeatable)")
Dataset = typer.Option(None, "--dataset", help="evaluation set (manifests/datasets.yaml): imagenet-val (default) | "
                       "imagenet-v2 | imagenet-r | imagenet-a | imagenet-sketch | imagenet-c | imagenet-r-clean | "
                       "imagenet-a-clean")
Model = typer.Option(None, "--model", help="only these models (repeatable)")
BatchSize = typer.Option(None, "--batch-size", min=1)
Limit = typer.Option(None, "--limit", min=1, help="first N images only")
Precision = typer.Option(None, "--precision", help="override the profile: fp32|tf32|bf16")
Mode = typer.Option("default", "--mode", help="execution mode: default | channels-last | compile (pytorch) | jit "
                    "(keras, XLA) | imperative (mxnet); recorded, part of the resume key, ranked apart")
Runtime = typer.Option("docker", "--runtime", help="docker | podman")


def weights(help_text: str = "override the profile: imagenet|random|PATH") -> typer.models.OptionInfo:
    """``--weights`` (a file is a local run's only: a rendered pod cannot see it)."""
    return typer.Option(None, "--weights", help=help_text)
