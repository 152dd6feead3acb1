"""The host's NVIDIA GPUs (one ``nvidia-smi`` reader) and whether a cuda image's build can serve each.

A build (:class:`zoobench_contract.gpubuild.GpuBuild`, from ``gpu:`` in manifests/images.yaml) serves a
GPU when it carries a kernel (cubin ``sm_XY``) the GPU can run or PTX (``compute_XY``) the driver can
JIT-compile for it, and the driver is new enough for the build's CUDA. ``zoobench doctor`` prints
:func:`can_serve` for every image and GPU; ``zoobench run --gpus`` refuses, before any build or
container, a bench that would start an image on a GPU it cannot serve (:func:`refusal`).
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from zoobench_contract.gpubuild import GpuBuild, capability

QUERY = "index,name,compute_cap,driver_version"
QUERY_OLD = "index,name,driver_version"  # nvidia-smi before R510 has no compute_cap field

# Minimum Linux driver for CUDA minor-version compatibility: a build of CUDA X.y runs on any driver of
# at least this for major X (NVIDIA, "CUDA Compatibility", Minor Version Compatibility table:
# https://docs.nvidia.com/deploy/cuda-compatibility/#minor-version-compatibility).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# The driver each toolkit release shipped with (CUDA Toolkit release notes, "CUDA Toolkit and
# Corresponding Driver Versions": https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/): PTX
# written by toolkit X.Y is JIT-compiled only by a driver at least this new (minor-version
# compatibility does not cover PTX: https://docs.nvidia.com/deploy/cuda-compatibility/#application-considerations-for-minor-version-compatibility).
TOOLKIT_DRIVER = {
    "11.0": "450.36.06", "11.1": "455.23", "11.2": "460.27.03", "11.3": "465.19.01", "11.4": "470.42.01",
    "11.5": "495.29.05", "11.6": "510.39.01", "11.7": "515.43.04", "11.8": "520.61.05",
    "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03", "12.3": "545.23.06", "12.4": "550.54.14",
    "12.5": "555.42.02", "12.6": "560.28.03", "12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06",
}


@dataclass(frozen=True)
class Gpu:
    """One GPU as ``nvidia-smi`` reports it; ``capability`` None when its driver cannot tell."""

    index: str
    name: str
    capability: tuple[int, int] | None
    driver: str

    @property
    def sm(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}" if self.capability else "compute capability unknown"

    def describe(self) -> str:
        return f"GPU {self.index} ({self.name}, {self.sm})"


def parse_capability(text: str) -> tuple[int, int] | None:
    major, _, minor = text.strip().partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def parse_smi(text: str, with_cap: bool = True) -> list[Gpu]:
    """Rows of ``nvidia-smi --query-gpu=QUERY --format=csv,noheader`` (a name may hold commas)."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < (4 if with_cap else 3) or not fields[0].isdigit():
            continue
        if with_cap:
            gpus.append(Gpu(fields[0], ", ".join(fields[1:-2]), parse_capability(fields[-2]), fields[-1]))
        else:
            gpus.append(Gpu(fields[0], ", ".join(fields[1:-1]), None, fields[-1]))
    return gpus


def host_gpus() -> list[Gpu]:
    """This host's NVIDIA GPUs; empty when there is no nvidia-smi, no driver or no GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    for query, with_cap in ((QUERY, True), (QUERY_OLD, False)):
        try:
            proc = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return []
        if proc.returncode == 0:
            return parse_smi(proc.stdout, with_cap)
    return []


def driver_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def describe_build(build: GpuBuild) -> str:
    """``CUDA 11.2, sm_50..sm_86, no PTX``: what a build carries, for a reason or a doctor line."""
    if build.cuda is None:
        return "a CPU-only build"
    archs = build.archs
    kernels = "no kernels" if not archs else archs[0] if len(archs) == 1 else f"{archs[0]}..{archs[-1]}"
    ptx = f"PTX {' '.join(build.ptx)}" if build.ptx else "no PTX"
    return f"CUDA {build.cuda}, {kernels}, {ptx}"


def image_label(image: str, variant: str | None, build: GpuBuild) -> str:
    """``image mxnet (cuda; CUDA 11.2, sm_50..sm_86, no PTX)``: how a reason names an image's build."""
    return f"image {image} ({variant + '; ' if variant else ''}{describe_build(build)})"


def _cubin_runs(arch: str, cap: tuple[int, int]) -> bool:
    """A cubin runs on the same major with an equal or higher minor; ``sm_90a`` only on exactly 9.0
    (NVIDIA, CUDA C++ Programming Guide, "Binary Compatibility" and "Feature Availability")."""
    major, minor = capability(arch)
    if arch.endswith("a"):
        return cap == (major, minor)
    return cap[0] == major and cap[1] >= minor


