"""Converted models as a deployment runtime's backend sees them: the records ``zoobench convert``
wrote (``convert.json``) below :data:`CONVERTED_MOUNT`, checked file by file (sha256) before use,
listed as ``SOURCE.MODEL`` with the source model's preprocessing. STUB: the runtimes helper fills it.
"""
from __future__ import annotations

CONVERTED_MOUNT = "/converted"  # where the orchestrator mounts the conversions cache, read-only
RECORD_FILE = "convert.json"  # written by the orchestrator beside the files of one conversion
EXPORT_FILE = "export.json"  # written by `predict export` in the source image
PROBE_FILE = "probe.npz"  # the fixed probe batch (input NHWC float32, normalised) and the source's logits


def weights_dirname(choice: str) -> str:
    """The folder of one weights choice below a converted model (``imagenet:V1`` -> ``imagenet@V1``)."""
    return choice.replace(":", "@")
