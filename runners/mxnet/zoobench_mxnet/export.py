"""``predict export`` for MXNet: the hybridized Gluon network (model zoo or the Lite0 port), exported as
symbol + parameters (``HybridBlock.export``, into a temporary folder) and converted by MXNet's own
``mx.onnx.export_model`` (mx2onnx) into one ``model.onnx``: NCHW float32 input ``data`` of shape
``[batch, 3, H, W]`` with a free batch axis (``dynamic=True``), the logits as its one output; the
weights, which mx2onnx also lists as graph inputs, are taken out of the inputs.

mx2onnx (MXNet 1.9.1) needs the ``onnx`` package with ``onnx.mapping`` (removed after onnx 1.15; the
image installs 1.15.0, which also supports numpy 1.23) and always targets the newest opset of the
installed onnx (``onnx.defs.onnx_opset_version()``, 20 for onnx 1.15); to write the opset asked for,
that function (and the opset of the checker mx2onnx runs) answers ``--opset`` while the exporter runs:
its translators are written for opsets 12 and 13, so a graph checked against onnx 1.15's opset 20 fails
(ReduceMean's ``axes`` became an input in opset 18); ``onnx.checker`` then validates the written model
against the opset it declares.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator

import mxnet as mx
import numpy as np

from zoobench_contract.backend import ModelSpec, UsageError
from zoobench_contract.export import ExportInfo, onnx_signature, optional_version

MODEL_FILE = "model.onnx"
MIN_OPSET = 12  # mx2onnx's oldest translators


@contextlib.contextmanager
def onnx_opset(opset: int) -> Iterator[None]:
    """``onnx.defs.onnx_opset_version()`` answers ``opset`` meanwhile (mx2onnx and onnx.helper.make_model
    read it for the opset they convert to and declare), and the checker mx2onnx runs on the graph
    (``onnx.checker.DEFAULT_CONTEXT``) checks against that opset too, not against onnx's newest."""
    import onnx.checker
    import onnx.defs

    real, context = onnx.defs.onnx_opset_version, onnx.checker.DEFAULT_CONTEXT.opset_imports
    onnx.defs.onnx_opset_version = lambda: opset
    onnx.checker.DEFAULT_CONTEXT.opset_imports = {"": opset}
    try:
        yield
    finally:
        onnx.defs.onnx_opset_version = real
        onnx.checker.DEFAULT_CONTEXT.opset_imports = context


def initializers_out_of_inputs(path: Path) -> int:
    """mx2onnx lists every weight among the graph's inputs too (IR 3 style), so a runtime would treat
    them as overridable and not fold them (ONNX Runtime warns once per weight); drop them from the
    inputs, as onnxruntime's remove_initializer_from_input tool does. Returns how many were dropped."""
    import onnx

    proto = onnx.load(str(path))
    weights = {t.name for t in proto.graph.initializer}
    keep = [v for v in proto.graph.input if v.name not in weights]
    dropped = len(proto.graph.input) - len(keep)
    if dropped:
        del proto.graph.input[:]
        proto.graph.input.extend(keep)
        onnx.save(proto, str(path))
    return dropped


def check_exportable(fmt: str, opset: int) -> None:
    if fmt != "onnx":
        raise UsageError(f"--format {fmt}: the mxnet backend exports onnx only")
    if opset < MIN_OPSET:
        raise UsageError(f"--opset {opset}: MXNet's ONNX exporter (mx2onnx) writes opset {MIN_OPSET} or newer")
    try:
        import onnx  # noqa: F401
        from onnx import mapping  # noqa: F401 - what mx2onnx imports
    except ImportError:
        raise UsageError("MXNet's ONNX exporter (mx.onnx.export_model) needs the onnx package with onnx.mapping "
                         "(onnx <= 1.15), which this image does not install; export from the pytorch image "
                         "instead") from None


def export_model(model: Any, spec: ModelSpec, out_dir: Path, fmt: str, opset: int, input_size: int) -> ExportInfo:
    """Write ``out_dir/model.onnx`` of the loaded model's network for ``input_size`` px."""
    check_exportable(fmt, opset)
    net = model.net_for(input_size)
    net.hybridize(static_alloc=True, static_shape=True)  # already so by default; export needs the cached graph
    net(mx.nd.zeros((1, 3, input_size, input_size), ctx=model.ctx))
    options: dict[str, Any] = {"hybridize": True, "dynamic": True, "dynamic_input_shapes": [[None, 3, input_size,
                               input_size]], "in_shapes": [[1, 3, input_size, input_size]], "in_types": "float32",
                               "opset_by": "onnx.defs.onnx_opset_version and onnx.checker.DEFAULT_CONTEXT set to --opset "
                                           "during the export",
                               "onnx": optional_version("onnx")}
    path = out_dir / MODEL_FILE
    level = logging.getLogger().level
    with tempfile.TemporaryDirectory(prefix="zoobench-mx-export-") as tmp, onnx_opset(opset):
        prefix = str(Path(tmp) / spec.name)
        net.export(prefix, epoch=0)
        logging.getLogger().setLevel(logging.WARNING)  # mx2onnx logs every node at INFO
        try:
            mx.onnx.export_model(f"{prefix}-symbol.json", f"{prefix}-0000.params",
                                 in_shapes=[(1, 3, input_size, input_size)], in_types=[np.float32],
                                 onnx_file_path=str(path), dynamic=True,
                                 dynamic_input_shapes=[(None, 3, input_size, input_size)])
        finally:
            logging.getLogger().setLevel(level)
    options["initializers_removed_from_inputs"] = initializers_out_of_inputs(path)
    sig = onnx_signature(path)
    if len(sig.inputs) != 1 or len(sig.outputs) != 1:
        raise RuntimeError(f"the exported graph has {len(sig.inputs)} inputs and {len(sig.outputs)} outputs, "
                           "expected one of each")
    return ExportInfo("mx.onnx.export_model", mx.__version__, opset, [MODEL_FILE], sig.inputs[0].name, "NCHW",
                      sig.outputs[0].name, options)