def _ptx_jits(arch: str, cap: tuple[int, int]) -> bool:
    """PTX compute_XY is JIT-compiled for any GPU of capability X.Y or higher (arch-specific: only X.Y)."""
    target = capability(arch)
    return cap == target if arch.endswith("a") else cap >= target


def driver_problem(build: GpuBuild, gpu: Gpu, what: str) -> str | None:
    """Why ``gpu``'s driver is too old for the build's CUDA major (minor-version compatibility), or None."""
    need = MIN_DRIVER.get(int(build.cuda.split(".")[0])) if build.cuda else None
    if need and driver_tuple(gpu.driver) < driver_tuple(need):
        return (f"{what} needs NVIDIA driver >= {need} (CUDA {build.cuda.split('.')[0]}.x); {gpu.describe()} has "
                f"driver {gpu.driver}: update the driver")
    return None


def can_serve(build: GpuBuild, gpu: Gpu, image: str = "the image", variant: str | None = None) -> str | None:
    """None when ``build`` can run on ``gpu``; else why not, one sentence naming the image, the GPU and
    what the build carries."""
    what = image_label(image, variant, build)
    if build.cuda is None:
        return f"{what} cannot use {gpu.describe()}"
    old = driver_problem(build, gpu, what)
    if old:
        return old
    if gpu.capability is None:
        return f"{what}: cannot tell whether it serves {gpu.describe()} (driver {gpu.driver} does not report it)"
    if any(_cubin_runs(a, gpu.capability) for a in build.archs):
        return None
    jit = [p for p in build.ptx if _ptx_jits(p, gpu.capability)]
    if not jit:
        return f"{what} has no kernels for {gpu.describe()} and no PTX the driver could compile for it"
    toolkit = TOOLKIT_DRIVER.get(build.cuda)
    if toolkit and driver_tuple(gpu.driver) < driver_tuple(toolkit):
        return (f"{what} serves {gpu.describe()} only by JIT-compiling its PTX {jit[-1]}, which needs a driver "
                f"as new as CUDA {build.cuda} (>= {toolkit}); driver {gpu.driver} is older: update the driver")
    return None


def served_by(build: GpuBuild, gpu: Gpu) -> str:
    """How ``build`` serves ``gpu`` (call when :func:`can_serve` said yes): kernels or JIT'ed PTX."""
    assert gpu.capability is not None
    kernels = [a for a in build.archs if _cubin_runs(a, gpu.capability)]
    if kernels:
        return f"kernels {kernels[-1]} ({describe_build(build)})"
    return f"PTX {[p for p in build.ptx if _ptx_jits(p, gpu.capability)][-1]} JIT-compiled ({describe_build(build)})"


def refusal(image: str, variant: str, build: GpuBuild, chosen: list[Gpu], host: list[Gpu],
            cpu_override: str) -> str | None:
    """The one line refusing to start ``image`` on the chosen GPUs (None: it serves them all), naming
    the GPU, why, and the ways out: ``cpu_override`` (e.g. ``--variant cuda,mxnet=cpu``) or other GPUs."""
    for gpu in chosen:
        reason = can_serve(build, gpu, image, variant)
        if gpu.capability is None and reason is not None and build.cuda:  # an old nvidia-smi: only the driver is known
            reason = driver_problem(build, gpu, image_label(image, variant, build))
        if reason is None:
            continue
        others = [g.index for g in host if can_serve(build, g) is None]
        elsewhere = (f", or pass --gpus {','.join(others)} (the GPU(s) of this host it serves)" if others
                     else " (no GPU of this host serves it)")
        return f"{reason}; run its models on the CPU with {cpu_override}{elsewhere}"
    return None


def serving_lines(specs: dict[str, Any], host: list[Gpu]) -> list[tuple[bool | None, str, str]]:
    """``zoobench doctor``'s lines for every GPU variant of images.yaml (``specs``: name ->
    ``ImageSpec``) on every host GPU: (ok, what, detail); ok None: the manifest cannot tell."""
    rows: list[tuple[bool | None, str, str]] = []
    for name, spec in sorted(specs.items()):
        for variant, var in sorted(spec.variants.items()):
            if var.gpu is None:
                if variant != "cpu":
                    rows.append((None, f"image {name} ({variant})", "images.yaml declares no gpu: block, so "
                                 "which GPUs it serves is not checked"))
                continue
            for gpu in host:
                reason = can_serve(var.gpu, gpu, name, variant)
                if reason is None:
                    rows.append((True, f"image {name} ({variant}) on GPU {gpu.index}", served_by(var.gpu, gpu)))
                else:
                    rows.append((False, f"image {name} ({variant}) on GPU {gpu.index}",
                                 f"{reason}; run its models on the CPU with --variant {variant},{name}=cpu"))
    return rows
