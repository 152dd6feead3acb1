"""Reliability probe, round two (not a test): the weak answers of issue #20, tried as a user would,
one line per case with its verdict.

Verdicts: ``clear`` (non-zero exit, exactly one ``error:`` line and it is the last, no traceback, no
raw exception text such as ``[Errno 30]``, ``FileExistsError`` or ``<... object at 0x...>``),
``weak`` (non-zero exit but not one clear line), ``bug`` (exit 0 on bad input, a traceback or raw
exception text, or a hang). Cases where the right answer is success (a re-export over a garbage
file, a compare on different data) have their own check and print ``ok`` or ``bug``. Cases that need
containers use the cpu images (built or reused by content hash); the fault suite
(tests/test_faults.py) holds the bugs with kills, signals and full disks.
Usage: .venv/bin/python tests/benchmarks/probe_reliability.py
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import tar_of  # noqa: E402
from probe_bad_input import ZB, run  # noqa: E402

RAW = re.compile(r"\[Errno \d+\]|\b[A-Z][A-Za-z]+(Error|Exception):|object at 0x[0-9a-f]+|Traceback")
Check = Callable[[subprocess.CompletedProcess], bool]


def verdict(proc: subprocess.CompletedProcess | None) -> str:
    if proc is None:
        return "bug"  # hung
    err = proc.stderr.strip()
    lines = err.splitlines()
    if proc.returncode == 0 or RAW.search(err):
        return "bug"
    errors = [line for line in lines if line.startswith("error:")]
    return "clear" if len(errors) == 1 and lines[-1] == errors[0] else "weak"


@contextlib.contextmanager
def read_only_mount(path: Path):
    """A read-only tmpfs at ``path`` (root ignores permission bits, so a mode is no test)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def main() -> None:
    from orchestrator.bench.imagefacts import image_tags
    from orchestrator.images import store as imagestore

    tags = image_tags()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        sample = tmp / "val"
        run([ZB, "data", "sample", "--out", str(sample)])
        photo = sorted(sample.rglob("*.jpg"))[0].read_bytes()
        res = str(tmp / "results")
        lite0 = [ZB, "run", "--model", "pytorch/efficientnet_lite0", "--results", res]

        twins = tmp / "twins"  # one basename in two class folders
        for wnid in ("n02123045", "n03773504"):
            (twins / wnid).mkdir(parents=True)
            (twins / wnid / "a.jpg").write_bytes(photo)
        twins_csv = tmp / "twins.csv"
        twins_csv.write_text("filename,wnid\na.jpg,n02123045\n")
        latin = tmp / "latin.csv"
        latin.write_bytes(b"filename,wnid\n\xe9t\xe9.jpg,n01440764\n")
        locked = tmp / "locked"
        (locked / "n01440764").mkdir(parents=True)
        (locked / "n01440764" / "a.jpg").write_bytes(photo)
        (locked / "n01440764" / "a.jpg").chmod(0)
        txt = tmp / "txt"
        (txt / "n01440764").mkdir(parents=True)
        (txt / "n01440764" / "a.jpg").write_text("hello, not a photo\n")
        afile = tmp / "file.txt"
        afile.write_text("x")
        garbage = tmp / "garbage"
        garbage.mkdir()
        (garbage / imagestore.tar_name(tags["pytorch"])).write_bytes(b"not a tar at all")
        squatted = tmp / "squatted"
        squatted.mkdir()
        (squatted / imagestore.tar_name(tags["pytorch"])).write_bytes(b"garbage in the way")
        other = tmp / "other"  # a real image tar, named for the pytorch image
        other.mkdir()
        tiny = "zoobench/probe-tiny:1"
        subprocess.run(["docker", "import", "-", tiny], input=tar_of(tmp / "empty.tar", {"x": b"x"}).read_bytes(),
                       capture_output=True, check=True)
        subprocess.run(["docker", "save", "-o", str(other / imagestore.tar_name(tags["pytorch"])), tiny], check=True)
        plan = tmp / "plan.json"
        plan.write_text(json.dumps({"run_id": 1, "results_dir": [], "jobs": "x"}))
        usr_plan = tmp / "usr-plan.json"
        usr_plan.write_text(json.dumps({
            "run_id": "r", "results_dir": str(tmp), "weights_dir": str(tmp), "data_path": "/usr",
            "data_binds": [{"source": "/usr", "target": "/usr"}], "digests": [[None, "sha256:x"]],
            "counts": [[None, 1]], "jobs": []}))
        dup = tmp / "dup-results" / "pytorch-x"  # a run whose top-5 repeats a class and holds NaN
        dup.mkdir(parents=True)
        import numpy as np

        np.savez(dup / "predictions.npz", paths=np.array(["n01440764/a.jpg"]),
                 topk_indices=np.array([[0, 0, 1, 2, 3]]), topk_scores=np.array([[np.nan, 0.1, 0.1, 0.1, 0.1]],
                                                                               dtype=np.float32))
        (dup / "run.json").write_text(json.dumps({"schema_version": 1, "status": "ok", "framework": "pytorch",
                                                  "framework_version": "2", "model": "x", "n_images": 1,
                                                  "weights": {"kind": "random"}, "precision": "fp32",
                                                  "data": {"digest": "sha256:x", "n_images": 1}}))
        evil = tmp / "evil.json"  # a listing (as `predict list` prints it) with a model named as a path
        evil.write_text(json.dumps([{"name": "../../etc/x", "preprocessing": {}, "weights": "w"}]))
        evil_manifests = tmp / "manifests-evil"
        shutil.copytree(ROOT / "manifests", evil_manifests)
        profiles = evil_manifests / "profiles.yaml"
        profiles.write_text(profiles.read_text().replace("pytorch: [efficientnet_lite0]", "pytorch: [../../etc/x]", 1))
        notimg_tar = tar_of(tmp / "notimg.tar", {"ILSVRC2012_val_00000001.JPEG": b"not a jpeg"})
        cut = tmp / "cut.tar"
        full = tar_of(tmp / "two.tar", {f"ILSVRC2012_val_{i:08d}.JPEG": photo for i in (1, 2, 3)})
        cut.write_bytes(full.read_bytes()[:(512 + ((len(photo) + 511) // 512) * 512) * 2])  # at a member boundary
        shadow = tmp / "shadowdir"
        shadow.mkdir()
        (shadow / "ILSVRC2012_val_00000001.JPEG").symlink_to("/etc/shadow")

        flipped = tmp / "flipped"  # the sample with one photo mirrored: same names, other data
        from PIL import Image

        shutil.copytree(sample, flipped)
        victim = sorted(flipped.rglob("*.jpg"))[0]
        with Image.open(victim) as img:
            img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
        finished = {}
        for label, data in (("a", sample), ("b", flipped)):
            folder = tmp / f"res-{label}"
            proc = run([ZB, "run", "--model", "pytorch/efficientnet_lite0", "--data", str(data), "--results", str(folder)])
            assert proc.returncode == 0, proc.stderr
            finished[label] = folder

        ok: dict[str, Check] = {}
        cases: list[tuple[str, list[str], dict | None]] = [
            ("labels CSV: one basename, two class folders", [*lite0, "--data", str(twins), "--labels", str(twins_csv)], None),
            ("labels CSV: Latin-1 bytes", [*lite0, "--labels", str(latin)], None),
            ("run: a mode-000 file (the containers' user cannot read it)", [*lite0, "--data", str(locked)], None),
            ("run: a .txt named .jpg", [*lite0, "--data", str(txt)], None),
            ("run: --results is a file", [*lite0[:-1], str(afile)], None),
            ("images export: --to is a file", [ZB, "images", "export", "pytorch", "--to", str(afile)], None),
            ("images load: a garbage tar", [ZB, "images", "load", str(garbage)], None),
            ("images load: a tar of another image", [ZB, "images", "load", str(other)], None),
            ("run: --sbatch-arg with an unclosed quote", [*lite0, "--engine", "slurm", "--sbatch-arg", "--comment='x"], None),
            ("slurm task: plan.json with wrong types", [ZB, "slurm", "task", str(plan)], {"SLURM_ARRAY_TASK_ID": "0"}),
            ("slurm task: plan.json binds /usr", [ZB, "slurm", "task", str(usr_plan)], {"SLURM_ARRAY_TASK_ID": "0"}),
            ("rank: duplicate classes and NaN in a top-5", [ZB, "rank", str(dup.parent)], None),
            ("k8s render: a model name with ../", [ZB, "k8s", "render", "--profile", "sample", "--data-claim", "d",
                                                  "--results-claim", "r", "--models-from", f"pytorch={evil}",
                                                  "--manifests", str(evil_manifests), "--out", str(tmp / "k8s")], None),
            ("run: every model lacks its weights", [ZB, "run", "--profile", "seed", "--data", str(sample), "--results",
                                                   res, "--model", "pytorch/resnet18"], None),
            ("data prepare: a val member that is not an image", [ZB, "data", "prepare", "--val-tar", str(notimg_tar),
                                                                "--out", str(tmp / "p1")], None),
            ("data prepare: a plain tar cut at a member boundary", [ZB, "data", "prepare", "--val-tar", str(cut),
                                                                   "--out", str(tmp / "p2")], None),
            ("data prepare: --val-dir with a link to /etc/shadow", [ZB, "data", "prepare", "--val-dir", str(shadow),
                                                                   "--out", str(tmp / "p3")], None),
        ]
        name = "images export: a garbage file at the target name is replaced"
        cases.append((name, [ZB, "images", "export", "pytorch", "--to", str(squatted)], None))
        ok[name] = lambda p: p.returncode == 0 and tarfile.is_tarfile(squatted / imagestore.tar_name(tags["pytorch"]))
        name = "compare: two runs of one model on different data"
        cases.append((name, [ZB, "compare", str(finished["a"] / "pytorch-efficientnet_lite0"),
                             str(finished["b"] / "pytorch-efficientnet_lite0")], None))
        ok[name] = lambda p: p.returncode == 0 and any(line.startswith("note:") and "different data" in line
                                                       for line in p.stderr.splitlines())
        counts = {"clear": 0, "weak": 0, "bug": 0, "ok": 0}
        rows = []
        ro_cases: list[tuple[str, Callable[[Path], list[str]]]] = [
            ("images export: --to a read-only folder", lambda ro: [ZB, "images", "export", "pytorch", "--to", str(ro / "x")]),
            ("report: --out a read-only folder", lambda ro: [ZB, "report", str(finished["a"]), "--out", str(ro / "r")]),
        ]
        with read_only_mount(tmp / "ro") as ro:
            for label, make in ro_cases:
                cases.append((label, make(ro), None))
            for label, cmd, env in cases:
                try:
                    proc = run(cmd, env, timeout=600)
                except subprocess.TimeoutExpired:
                    proc = None
                v = ("ok" if ok[label](proc) else "bug") if label in ok and proc is not None else verdict(proc)
                counts[v] += 1
                last = (proc.stderr.strip().splitlines() or [""])[-1][:160] if proc is not None else "(hung)"
                rows.append((label, v, proc.returncode if proc is not None else None, last))
        subprocess.run(["docker", "rmi", "-f", tiny], capture_output=True)
        width = max(len(r[0]) for r in rows)
        for label, v, code, last in rows:
            print(f"{label.ljust(width)}  {v:5}  exit {code!s:>4}  {last}", flush=True)
        print(f"\n{len(rows)} cases: {counts['clear']} one clear line, {counts['ok']} right outcome, "
              f"{counts['weak']} weak, {counts['bug']} bugs")


if __name__ == "__main__":
    main()
