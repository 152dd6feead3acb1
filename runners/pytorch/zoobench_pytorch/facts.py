"""Model facts of the pytorch backend: parameters by ``model.parameters()``, multiply-adds by
``torch.utils.flop_counter.FlopCounterMode`` on one zero image, on the CPU."""
from __future__ import annotations

import copy
import re
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

PARAMS_COUNTER = ("torch: sum of p.numel() over model.parameters(), trainable: requires_grad "
                  "(buffers such as batch-norm running statistics are not parameters)")
MACS_COUNTER = (f"torch.utils.flop_counter.FlopCounterMode (torch {torch.__version__}), one zero 1x3xHxW input "
                "under torch.no_grad on the CPU")
CONVENTION = ("1 multiply-add = 1 MAC; torch.utils.flop_counter counts 2 FLOPs per multiply-add: divided by 2")
# aten ops that do multiply-add work: each seen must have a FLOP formula, else the count would be short
HEAVY_OP = re.compile(r"conv|mm|matmul|dot|attention|einsum|linear|lstm|gru|rnn")


def param_counts(model: torch.nn.Module) -> dict[str, Any]:
    params = list(model.parameters())
    return {"total": int(sum(p.numel() for p in params)),
            "trainable": int(sum(p.numel() for p in params if p.requires_grad)), "counter": PARAMS_COUNTER}


class _OpsSeen(TorchDispatchMode):
    """Every aten op a forward pass runs (to tell the ops the FLOP counter has no formula for)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[Any] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.add(func.overloadpacket)
        return func(*args, **(kwargs or {}))


def _cpu_attention(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                   **kwargs: Any) -> int:
    """The CPU kernel of scaled-dot-product attention: torch's own formula of its CUDA kernels."""
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _extra_formulas() -> dict[Any, Any]:
    """FLOP formulas torch.utils.flop_counter lacks (the fused CPU attention kernel)."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _cpu_attention} if op is not None else {}


def _on_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """The eager module (a ``torch.compile`` wrapper's original) with its tensors on the CPU."""
    model = getattr(model, "_orig_mod", model)
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == "cpu" for t in tensors):
        return model
    return copy.deepcopy(model).cpu()


def count_macs(model: torch.nn.Module, crop_size: int) -> dict[str, Any]:
    """``FlopCounterMode`` total / 2 at ``crop_size``; null with the reason when an op that multiplies
    has no FLOP formula (its work would be missing) or the forward fails."""
    from torch.utils.flop_counter import FlopCounterMode

    record: dict[str, Any] = {"value": None, "input_size": [crop_size, crop_size], "counter": MACS_COUNTER,
                              "convention": CONVENTION, "why": None}
    net = _on_cpu(model)
    counter, seen = FlopCounterMode(display=False, custom_mapping=_extra_formulas()), _OpsSeen()
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:  # the fused attention kernel has no formula: take the path of linear + sdpa ops
            mha.set_fastpath_enabled(False)
        with torch.no_grad(), seen, counter:
            net(torch.zeros(1, 3, crop_size, crop_size))
    except Exception as exc:  # noqa: BLE001 - a model that cannot run at this size: say so
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return {**record, "why": f"the forward pass at {crop_size}x{crop_size} failed ({type(exc).__name__}: {first})"}
    finally:
        if mha is not None and fast is not None:
            mha.set_fastpath_enabled(fast)
    known = set(counter.flop_registry)
    missing = sorted(str(op) for op in seen.ops if op not in known and HEAVY_OP.search(str(op).split(".")[-1]))
    if missing:
        return {**record, "why": "torch.utils.flop_counter has no FLOP formula for " + ", ".join(missing)}
    flops = int(counter.get_total_flops())
    return {**record, "value": flops // 2}


def model_facts(model: Any, spec: Any, crop_size: int) -> dict[str, Any]:
    """Parameters and multiply-adds of a torch module at ``crop_size``."""
    return {"params": param_counts(model), "macs": count_macs(model, crop_size), "schema": 1}
