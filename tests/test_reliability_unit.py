"""Issue #20, "Reliability, round two": image tars trusted by what they hold, --sbatch-arg split and
checked before anything runs, a checked Slurm plan, a note when compared runs saw different data,
escaped Markdown, unusable top-k rows and unsafe model names refused; all one line, no Docker."""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from docker.errors import ImageLoadError, ImageNotFound
from rich.console import Console

from conftest import one_line_error, tar_of, zoobench
from orchestrator.engines import k8s, slurm, slurm_task
from orchestrator.images import store as imagestore
from orchestrator.errors import BenchError
from orchestrator.bench.plan import Job
from orchestrator.bench.runner import DataMount
from orchestrator.bench.mounts import Bind
from orchestrator.results.ranking import RankError, load_results, rank_results
from orchestrator.results.report import write_report
from orchestrator.results.tables import format_markdown
from test_compare import tiny_run
from test_ranking import dataset, mask, predictions, write_run

TAG, OTHER = "zoobench/pytorch:cpu-0123456789ab", "zoobench/keras:cpu-ba9876543210"
HEX, OTHER_HEX = "a" * 64, "b" * 64


# ---------------------------------------------------------------- image tars (1, 2)

def image_tar(path: Path, tags: list[str], hexid: str = HEX, layout: str = "docker") -> Path:
    """A tiny hand-made image tar: ``docker`` (manifest.json, Config <hex>.json), ``new`` (Docker 25+:
    manifest.json with Config blobs/sha256/<hex> plus index.json) or ``oci`` (index.json only)."""
    files: dict[str, bytes] = {"layer/layer.tar": b"layer bytes"}
    config = f"blobs/sha256/{hexid}" if layout == "new" else f"{hexid}.json"
    if layout in ("docker", "new"):
        files["manifest.json"] = json.dumps([{"Config": config, "RepoTags": tags,
                                              "Layers": ["layer/layer.tar"]}]).encode()
    if layout in ("new", "oci"):
        files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
            {"digest": f"sha256:{hexid}", "annotations": {"io.containerd.image.name": f"docker.io/{t}"}}
            for t in tags]}).encode()
    return tar_of(path, files)


class FakeImage:
    def __init__(self, tag: str, hexid: str = HEX, tar: bytes = b""):
        self.tags, self.id, self.tar, self.saves = [tag], f"sha256:{hexid}", tar, 0

    def save(self, chunk_size: int, named: bool):
        self.saves += 1
        yield self.tar


class FakeImages:
    """``client.images``: ``built`` by tag; ``load`` gives ``loads`` and adds them (or raises ``load_error``)."""

    def __init__(self, built: list[FakeImage] = (), loads: list[FakeImage] = (), load_error: Exception | None = None):
        self.built, self.loads, self.load_error = {i.tags[0]: i for i in built}, list(loads), load_error
        self.loaded: list[str] = []

    def get(self, tag: str) -> FakeImage:
        if tag not in self.built:
            raise ImageNotFound(tag)
        return self.built[tag]

    def load(self, f) -> list[FakeImage]:
        self.loaded.append(Path(f.name).name)
        if self.load_error is not None:
            raise self.load_error
        self.built.update({i.tags[0]: i for i in self.loads})  # the engine now has what it loaded
        return self.loads


class FakeClient:
    def __init__(self, **kwargs):
        self.images = FakeImages(**kwargs)


def test_read_tar_reads_docker_and_oci_layouts_and_names_a_garbage_file(tmp_path):
    for layout in ("docker", "new", "oci"):
        held = imagestore.read_tar(image_tar(tmp_path / f"{layout}.tar", [TAG], layout=layout))
        assert held.tags == (TAG,) and f"sha256:{HEX}" in held.ids, layout
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(imagestore.ImageStoreError, match=re.escape(f"{garbage} is not an image tar")):
        imagestore.read_tar(garbage)
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(__file__, arcname="readme.txt")
    with pytest.raises(imagestore.ImageStoreError, match="no manifest.json or index.json"):
        imagestore.read_tar(plain)


