"""Model facts of the mxnet backend: parameters from ``net.collect_params()``, multiply-adds from the
network's own symbolic graph (``net(mx.sym.var('data'))``), its shapes inferred at 1x3xHxW.

Gluon defers a parameter's shape until its first forward pass (random weights, no ``in_channels``);
such shapes are read off the graph's shape inference, whose arguments are the parameters by name.
"""
from __future__ import annotations

import json
import math
from typing import Any

import mxnet as mx

PARAMS_COUNTER = ("mxnet: sum of the sizes of net.collect_params() (batch-norm running mean and variance "
                  "included), trainable: grad_req != 'null'")
MACS_COUNTER = ("zoobench walk of the mxnet symbol net(mx.sym.var('data')) with infer_shape(data=(1, 3, H, W)): "
                "Convolution (num_group aware), Deconvolution, FullyConnected")
CONVENTION = ("1 multiply-add = 1 MAC; the walk counts multiply-adds: Convolution = output elements x input "
              "channels per group x kernel area (the weight's shape after its first axis); FullyConnected = "
              "output elements x input units; no conversion")
COUNTED = ("Convolution", "Deconvolution", "FullyConnected")
# ops with multiply-add work the walk has no rule for: their presence makes the total null
UNCOUNTED = ("dot", "batch_dot", "linalg_gemm", "linalg_gemm2", "RNN", "_contrib_interleaved_matmul_selfatt_qk",
             "_contrib_interleaved_matmul_selfatt_valatt", "_npi_matmul", "_npi_einsum", "einsum")


def symbol_of(net: Any) -> Any:
    """The network's graph as one symbol (its first output when there are several)."""
    sym = net(mx.sym.var("data"))
    if isinstance(sym, (list, tuple)):
        sym = sym[0]
    return sym


def graph_shapes(sym: Any, crop_size: int) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(every argument and auxiliary state -> its shape, every internal output -> its shape) at 1x3xHxW."""
    data = (1, 3, crop_size, crop_size)
    args, _, aux = sym.infer_shape(data=data)
    inputs = dict(zip(sym.list_arguments(), args))
    inputs.update(zip(sym.list_auxiliary_states(), aux))
    internals = sym.get_internals()
    _, outs, _ = internals.infer_shape(data=data)
    return inputs, dict(zip(internals.list_outputs(), outs))


def param_counts(net: Any, inputs: dict[str, tuple[int, ...]] | None) -> dict[str, Any]:
    """Sizes of ``collect_params()``; a deferred (unknown) shape is the graph's shape of that name."""
    total = trainable = 0
    for name, param in net.collect_params().items():
        shape = tuple(param.shape or ())
        if not shape or any(d == 0 for d in shape):
            if inputs is None or param.name not in inputs:
                raise ValueError(f"parameter {name} has no known shape {shape}")
            shape = tuple(inputs[param.name])
        size = int(math.prod(shape))
        total += size
        trainable += size if param.grad_req != "null" else 0
    return {"total": total, "trainable": trainable, "counter": PARAMS_COUNTER}


def graph_macs(sym: Any, inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, ...]]) -> int:
    """The multiply-adds of every Convolution, Deconvolution and FullyConnected node of ``sym``."""
    nodes = json.loads(sym.tojson())["nodes"]
    uncounted = sorted({n["op"] for n in nodes if n["op"] in UNCOUNTED})
    if uncounted:
        raise LookupError(f"the graph has {', '.join(uncounted)} nodes, which the walk does not count")
    total = 0
    for node in nodes:
        if node["op"] not in COUNTED:
            continue
        weight = nodes[node["inputs"][1][0]]["name"]
        w = inputs[weight]
        if node["op"] == "Deconvolution":  # weight (C_in, C_out / groups, *k): each input position scatters it
            data = nodes[node["inputs"][0][0]]
            source = data["name"] if data["op"] == "null" else f"{data['name']}_output"
            shape = inputs.get(source) or outputs[source]
            total += int(math.prod(shape[2:])) * int(math.prod(w))
            continue
        out = outputs[f"{node['name']}_output"]
        total += int(math.prod(out)) * int(math.prod(w[1:]))  # (C_out, C_in / groups, *k) or (out, in)
    return total


def model_facts(model: Any, spec: Any, crop_size: int) -> dict[str, Any]:
    """Parameters and multiply-adds at ``crop_size``; ``model`` is the backend's LoadedModel."""
    net = model.net_for(crop_size)
    macs: dict[str, Any] = {"value": None, "input_size": [crop_size, crop_size], "counter": MACS_COUNTER,
                            "convention": CONVENTION, "why": None}
    inputs = None
    try:
        sym = symbol_of(net)
        inputs, outputs = graph_shapes(sym, crop_size)
        macs["value"] = graph_macs(sym, inputs, outputs)
    except Exception as exc:  # noqa: BLE001 - a graph that cannot be traced: null with the reason
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        macs["why"] = f"no symbolic graph at {crop_size}x{crop_size} ({type(exc).__name__}: {text})"
    return {"params": param_counts(net, inputs), "macs": macs, "schema": 1}
