"""What GPUs a framework build can run on: the CUDA/cuDNN it was built with and the architectures it
carries binary kernels (``sm_XY``) or PTX (``compute_XY``, JIT-compiled by newer drivers) for.

``predict info`` reports it as ``gpu_build`` (:meth:`GpuBuild.to_dict`). A backend reads it from the
framework where the framework can tell; otherwise the image's manifest declares it and the build bakes
it into :data:`ARCHS_ENV` (``source: manifest``). manifests/images.yaml declares the same for each cuda
variant so the orchestrator can match images to GPUs before anything is built.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable

ARCHS_ENV = "ZOOBENCH_GPU_ARCHS"  # "sm_50 sm_60 compute_86": set in the image from images.yaml gpu.archs/ptx
SM = re.compile(r"^sm_(\d)(\d+)[a-z]?$")
PTX = re.compile(r"^compute_(\d)(\d+)[a-z]?$")


def capability(arch: str) -> tuple[int, int]:
    """``sm_86``/``compute_86`` -> (8, 6); ``sm_100`` -> (10, 0); ``sm_90a`` -> (9, 0)."""
    match = SM.match(arch) or PTX.match(arch)
    if not match:
        raise ValueError(f"{arch!r} is not an architecture; write sm_XY (kernels) or compute_XY (PTX)")
    digits = match.group(1) + match.group(2)
    return int(digits[:-1]), int(digits[-1])


@dataclass(frozen=True)
class GpuBuild:
    """A framework's CUDA build. ``cuda`` None: a CPU-only build (``archs``/``ptx`` then empty)."""

    cuda: str | None
    cudnn: str | None = None
    archs: tuple[str, ...] = ()
    ptx: tuple[str, ...] = ()
    source: str = "framework"  # "framework" (read from it) or "manifest" (declared for the image)

    @classmethod
    def from_arch_list(cls, cuda: str | None, cudnn: str | None, arch_list: Iterable[str],
                       source: str = "framework") -> "GpuBuild":
        """From a mixed list (torch's ``sm_80 ... compute_120``, TF's ``sm_60 compute_90``), sorted."""
        items = [a.strip() for a in arch_list if a and a.strip()]
        order = lambda a: capability(a)  # noqa: E731
        return cls(cuda, cudnn, tuple(sorted({a for a in items if SM.match(a)}, key=order)),
                   tuple(sorted({a for a in items if PTX.match(a)}, key=order)), source)

    @classmethod
    def from_env(cls, cuda: str | None, cudnn: str | None = None) -> "GpuBuild":
        """What the manifest baked into :data:`ARCHS_ENV` (for a framework that cannot tell)."""
        return cls.from_arch_list(cuda, cudnn, os.environ.get(ARCHS_ENV, "").split(), source="manifest")

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["archs"], record["ptx"] = list(self.archs), list(self.ptx)
        return record



def torch_build(torch: Any) -> GpuBuild:
    """The CUDA build of the ``torch`` module given (the pytorch runner's and Keras' torch back end's), read
    without a GPU: ``torch.version.cuda``, the cuDNN it was compiled against and ``torch._C._cuda_getArchFlags()``
    (what ``torch.cuda.get_arch_list()`` splits). A CPU-only torch: cuda None, no architectures. The module is
    passed in: the contract imports no framework."""
    cuda = torch.version.cuda
    if not cuda:
        return GpuBuild(None)
    compiled = getattr(getattr(torch._C, "_cudnn", None), "getCompileVersion", None)
    try:
        cudnn = ".".join(str(part) for part in compiled()) if compiled else None
    except Exception:  # noqa: BLE001 - a build without cuDNN: the record says so (None)
        cudnn = None
    flags = getattr(torch._C, "_cuda_getArchFlags", None)
    archs = (flags() or "").split() if flags else []
    return GpuBuild.from_arch_list(cuda, cudnn, archs)