def test_export_to_a_file_or_an_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    client = FakeClient(built=[FakeImage(TAG)])
    with pytest.raises(imagestore.ImageStoreError, match=re.escape(f"--to {afile} is a file, not a folder")):
        imagestore.export(client, [TAG], afile)
    with pytest.raises(imagestore.ImageStoreError, match=r"cannot create it \(Not a directory\)"):
        imagestore.export(client, [TAG], afile / "sub")
    monkeypatch.setattr(imagestore.os, "access", lambda path, mode: False)  # root writes anywhere: as on a ro mount
    with pytest.raises(imagestore.ImageStoreError, match=r"is not writable \(read-only\); make it writable"):
        imagestore.export(client, [TAG], tmp_path / "ro")
    monkeypatch.undo()
    blocked = tmp_path / "blocked"
    (blocked / f".{imagestore.tar_name(TAG)}.partial").mkdir(parents=True)  # the temp name cannot be a file
    with pytest.raises(imagestore.ImageStoreError, match=rf"--to {blocked}: cannot write .*pass another folder"):
        imagestore.export(client, [TAG], blocked)
    one_line_error(zoobench("images", "export", "--to", str(afile)), f"--to {afile} is a file, not a folder")


def test_export_replaces_what_is_not_the_image_and_skips_what_is(tmp_path):
    good = image_tar(tmp_path / "src" / "good.tar", [TAG]).read_bytes()
    image = FakeImage(TAG, tar=good)
    client = FakeClient(built=[image])
    folder = tmp_path / "images"
    target = folder / imagestore.tar_name(TAG)
    said: list[str] = []
    for content in (b"garbage", image_tar(tmp_path / "o.tar", [OTHER]).read_bytes(),
                    image_tar(tmp_path / "i.tar", [TAG], OTHER_HEX).read_bytes()):  # garbage, other tag, other id
        folder.mkdir(exist_ok=True)
        target.write_bytes(content)
        assert imagestore.export(client, [TAG], folder, said.append) == [target]
        assert target.read_bytes() == good and "does not hold this image; exporting it again" in said[-2]
    saves = image.saves
    imagestore.export(client, [TAG], folder, said.append)
    assert image.saves == saves and said[-1].endswith("already there")
    assert sorted(p.name for p in folder.iterdir()) == [target.name]  # no temp file left


def test_load_refuses_a_tar_of_another_image_before_docker_sees_it(tmp_path):
    folder = tmp_path / "images"
    path = image_tar(folder / imagestore.tar_name(TAG), [OTHER])  # a keras tar under the pytorch name
    client = FakeClient()
    with pytest.raises(imagestore.ImageStoreError) as err:
        imagestore.load_missing(client, [TAG], folder)
    message = str(err.value)
    assert message.startswith(f"{path} holds {OTHER}, not {TAG}") and "\n" not in message
    with pytest.raises(imagestore.ImageStoreError, match=rf"{path} holds {OTHER}, not the image its file name is for"):
        imagestore.load_all(client, folder)
    assert client.images.loaded == []


def test_load_names_the_file_when_docker_fails_and_checks_the_loaded_id(tmp_path):
    folder = tmp_path / "images"
    path = image_tar(folder / imagestore.tar_name(TAG), [TAG])
    failing = FakeClient(load_error=ImageLoadError("unexpected EOF"))
    with pytest.raises(imagestore.ImageStoreError, match=rf"{path}: docker load failed \(unexpected EOF\)"):
        imagestore.load_missing(failing, [TAG], folder)
    other_id = FakeClient(loads=[FakeImage(TAG, OTHER_HEX)])
    with pytest.raises(imagestore.ImageStoreError, match=rf"{path}: docker load gave image sha256:bbbb.*not {TAG}"):
        imagestore.load_all(other_id, folder)
    right = FakeClient(loads=[FakeImage(TAG)])
    assert imagestore.load_missing(right, [TAG], folder) == [TAG] and imagestore.load_all(right, folder) == [TAG]
    assert right.images.loaded == [path.name, path.name]


