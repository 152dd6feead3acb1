"""Bad-input probe (not a test): feeds zoobench and predict the mistakes users make and prints,
for each case, whether the answer was one clear line.

Verdicts: ``clear`` (non-zero exit, exactly one ``error:`` line and it is the last line, no
traceback), ``weak`` (non-zero exit without traceback, but not one ``error:`` line), ``bug``
(exit 0 on bad input, or a traceback). Cases that need a container use the cpu images (built or
reused by content hash). The fault cases with signals, kills and full disks are in
tests/test_faults.py. Usage: .venv/bin/python tests/benchmarks/probe_bad_input.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
ZB = str(Path(sys.executable).with_name("zoobench"))


def run(cmd: list[str], env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def verdict(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    lines = err.splitlines()
    if proc.returncode == 0 or "Traceback" in err:
        return "bug"
    errors = [line for line in lines if line.startswith("error:")]
    return "clear" if len(errors) == 1 and lines[-1] == errors[0] else "weak"


def manifests_with(tmp: Path, name: str, edit) -> Path:
    dest = tmp / f"manifests-{name}"
    shutil.copytree(ROOT / "manifests", dest)
    edit(dest)
    return dest


def yaml_edit(file: str, change):
    def edit(folder: Path) -> None:
        path = folder / file
        doc = yaml.safe_load(path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc))
    return edit


def text_edit(file: str, old: str, new: str):
    def edit(folder: Path) -> None:
        path = folder / file
        path.write_text(path.read_text().replace(old, new, 1))
    return edit


def main() -> None:
    from orchestrator.bench.imagefacts import image_tags

    tags = image_tags()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        sample = tmp / "val"
        run([ZB, "data", "sample", "--out", str(sample)])
        corrupt = tmp / "corrupt"
        shutil.copytree(sample, corrupt)
        victim = sorted(corrupt.glob("*/*.jpg"))[0]
        victim.write_bytes(victim.read_bytes()[:1500])
        zero = tmp / "zero"
        shutil.copytree(sample, zero)
        next(zero.glob("*/*.jpg")).write_bytes(b"")
        nonwnid = tmp / "nonwnid"
        shutil.copytree(sample, nonwnid)
        (nonwnid / "cats").mkdir()
        shutil.copy(next(sample.glob("*/*.jpg")), nonwnid / "cats" / "a.jpg")
        empty = tmp / "empty"
        empty.mkdir()
        afile = tmp / "file.txt"
        afile.write_text("x")
        nottar = tmp / "val.tar"
        nottar.write_bytes(b"not a tar")
        badtar = tmp / "other.tar"
        with tarfile.open(badtar, "w") as tar:
            tar.add(afile, arcname="readme.txt")
        broken_run = tmp / "broken-results" / "pytorch-x"
        broken_run.mkdir(parents=True)
        (broken_run / "run.json").write_text("{not json")
        (broken_run / "predictions.npz").write_bytes(b"PK\x03\x04broken")
        out = tmp / "out"
        res = str(tmp / "results")
        lite0 = [ZB, "run", "--model", "pytorch/efficientnet_lite0", "--results", res]
        cases: list[tuple[str, list[str], dict | None]] = [
            ("run: unknown profile", [ZB, "run", "--profile", "nope", "--results", res], None),
            ("run: unknown model", [ZB, "run", "--model", "nosuch", "--results", res], None),
            ("run: typo in a repeated --model", [*lite0, "--model", "keras/efficientnet_lite9"], None),
            ("run: bad --format", [*lite0, "--format", "xml"], None),
            ("run: --weights file missing", [*lite0, "--weights", str(tmp / "none.pth")], None),
            ("run: --weights imagenet:NOPE", [*lite0, "--weights", "imagenet:NOPE"], None),
            ("run: --gpus 7 without GPUs", [*lite0, "--gpus", "7"], None),
            ("run: --gpus abc", [*lite0, "--gpus", "abc"], None),
            ("run: --variant nope", [*lite0, "--variant", "nope"], None),
            ("run: --limit 0", [*lite0, "--limit", "0"], None),
            ("run: --batch-size 0", [*lite0, "--batch-size", "0"], None),
            ("run: --data missing", [*lite0, "--data", str(tmp / "missing")], None),
            ("run: --data is a file", [*lite0, "--data", str(afile)], None),
            ("run: --data empty", [*lite0, "--data", str(empty)], None),
            ("run: --data corrupt JPEG", [*lite0, "--data", str(corrupt)], None),
            ("run: --data zero-byte file", [*lite0, "--data", str(zero)], None),
            ("run: --data non-wnid folder", [*lite0, "--data", str(nonwnid)], None),
            ("run: --labels missing", [*lite0, "--labels", str(tmp / "labels.csv")], None),
            ("run: --manifests missing", [*lite0, "--manifests", str(tmp / "nomanifests")], None),
            ("run: --results is a file", [ZB, "run", "--model", "pytorch/efficientnet_lite0", "--results", str(afile)], None),
            ("run: engine unreachable", lite0, {"DOCKER_HOST": f"unix://{tmp}/no.sock"}),
            ("run: models.yaml invalid YAML", [*lite0, "--manifests", str(manifests_with(
                tmp, "yaml", text_edit("models.yaml", "defaults:", "defaults: [")))], None),
            ("run: models.yaml crop > resize", [*lite0, "--manifests", str(manifests_with(
                tmp, "crop", yaml_edit("models.yaml", lambda d: d["models"]["pytorch/efficientnet_lite0"]
                                       ["preprocessing"].update(crop_size=300))))], None),
            ("run: models.yaml batch_size string", [*lite0, "--manifests", str(manifests_with(
                tmp, "bs", yaml_edit("models.yaml", lambda d: d["defaults"].update(batch_size="many"))))], None),
            ("run: models.yaml unknown mode", [*lite0, "--manifests", str(manifests_with(
                tmp, "mode", yaml_edit("models.yaml", lambda d: d["models"]["pytorch/efficientnet_lite0"]
                                       ["preprocessing"].update(mode="xyz"))))], None),
            ("run: profiles.yaml unknown image", [ZB, "run", "--profile", "sample", "--results", res, "--manifests",
                                                  str(manifests_with(tmp, "img", yaml_edit(
                                                      "profiles.yaml", lambda d: d["profiles"]["sample"]["models"]
                                                      .update(caffe=["x"]))))], None),
            ("run: images.yaml unknown field", [*lite0, "--manifests", str(manifests_with(
                tmp, "imgs", yaml_edit("images.yaml", lambda d: d["images"]["pytorch"].update(colour="red"))))], None),
            ("rank: folder missing", [ZB, "rank", str(tmp / "nothing")], None),
            ("rank: folder without runs", [ZB, "rank", str(empty)], None),
            ("rank: corrupted run.json", [ZB, "rank", str(tmp / "broken-results")], None),
            ("rank: bad --format", [ZB, "rank", str(tmp / "broken-results"), "--format", "xml"], None),
            ("report: folder missing", [ZB, "report", str(tmp / "nothing")], None),
            ("data check: folder missing", [ZB, "data", "check", str(tmp / "nothing")], None),
            ("data check: corrupt JPEG", [ZB, "data", "check", str(corrupt)], None),
            ("data prepare: tar missing", [ZB, "data", "prepare", "--val-tar", str(tmp / "no.tar"), "--out", str(out)], None),
            ("data prepare: not a tar", [ZB, "data", "prepare", "--val-tar", str(nottar), "--out", str(out)], None),
            ("data prepare: tar without val images", [ZB, "data", "prepare", "--val-tar", str(badtar), "--out", str(out)], None),
            ("data sample: --out is a file", [ZB, "data", "sample", "--out", str(afile)], None),
            ("images build: unknown image", [ZB, "images", "build", "nosuch"], None),
            ("models: unknown image", [ZB, "models", "nosuch"], None),
            ("weights fetch: unknown profile", [ZB, "weights", "fetch", "--profile", "nosuch"], None),
        ]
        docker = ["docker", "run", "--rm", "--network", "none", "-v", f"{sample}:/data:ro"]
        for image, tag in tags.items():
            predict = [*docker, tag, "run", "--model", "efficientnet_lite0", "--data", "/data", "--out", "/tmp/o"]
            cases += [
                (f"predict {image}: --batch-size 0", [*predict, "--batch-size", "0"], None),
                (f"predict {image}: --topk 3", [*predict, "--topk", "3"], None),
                (f"predict {image}: --preprocess not JSON", [*predict, "--preprocess", "{nope"], None),
                (f"predict {image}: --preprocess bad mode", [*predict, "--preprocess", '{"mode": "xyz"}'], None),
                (f"predict {image}: --device cuda without GPU", [*predict, "--device", "cuda"], None),
                (f"predict {image}: fetch --weights random", [*docker, tag, "fetch", "--model", "efficientnet_lite0",
                                                            "--weights", "random"], None),
                (f"predict {image}: unknown command", [*docker, tag, "train"], None),
            ]
        counts = {"clear": 0, "weak": 0, "bug": 0}
        width = max(len(name) for name, _, _ in cases)
        for name, cmd, env in cases:
            proc = run(cmd, env)
            v = verdict(proc)
            counts[v] += 1
            last = (proc.stderr.strip().splitlines() or [""])[-1][:150]
            print(f"{name.ljust(width)}  {v:5}  exit {proc.returncode:3}  {last}", flush=True)
        print(f"\n{len(cases)} cases: {counts['clear']} one clear line, {counts['weak']} weak, {counts['bug']} bugs")


if __name__ == "__main__":
    main()
