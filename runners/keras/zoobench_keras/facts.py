"""Model facts of the keras backend: parameters by ``Model.count_params()`` and
``model.trainable_weights``, multiply-adds by a walk over the layers (nested models too), each layer's
count from its kernel's shape and its output (or input) shape at the run's input size.

A model built for one input size (every ``keras.applications`` model: ``include_top`` fixes it) is
rebuilt with random weights for another; one built for any size (EfficientNet-Lite0) is rebuilt at
the size, since its layers' shapes are unknown (None) until then.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import keras

PARAMS_COUNTER = ("keras Model.count_params() (every weight: batch-norm moving mean and variance included), "
                  "trainable: the sizes of model.trainable_weights")
MACS_COUNTER = "zoobench layer walk (Conv2D, DepthwiseConv2D, SeparableConv2D, Dense)"
CONVENTION = ("1 multiply-add = 1 MAC; the walk counts multiply-adds: convolution = output positions x output "
              "channels x input channels per group x kernel area; depthwise = output positions x channels x "
              "depth multiplier x kernel area; separable = its depthwise part + its 1x1 pointwise part; "
              "Dense = inputs x outputs at every position of its input; no conversion")


class Uncounted(Exception):
    """A layer holds a kernel the walk has no rule for: no total rather than a short one."""


def _size(shape: Any) -> int:
    return int(math.prod(int(d) for d in shape))


def _positions(shape: Any) -> int:
    """The spatial positions of an output (batch and channel axes dropped); unknown sizes are an error."""
    dims = tuple(shape)[1:-1]
    if any(d is None for d in dims):
        raise Uncounted(f"output shape {tuple(shape)} has unknown sizes")
    return _size(dims)


def _layer_macs(layer: Any) -> int:
    """One layer's multiply-adds (kernels' shapes read off the layer; channels-last outputs)."""
    from keras import layers as kl

    convolution = any(hasattr(layer, k) for k in ("kernel_size", "depthwise_kernel", "pointwise_kernel"))
    if convolution and getattr(layer, "data_format", "channels_last") != "channels_last":
        raise Uncounted(f"layer {layer.name} ({type(layer).__name__}) is channels_first")
    if isinstance(layer, kl.SeparableConv2D) or hasattr(layer, "pointwise_kernel"):
        positions = _positions(layer.output.shape)
        return positions * (_size(layer.depthwise_kernel.shape) + _size(layer.pointwise_kernel.shape))
    if isinstance(layer, kl.DepthwiseConv2D):  # kernel (kh, kw, C_in, multiplier); Keras 2 named it depthwise_kernel
        kernel = getattr(layer, "depthwise_kernel", None) or layer.kernel
        return _positions(layer.output.shape) * _size(kernel.shape)
    if isinstance(layer, (kl.Conv2DTranspose, getattr(kl, "Conv1DTranspose", ()), getattr(kl, "Conv3DTranspose", ()))):
        return _positions(layer.input.shape) * _size(layer.kernel.shape)  # every input pixel scatters the kernel
    if isinstance(layer, (kl.Conv1D, kl.Conv2D, kl.Conv3D)):
        return _positions(layer.output.shape) * _size(layer.kernel.shape)  # (*k, C_in / groups, C_out)
    if isinstance(layer, kl.Dense):
        return _positions(layer.output.shape) * _size(layer.kernel.shape)  # (in, out), at each position
    if any(getattr(w, "path", w.name).split("/")[-1].endswith("kernel") for w in layer.weights):
        raise Uncounted(f"layer {layer.name} ({type(layer).__name__}) has a kernel the walk does not count")
    return 0


def count_layers(model: Any) -> int:
    """Every layer's multiply-adds, nested models walked into."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_layers(layer)
            continue
        macs = _layer_macs(layer)
        if macs and len(getattr(layer, "_inbound_nodes", ())) > 1:  # .output is its first call's only
            raise Uncounted(f"layer {layer.name} ({type(layer).__name__}) is called "
                            f"{len(layer._inbound_nodes)} times; the walk counts one call per layer")
        total += macs
    return total


def at_size(loaded: Any, spec: Any, crop_size: int, rebuild: Callable[[Any, int], Any]) -> Any:
    """The Keras model with concrete shapes at ``crop_size``: the loaded one when it is built for it."""
    model = loaded.model
    if tuple(model.input_shape[1:3]) == (crop_size, crop_size):
        return model
    return rebuild(spec, crop_size)


def rebuild_model(spec: Any, crop_size: int) -> Any:
    """The architecture of ``spec`` with random weights at ``crop_size`` (weights do not change counts)."""
    if spec.name == "efficientnet_lite0":
        from .efficientnet_lite import build_efficientnet_lite0

        return build_efficientnet_lite0(input_size=crop_size)
    builder = getattr(keras.applications, spec.extra["keras_application"])
    return builder(weights=None, classifier_activation=None, input_shape=(crop_size, crop_size, 3))


def count_macs(loaded: Any, spec: Any, crop_size: int,
               rebuild: Callable[[Any, int], Any] = rebuild_model) -> dict[str, Any]:
    record: dict[str, Any] = {"value": None, "input_size": [crop_size, crop_size], "counter": MACS_COUNTER,
                              "convention": CONVENTION, "why": None}
    try:
        model = at_size(loaded, spec, crop_size, rebuild)
    except Exception as exc:  # noqa: BLE001 - e.g. a size the architecture refuses
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return {**record, "why": f"cannot build {spec.name} at {crop_size}x{crop_size} ({type(exc).__name__}: {text})"}
    try:
        return {**record, "value": count_layers(model)}
    except Uncounted as exc:
        return {**record, "why": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a layer the walk misreads: no total, the parameters still count
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return {**record, "why": f"the layer walk failed ({type(exc).__name__}: {text})"}


def model_facts(model: Any, spec: Any, crop_size: int) -> dict[str, Any]:
    """Parameters (of the loaded model) and multiply-adds at ``crop_size``; ``model`` is a LoadedModel."""
    net = model.model
    params = {"total": int(net.count_params()),
              "trainable": int(sum(_size(w.shape) for w in net.trainable_weights)), "counter": PARAMS_COUNTER}
    return {"params": params, "macs": count_macs(model, spec, crop_size), "schema": 1}