def test_a_slurm_task_given_a_foreign_tar_fails_in_one_line_naming_it(tmp_path, monkeypatch):
    job = Job("pytorch", TAG, "resnet18", "random", 8, 60, {}, None)
    plan_path = valid_plan(tmp_path, [job], images_dir=str(tmp_path / "images"))
    tar = image_tar(tmp_path / "images" / imagestore.tar_name(TAG), [OTHER])
    monkeypatch.setattr(slurm_task.containers, "connect", lambda runtime: FakeClient())
    outcome = slurm_task.run_task(plan_path, 0, Console(file=io.StringIO()))
    assert outcome.status == "failed" and outcome.reason.startswith(f"{tar} holds {OTHER}, not {TAG}")
    assert slurm_task.read_outcome(plan_path, 0, job).reason == outcome.reason


# ---------------------------------------------------------------- --sbatch-arg (3)

def test_sbatch_args_are_words_never_shell_text(tmp_path):
    script = tmp_path / "task.sh"
    tokens = slurm.parse_sbatch_args(["--comment='$(touch x)'", "--qos high", "-p gpu", "--export=ALL,A=1"])
    assert tokens == ("--comment=$(touch x)", "--qos", "high", "-p", "gpu", "--export=ALL,A=1")
    for args in (tokens, ("--comment=$(touch x)",)):  # stored tokens are never split again
        cmd = slurm.sbatch_command(slurm.SlurmOptions(sbatch_args=args), 2, "z", tmp_path, False, script)
        assert [a for a in cmd if "touch" in a] == ["--comment=$(touch x)"] and cmd[-1] == str(script)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("value, needle", [
    ("--comment='x", "--sbatch-arg \"--comment='x\": unclosed quote"),
    ("--comment=$(touch x)", "'x)' is not an sbatch option"),
    ("evil.sh", "'evil.sh' is not an sbatch option"),
    ("--qos=high stray", "'stray' is not an sbatch option"),
    ("--array=0-3", "zoobench sets --array itself"),
    ("-o /tmp/log", "zoobench sets -o itself"),
    ("--outp=x", "zoobench sets --outp itself"),
    ("--export=NONE", "zoobench sets --export itself"),
    ("--wrap=id", "zoobench sets --wrap itself"),
])
def test_bad_sbatch_args_are_one_line_before_anything_runs(tmp_path, value, needle):
    with pytest.raises(slurm.SlurmError, match=re.escape(needle)):
        slurm.parse_sbatch_args([value])
    results = tmp_path / "r"
    one_line_error(zoobench("run", "--engine", "slurm", "--results", str(results), "--sbatch-arg", value), needle)
    assert not results.exists()  # refused before the results folder, the data scan or any container


# ---------------------------------------------------------------- the Slurm plan (4)

def valid_plan(tmp_path: Path, jobs: list[Job], **fields) -> Path:
    val, weights = tmp_path / "val", tmp_path / "weights"
    val.mkdir(exist_ok=True)
    weights.mkdir(exist_ok=True)
    data = DataMount(str(val), [Bind(str(val), str(val))], {None: "sha256:d"}, {None: 1})
    plan = slurm_task.Plan.of("run1", tmp_path / "results", weights, data, jobs, {}, False, None, False, "docker",
                              fields.pop("images_dir", None))
    path = tmp_path / "results" / ".slurm" / "run1" / "plan.json"
    plan.save(path)
    if fields:
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return path


JOB = Job("pytorch", TAG, "resnet18", "random", 8, 60, {}, None)


