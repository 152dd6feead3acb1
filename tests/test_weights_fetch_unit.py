"""bench.weights.fetch_weights: what it reports, without Docker (the container call is faked)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

from orchestrator.bench import weights


def job(model: str, weights_name: str = "imagenet") -> SimpleNamespace:
    return SimpleNamespace(image="pytorch", model=model, weights=weights_name, tag="zoobench/pytorch:cpu-x",
                           run_name=f"pytorch-{model}")


def test_fetch_weights_groups_what_each_model_needed_and_why_others_failed(tmp_path, monkeypatch):
    calls: list[list[str]] = []

    def predict(client, tag, args, binds, out_dir, weights_dir, log_path, **kw):
        calls.append(args)
        model = args[2]
        assert kw["network"] == "bridge" and kw["weights_writable"]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text('{"status": "cached"}\n' if model == "b" else "downloading\n")
        failed = model.startswith("bad")
        return SimpleNamespace(exit_code=4 if failed else 0,
                               reason=f"{model}: <urlopen error [Errno -3] Temporary failure> for {model}.pth")

    monkeypatch.setattr(weights.containers, "predict_in_container", predict)
    monkeypatch.setattr(weights.containers, "handed_over", lambda folder: contextlib.nullcontext())
    jobs = [job("a"), job("b"), job("c", "random"), job("bad1"), job("bad2")]
    report = weights.fetch_weights(object(), jobs, tmp_path / "w", tmp_path / "logs", "bridge")
    assert report.groups == {"fetched": ["pytorch/a"], "already cached": ["pytorch/b"],
                             "need nothing (random weights)": ["pytorch/c"]}
    assert report.failures == {"[Errno -3] Temporary failure": ["pytorch/bad1", "pytorch/bad2"]}
    assert (report.failed, report.total) == (2, 5) and len(calls) == 4
    assert (tmp_path / "w").is_dir() and Path(tmp_path / "logs/fetch-pytorch-a.log").is_file()
