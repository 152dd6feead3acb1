"""``predict export`` for Keras 3: ``keras.Model.export(path, format="onnx")``, one ``model.onnx`` taking
NHWC float32 ``[batch, H, W, 3]`` (a free batch axis; the Keras layout, kept), with the logits as its
one output. What Keras hands the work to depends on the back end (``KERAS_BACKEND``):

* ``torch`` (the keras-torch image): ``torch.onnx.export``, the TorchScript exporter (Keras picks it for
  a dynamic batch axis), which needs the ``onnx`` package;
* ``jax`` (keras-jax): ``jax2onnx``, when that package is installed;
* ``tensorflow``: ``tf2onnx.convert.from_function``, when tf2onnx (and onnx) are installed.

A back end whose exporter package is missing is refused in one line (exit 2) naming what works
instead. The names of the graph's input and output are read back from the written file
(:func:`zoobench_contract.export.onnx_signature`): each exporter chooses its own.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import keras

from zoobench_contract.backend import ModelSpec, UsageError
from zoobench_contract.export import ExportInfo, onnx_signature, optional_version

MODEL_FILE = "model.onnx"
INPUT = "input"
NEEDS = {"tensorflow": ("tf2onnx", "onnx"), "jax": ("jax2onnx", "onnx"), "torch": ("onnx",)}
EXPORTER = {"tensorflow": "tf2onnx.convert.from_function", "jax": "jax2onnx.to_onnx",
            "torch": "torch.onnx.export (TorchScript, dynamo=False)"}
VERSION_OF = {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "torch"}


def missing_packages(backend: str) -> list[str]:
    return [name for name in NEEDS.get(backend, ()) if importlib.util.find_spec(name) is None]


def check_exportable(backend: str, fmt: str) -> None:
    """UsageError (exit 2, one line) when this back end cannot write ``fmt`` in this image."""
    if fmt != "onnx":
        raise UsageError(f"--format {fmt}: the keras backend exports onnx only")
    if backend not in NEEDS:
        raise UsageError(f"Keras on {backend} cannot export to ONNX (Keras exports on tensorflow, jax and torch); "
                         "use `--from keras-torch`")
    missing = missing_packages(backend)
    if missing:
        instead = ("rebuild the image with onnx in its lock" if backend == "torch" else
                   "use `--from keras-torch` (Keras on PyTorch, exported by torch.onnx)")
        raise UsageError(f"Keras on {backend}: its ONNX exporter ({EXPORTER[backend]}) needs "
                         f"{' and '.join(missing)}, which this image does not install; {instead}")


def export_model(model: Any, spec: ModelSpec, out_dir: Path, fmt: str, opset: int, input_size: int) -> ExportInfo:
    """Write ``out_dir/model.onnx`` of the loaded Keras model (``LoadedModel.model``) at ``input_size`` px."""
    backend = keras.backend.backend()
    check_exportable(backend, fmt)
    net = getattr(model, "model", model)
    signature = [keras.InputSpec(shape=(None, input_size, input_size, 3), dtype="float32", name=INPUT)]
    path = out_dir / MODEL_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch: "legacy TorchScript-based ONNX export"
        warnings.simplefilter("ignore", FutureWarning)  # keras' numpy 2 patch of tf2onnx (np.object)
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python")  # torch: H, W are fixed
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # torch: a strided Slice
        net.export(str(path), format="onnx", input_signature=signature, opset_version=opset, verbose=False)
    sig = onnx_signature(path)
    if len(sig.inputs) != 1 or len(sig.outputs) != 1:
        raise RuntimeError(f"the exported graph has {len(sig.inputs)} inputs and {len(sig.outputs)} outputs, "
                           "expected one of each")
    options = {"keras_backend": backend, "keras": keras.__version__, "call": "keras.Model.export(format='onnx')",
               "input_signature": [[None, input_size, input_size, 3]], "onnx": optional_version("onnx")}
    return ExportInfo(f"keras.Model.export -> {EXPORTER[backend]}", optional_version(VERSION_OF[backend]) or "?",
                      opset, [MODEL_FILE], sig.inputs[0].name, "NHWC", sig.outputs[0].name, options)