def edited_plan(tmp_path: Path, edit) -> Path:
    path = valid_plan(tmp_path, [JOB])
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p["jobs"][0].update(batch_size="x"), "field jobs.0.batch_size: Input should be a valid integer"),
    (lambda p: p["jobs"][0].update(pixels=[1]), "field jobs.0.pixels: Input should be an object"),
    (lambda p: p.update(jobs={"a": 1}), "field jobs: Input should be a valid array"),
    (lambda p: p.update(digests=[["x", "d"]]), "field digests.0.0: Input should be a valid integer"),
    (lambda p: p.update(surprise=1), "field surprise: Unexpected keyword argument"),
    (lambda p: p["data_binds"].append({"source": "/usr", "target": "/usr"}),
     "field data_binds.1: bind target '/usr' would hide the runner image's own files"),
    (lambda p: p["data_binds"].append({"source": "/srv/x", "target": "/mnt/x/../../usr/lib"}),
     "field data_binds.1: bind target '/mnt/x/../../usr/lib' would hide"),
    (lambda p: p["data_binds"].append({"source": "/srv/x", "target": "/mnt/x"}),
     "field data_binds.1: a bind mounts an absolute host path at that same path, not '/srv/x' at '/mnt/x'"),
    (lambda p: p.update(data_path="/elsewhere"), "field data_binds.0: the first bind must mount the data folder"),
    (lambda p: p.update(weights_binds={"w.pt": {"source": "/nope/w.pt", "target": "/nope/w.pt"}}),
     "field weights_binds.w.pt: weights file '/nope/w.pt' does not exist"),
    (lambda p: p.update(results_dir="results"), "field results_dir: 'results' is not an absolute path"),
    (lambda p: p.update(weights_dir="/nope/weights"), "field weights_dir: '/nope/weights' is not an absolute path"),
])
def test_a_hand_edited_plan_is_refused_in_one_line(tmp_path, edit, needle):
    path = edited_plan(tmp_path, edit)
    with pytest.raises(slurm_task.SlurmError) as err:
        slurm_task.Plan.load(path)
    message = str(err.value)
    assert message.startswith(f"Slurm task plan {path}: ") and message.endswith("; submit the bench again")
    assert needle in message and "\n" not in message, message


def test_a_task_on_a_bad_plan_exits_with_one_error_line(tmp_path):
    path = edited_plan(tmp_path, lambda p: p["jobs"][0].update(batch_size="x"))
    proc = zoobench("slurm", "task", str(path), env={"SLURM_ARRAY_TASK_ID": "0"}, timeout=120)
    one_line_error(proc, f"Slurm task plan {path}: field jobs.0.batch_size: Input should be a valid integer")
    path.write_text('["not", "a", "plan"]')
    proc = zoobench("slurm", "task", str(path), env={"SLURM_ARRAY_TASK_ID": "0"}, timeout=120)
    one_line_error(proc, f"Slurm task plan {path}: Input should be an object")


# ---------------------------------------------------------------- compare on different data (5)

