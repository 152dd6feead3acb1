"""Model facts (being written): parameters and multiply-adds of a model, counted by its framework."""
from __future__ import annotations

from typing import Any, Optional

import typer


def facts_for(backend: Any, net: Any, spec: Any, crop_size: int, given: str | None) -> dict[str, Any]:
    """What run.json records as ``model_facts`` (stub)."""
    return {"params": None, "macs": None, "why": "not counted yet"}


def facts_cmd(
    model: str = typer.Option(..., "--model", help="model name from `predict list`"),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", min=1, help="input size (default: the model's)"),
) -> None:
    """Print the model's parameters and multiply-adds as JSON (stub)."""
    raise NotImplementedError
