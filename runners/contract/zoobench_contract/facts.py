"""Model facts: the parameters and multiply-adds of a model, counted by its own framework.

``predict run`` records them in run.json as ``model_facts``; ``predict facts`` prints the same record
(the orchestrator runs it once per image, model and input size and passes it back with ``--facts``).
The record (schema :data:`SCHEMA`)::

    {"schema": 1, "model": NAME, "framework": FW, "input_size": [H, W],
     "params": {"total": int, "trainable": int, "counter": str} | null,
     "macs": {"value": int | null, "input_size": [H, W], "counter": str, "convention": str, "why": str | null} | null,
     "why": null | str}

MACs follow torchvision's ``_ops`` and timm's GMACs: one multiply-add is one MAC; convolutions and
matmuls (linear layers) count. A count the framework cannot make is null with the reason, never a guess;
a failure while counting never fails the run (the record says why, in one line).
"""
from __future__ import annotations

import json
from typing import Any, Optional

import typer

from .runtime import fail, find_model, load_backend

SCHEMA = 1
CONVENTION = "1 multiply-add = 1 MAC"


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def unknown(framework: str, model: str, crop_size: int, why: str) -> dict[str, Any]:
    """The record of a model whose facts could not be counted at all."""
    return {"schema": SCHEMA, "model": model, "framework": framework, "input_size": [crop_size, crop_size],
            "params": None, "macs": None, "why": why}


def counted(backend: Any, net: Any, spec: Any, crop_size: int) -> dict[str, Any]:
    """Ask the backend's optional ``model_facts(net, spec, crop_size)``; any exception is recorded."""
    framework = getattr(backend, "framework", "?")
    if not hasattr(backend, "model_facts"):
        return unknown(framework, spec.name, crop_size, f"the {framework} backend has no model_facts")
    try:
        found = dict(backend.model_facts(net, spec, crop_size))
    except Exception as exc:  # noqa: BLE001 - counting is a side fact: it never fails the run
        return unknown(framework, spec.name, crop_size, f"counting failed ({first_line(exc)})")
    return {**unknown(framework, spec.name, crop_size, ""), "params": found.get("params"), "macs": found.get("macs"),
            "why": found.get("why")}


def check_given(text: str, framework: str, model: str, crop_size: int) -> dict[str, Any]:
    """``--facts`` as `predict facts` printed it, checked against this run (one line when it does not fit)."""
    try:
        given = json.loads(text)
    except ValueError as exc:
        fail(f"--facts: not JSON ({exc})")
    if not isinstance(given, dict):
        fail("--facts: expected a JSON object as `predict facts` prints it")
    if given.get("schema") != SCHEMA:
        fail(f"--facts: schema {given.get('schema')!r}, this image writes schema {SCHEMA}; run `predict facts` again")
    if given.get("model") != model:
        fail(f"--facts: the facts are of model {given.get('model')!r}, this run is of {model!r}")
    if given.get("framework") not in (None, framework):
        fail(f"--facts: the facts were counted by {given.get('framework')!r}, this image is {framework!r}")
    if given.get("input_size") != [crop_size, crop_size]:
        fail(f"--facts: the facts are for input size {given.get('input_size')!r}, this run uses "
             f"[{crop_size}, {crop_size}]")
    for key in ("params", "macs"):
        if key not in given or not isinstance(given[key], (dict, type(None))):
            fail(f"--facts: no {key!r} record; pass what `predict facts` printed")
    return given


def facts_for(backend: Any, net: Any, spec: Any, crop_size: int, given: str | None) -> dict[str, Any]:
    """What run.json records as ``model_facts``: ``given`` (``--facts``) when set and it fits this run,
    else counted now by the backend."""
    if given:
        return check_given(given, getattr(backend, "framework", "?"), spec.name, crop_size)
    return counted(backend, net, spec, crop_size)


def facts_cmd(
    model: str = typer.Option(..., "--model", help="model name from `predict list`"),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", min=1, help="input size (default: the model's)"),
) -> None:
    """Print the model's parameters and multiply-adds (at the input size) as one line of JSON.

    The model is built with random weights on the CPU: no weights file and no network are needed (a
    runtime builds it from whichever conversion it has: the backend's optional ``facts_weights(spec)``). A
    model that cannot be built fails (exit code 1) and prints nothing, so that no record is cached."""
    backend = load_backend()
    spec = find_model(backend, model)
    size = crop_size or spec.preprocessing.crop_size
    net = backend.load(spec, backend.facts_weights(spec) if hasattr(backend, "facts_weights") else "random", "cpu")
    print(json.dumps(counted(backend, net, spec, size)))