def test_compare_notes_runs_made_on_different_data(tmp_path):
    paths = [f"n01440764/img{i}.JPEG" for i in range(3)]
    a = tiny_run(tmp_path, "a", paths, [0, 1, 2])
    b = tiny_run(tmp_path, "b", paths, [0, 1, 3], framework="keras")
    same = zoobench("compare", str(a), str(b), timeout=120)
    assert same.returncode == 0 and "note:" not in same.stderr, same.stderr
    run = json.loads((b / "run.json").read_text())
    run["data"]["digest"] = "sha256:" + "f" * 64
    (b / "run.json").write_text(json.dumps(run))
    proc = zoobench("compare", str(a), str(b), "--format", "json", timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["n_shared"] == 3, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: a and b were made on different data (digest sha256:000000000000... vs "
                     "sha256:ffffffffffff...); the comparison covers the 3 images both predicted"], proc.stderr


# ---------------------------------------------------------------- Markdown (6)

def test_markdown_escapes_names_and_keeps_the_columns(tmp_path):
    paths, y = dataset()
    results = tmp_path / "results"
    write_run(results, "pytorch-evil", paths, predictions(y, mask(150), mask(190)), model="x|<img src=y>*z*",
              framework="fw_`[a](b)`")
    write_run(results, "pytorch-plain", paths, predictions(y, mask(100), mask(190)), ips=None)
    rows = rank_results(load_results(results)[0])
    md = write_report(rows, tmp_path / "rep")[0].read_text()
    assert r"x\|\<img src=y\>\*z\*" in md and r"fw\_\`\[a\](b)\`" in md
    assert not re.search(r"(?<!\\)[<>*`\[\]_]", md.split("|", 1)[1].split("\n\n", 1)[0])  # the table: all escaped
    table = [line for line in format_markdown(rows).splitlines() if line.startswith("|")]
    cells = [len(re.split(r"(?<!\\)\|", line)) for line in table]
    assert len(table) == 4 and len(set(cells)) == 1, table


# ---------------------------------------------------------------- unusable top-k rows (7)

@pytest.mark.parametrize("spoil, needle", [
    (lambda topk, scores: topk.__setitem__((7, 3), topk[7, 1]), "row 7 ({path}) repeats class {cls} in its top-5"),
    (lambda topk, scores: scores.__setitem__((5, 2), np.nan), "row 5 ({path}) has a non-finite score (nan)"),
    (lambda topk, scores: scores.__setitem__((9, 0), np.inf), "row 9 ({path}) has a non-finite score (inf)"),
    (lambda topk, scores: topk.__setitem__((4, 4), 1000), "row 4 ({path}) holds class 1000, outside the ImageNet"),
])
def test_a_run_with_an_unusable_top_k_row_is_refused_in_one_line(tmp_path, spoil, needle):
    paths, y = dataset()
    results = tmp_path / "results"
    run_dir = write_run(results, "pytorch-bad", paths, predictions(y, mask(150), mask(190)))
    with np.load(run_dir / "predictions.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    spoil(arrays["topk_indices"], arrays["topk_scores"])
    np.savez(run_dir / "predictions.npz", **arrays)
    row = int(re.search(r"row (\d+)", needle).group(1))
    expected = needle.format(path=paths[row], cls=arrays["topk_indices"][7, 1])
    with pytest.raises(RankError, match=re.escape(f"{run_dir / 'predictions.npz'}: {expected}")):
        load_results(results)
    one_line_error(zoobench("rank", str(results), timeout=120), f"{run_dir / 'predictions.npz'}: {expected}")


# ---------------------------------------------------------------- safe model names (8)

def test_safe_names():
    for name in ("efficientnet_lite0", "mobilenetv2_0.5", "squeezenet1.1", "vit_b+x", "ResNet-50"):
        assert k8s.check_safe_name(name, "model") == name
    for name in ("../evil", "a/b", ".hidden", "a..b", "", "-x", "a b", "x\n"):
        with pytest.raises(BenchError, match="not a safe file name"):
            k8s.check_safe_name(name, "model")


def render_args(out: Path, *extra: str) -> list[str]:
    return ["k8s", "render", "--data-claim", "val", "--results-claim", "res", "--out", str(out), *extra]


def test_k8s_render_refuses_a_model_name_that_is_a_path(tmp_path, repo_root):
    listings = []
    for image in ("pytorch", "keras", "mxnet"):
        names = ["resnet18", "../../etc/evil"] if image == "pytorch" else ["resnet18"]
        listing = tmp_path / f"{image}.json"
        listing.write_text(json.dumps([{"name": n} for n in names]))
        listings += ["--models-from", f"{image}={listing}"]
    out = tmp_path / "out"
    one_line_error(zoobench(*render_args(out, "--profile", "full", *listings), timeout=120),
                   "pytorch model '../../etc/evil': not a safe file name")
    listing = tmp_path / "pytorch-x.json"
    listing.write_text(json.dumps([{"name": "../x"}]))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for f in (repo_root / "manifests").iterdir():
        (manifests / f.name).write_text(f.read_text())
    profiles = manifests / "profiles.yaml"
    profiles.write_text(profiles.read_text().replace("pytorch: [efficientnet_lite0]", "pytorch: ['../x']", 1))
    one_line_error(zoobench(*render_args(out, "--profile", "sample", "--manifests", str(manifests),
                                         "--models-from", f"pytorch={listing}"), timeout=120),
                   "pytorch model '../x': not a safe file name")
    assert not out.exists()
