"""Where a run's model came from, read from its run.json: the conversion a runtime image served
(``converted``) and the Keras back end, so rankings can name a run ``onnxruntime 1.32.0 (pytorch resnet50)``
or ``keras 3.15.1 (jax 0.10.2)``."""
from __future__ import annotations

from typing import Any


def conversion_of(run: dict[str, Any]) -> dict[str, Any] | None:
    """run.json's ``converted`` record (a runtime image's run), or None for a framework's own run."""
    conv = run.get("converted")
    return conv if isinstance(conv, dict) else None


def source_run_name(run: dict[str, Any]) -> str | None:
    """The results-folder name of the converted model's source run: ``<source image>-<model>``."""
    source = (conversion_of(run) or {}).get("source") or {}
    image, model = source.get("image"), source.get("model")
    return f"{image}-{model}" if image and model else None


def platform_note(run: dict[str, Any]) -> str:
    """What a ranking adds to ``framework version``: the source of a converted run (``pytorch resnet50``),
    or the back end of Keras on JAX or PyTorch (``jax 0.10.2``); empty otherwise."""
    source = (conversion_of(run) or {}).get("source") or {}
    if source.get("image") and source.get("model"):
        return f"{source['image']} {source['model']}"
    env = run.get("env") if isinstance(run.get("env"), dict) else {}
    backend = env.get("keras_backend")
    if run.get("framework") == "keras" and backend and backend != "tensorflow":
        return f"{backend} {env.get('keras_backend_version') or ''}".strip()
    return ""


def architecture_key(run: dict[str, Any]) -> tuple[str, str]:
    """(framework, model) that names a run's architecture in manifests/architectures.yaml: a converted run's
    are its source's (onnxruntime serving pytorch's resnet50 is torchvision's ResNet-50)."""
    source = (conversion_of(run) or {}).get("source") or {}
    if source.get("framework") and source.get("model"):
        return str(source["framework"]).lower(), str(source["model"]).lower()
    return str(run.get("framework", "")).lower(), str(run.get("model", "")).lower()
