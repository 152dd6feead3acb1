"""`zoobench k8s render`, no Docker and no cluster: every rendered Job validates offline against the
pinned Kubernetes schemas (kubernetes-validate, strict), plus what the schema does not catch: Indexed
completion, one index per model, the local run's exact `predict` arguments per index (the pod script
is run under sh with a stand-in `predict`), the local results layout, the locked-down pod."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from orchestrator.images.manifest import load_manifest

from conftest import one_line_error, zoobench
from orchestrator.engines import k8s, k8s_inputs
from orchestrator.errors import BenchError
from orchestrator.bench.plan import Job, plan_jobs, predict_run_args
from orchestrator.bench.runner import Bench, DataMount
from orchestrator.bench.imagefacts import image_tags
from orchestrator.manifests import MANIFEST_DIR, Profile, get_profile, load_models
from orchestrator.results.ranking import find_runs

K8S_VERSION = "1.30"  # pinned: kubernetes-validate ships its schemas (no network); the Jobs need >= 1.29
CLAIMS = {"data": "imagenet-val", "results": "zoo-results", "weights": "zoo-weights"}
GPUS = 3
CASES = [(p, v) for p in ("seed", "sample") for v in ("cpu", "cuda")]


def render_args(profile: str, variant: str, out: Path, *extra: str) -> list[str]:
    return ["k8s", "render", "--profile", profile, "--variant", variant, "--data-claim", CLAIMS["data"],
            "--results-claim", CLAIMS["results"], "--weights-claim", CLAIMS["weights"], "--out", str(out),
            *(["--gpus", str(GPUS)] if variant == "cuda" else []), *extra]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Each (profile, variant) rendered once through the real CLI (as a user runs it)."""
    found = {}
    for profile, variant in CASES:
        out = tmp_path_factory.mktemp(f"{profile}-{variant}")
        zoobench(*render_args(profile, variant, out), check=True, timeout=120)
        found[(profile, variant)] = out
    return found


def expected_jobs(profile: str, variant: str) -> dict[str, list[Job]]:
    """The jobs a local `zoobench run` plans for the profile, per image, in plan order; a runtime image's
    converted models are not rendered (a pod cannot mount the conversions cache: a note says so)."""
    prof = get_profile(profile)
    runtimes = {n for n, s in load_manifest(MANIFEST_DIR / "images.yaml").items() if s.reads}
    prof = prof.model_copy(update={"models": {i: m for i, m in prof.models.items() if i not in runtimes}})
    jobs = plan_jobs(prof, load_models(), image_tags(MANIFEST_DIR, variant),
                     lambda image: {m: {} for m in prof.models[image]})
    by_image: dict[str, list[Job]] = {}
    for job in jobs:
        by_image.setdefault(job.image, []).append(job)
    return by_image


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, path
    return docs[0]


def container_of(doc: dict) -> dict:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return container


# ---------------------------------------------------------------- the pod script, run for real

FAKE_PREDICT = """#!/bin/sh
# stand-in for the runner image's `predict`: records its arguments, writes the two outputs
printf '%s\\0' "$@" > "$FAKE_ARGS"
echo "zoobench-progress {\\"done\\": 1, \\"total\\": 1, \\"images_per_second\\": 1.0}" >&2
[ -z "${FAKE_SLEEP:-}" ] || sleep "$FAKE_SLEEP"
[ -z "${FAKE_EXIT:-}" ] || { echo "error: fake failure" >&2; exit "$FAKE_EXIT"; }
[ -n "${FAKE_NO_OUTPUT:-}" ] || { echo npz > "$FAKE_OUT/predictions.npz"; echo '{"status": "ok"}' > "$FAKE_OUT/run.json"; }
"""


class Pod:
    """Runs a rendered pod script under /bin/sh, with /out and /results moved into tmp."""

    def __init__(self, tmp: Path, script: str):
        self.tmp, self.results, self.out = tmp, tmp / "results", tmp / "out"
        for d in (self.results, self.out, tmp / "bin", tmp / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        predict = tmp / "bin" / "predict"
        predict.write_text(FAKE_PREDICT)
        predict.chmod(0o755)
        assert "\nOUT=/out\n" in script and "\nRESULTS=/results\n" in script
        self.script = script.replace("\nOUT=/out\n", f"\nOUT={self.out}\n").replace(
            "\nRESULTS=/results\n", f"\nRESULTS={self.results}\n")

    def run(self, index: int | None, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        args_file = self.tmp / "args"
        args_file.unlink(missing_ok=True)
        for f in self.out.iterdir():
            f.unlink()
        environ = {**os.environ, "PATH": f"{self.tmp / 'bin'}:{os.environ['PATH']}", "TMPDIR": str(self.tmp / "tmp"),
                   "FAKE_ARGS": str(args_file), "FAKE_OUT": str(self.out), **env}
        environ.pop("JOB_COMPLETION_INDEX", None)
        if index is not None:
            environ["JOB_COMPLETION_INDEX"] = str(index)
        proc = subprocess.run(["/bin/sh", "-c", self.script, "sh"], capture_output=True, text=True, env=environ,
                              timeout=60)
        args = args_file.read_text().split("\0")[:-1] if args_file.exists() else []
        return proc, args


def local_args(job: Job, variant: str) -> list[str]:
    """What a local Bench passes to `predict` for this job, data at /data (no pixel cache)."""
    bench = object.__new__(Bench)  # _args reads only these; no engine needed
    bench.weights_binds, bench.data = {}, DataMount(k8s_inputs.DATA_MOUNT, [], {None: "sha256:d"})
    return bench._args(job, job.batch_size, "0" if variant == "cuda" else None)


# ---------------------------------------------------------------- every Job: schema + our checks

@pytest.mark.parametrize("profile, variant", CASES)
def test_every_rendered_job_validates_and_holds_what_the_schema_does_not_check(rendered, profile, variant):
    out = rendered[(profile, variant)]
    expected = expected_jobs(profile, variant)
    tags = image_tags(MANIFEST_DIR, variant)
    assert sorted(p.name for p in out.glob("*.yaml")) == sorted(f"{image}.yaml" for image in expected)
    for image, jobs in expected.items():
        doc = load(out / f"{image}.yaml")
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION
        assert (doc["apiVersion"], doc["kind"]) == ("batch/v1", "Job")
        assert k8s_inputs.DNS_LABEL.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
        spec = doc["spec"]
        assert spec["completionMode"] == "Indexed"
        assert spec["completions"] == len(jobs) == spec["maxFailedIndexes"]
        assert spec["parallelism"] == (GPUS if variant == "cuda" else 1)
        assert spec["backoffLimitPerIndex"] == 1 and "backoffLimit" not in spec
        fail_index = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "FailIndex"]
        assert {2, 4} <= set(fail_index[0]["onExitCodes"]["values"]) and 3 not in fail_index[0]["onExitCodes"]["values"]
        assert json.loads(doc["metadata"]["annotations"]["zoobench/models"]) == [j.model for j in jobs]

        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
        psc = pod["securityContext"]
        assert (psc["runAsNonRoot"], psc["runAsUser"], psc["runAsGroup"]) == (True, 1000, 1000)
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        container = container_of(doc)
        assert container["image"] == tags[image]
        csc = container["securityContext"]
        assert csc["allowPrivilegeEscalation"] is False and csc["readOnlyRootFilesystem"] is True
        assert csc["capabilities"] == {"drop": ["ALL"]} and csc["runAsNonRoot"] is True
        assert (csc["runAsUser"], csc["runAsGroup"]) == (1000, 1000) and csc["privileged"] is False

        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert set(volumes) == {m["name"] for m in mounts.values()}
        claim = lambda name: volumes[name]["persistentVolumeClaim"]  # noqa: E731
        assert claim("data") == {"claimName": CLAIMS["data"], "readOnly": True}
        assert claim("weights") == {"claimName": CLAIMS["weights"], "readOnly": True}
        assert claim("results") == {"claimName": CLAIMS["results"]}
        assert mounts["/data"]["readOnly"] is True and mounts["/data"]["name"] == "data"
        assert mounts["/weights"]["readOnly"] is True and mounts["/weights"]["name"] == "weights"
        assert not mounts["/results"].get("readOnly") and mounts["/results"]["name"] == "results"
        for path in ("/tmp", "/out"):
            assert "emptyDir" in volumes[mounts[path]["name"]] and not mounts[path].get("readOnly")

        limits = (container.get("resources") or {}).get("limits", {})
        if variant == "cuda":
            assert limits["nvidia.com/gpu"] == "1"
        else:
            assert "nvidia.com/gpu" not in json.dumps(doc)

        # Completion index i runs the image's i-th model with exactly the local run's arguments and
        # publishes RESULTS/IMAGE-MODEL, as a local run does.
        assert container["command"][:2] == ["/bin/sh", "-c"] and len(container["command"]) == 3
        pod_run = Pod(out / f"pod-{image}", container["command"][2])
        for index, job in enumerate(jobs):
            proc, args = pod_run.run(index)
            assert proc.returncode == 0, proc.stderr
            assert args == local_args(job, variant) == predict_run_args(
                job, job.batch_size, "cuda" if variant == "cuda" else "cpu", "/data", job.weights)
            assert args[args.index("--model") + 1] == job.model and args[args.index("--out") + 1] == "/out"
            final = pod_run.results / job.run_name
            assert sorted(p.name for p in final.iterdir()) == ["predictions.npz", "run.json"]
            assert (pod_run.results / "logs" / f"{job.run_name}.log").read_text().startswith("zoobench-progress")
        assert find_runs(pod_run.results) == sorted(pod_run.results / j.run_name for j in jobs)
        assert not list(pod_run.results.glob("*.partial")) and not list(pod_run.results.glob("*.old"))


def test_the_validator_is_strict_so_a_passing_job_means_something(rendered):
    doc = load(rendered[("sample", "cuda")] / "pytorch.yaml")
    container_of(doc)["securityContext"]["readOnlyRootFileSystem"] = True  # a typo the cluster would ignore
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    doc = load(rendered[("sample", "cuda")] / "pytorch.yaml")
    doc["spec"]["completions"] = "3"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_readme_says_how_to_apply_collect_and_rank(rendered):
    text = (rendered[("seed", "cuda")] / "README.txt").read_text()
    assert "kubectl apply" in text and "zoobench rank" in text and "not run" in text
    assert "request.json" in text and "nvidia.com/gpu" in text
    assert "    20: vgg19_bn" in text  # the index -> model table


# ---------------------------------------------------------------- the pod script's failures

@pytest.fixture
def lite0_pod(tmp_path) -> tuple[Pod, Job]:
    prof = get_profile("sample")
    tags = image_tags(MANIFEST_DIR, "cpu")
    jobs = plan_jobs(prof, load_models(), tags, lambda image: {m: {} for m in prof.models[image]}, only=["pytorch/efficientnet_lite0"])
    target = k8s.Target(profile="sample", data_claim="d", results_claim="r")
    return Pod(tmp_path, k8s.pod_script(jobs, target)), jobs[0]


def test_a_failed_predict_publishes_nothing_and_exits_with_its_code(lite0_pod):
    pod, job = lite0_pod
    final = pod.results / job.run_name
    proc, _ = pod.run(0, FAKE_EXIT="4")
    assert proc.returncode == 4 and f"error: {job.run_name}: predict exited 4" in proc.stderr
    assert not final.exists() and not list(pod.results.glob("*.partial"))
    proc, _ = pod.run(0, FAKE_NO_OUTPUT="1")
    assert proc.returncode == 1 and "without writing predictions.npz" in proc.stderr and not final.exists()
    proc, _ = pod.run(1)
    assert proc.returncode == 2 and "completion index 1 names no model of this Job (0..0)" in proc.stderr
    proc, _ = pod.run(None)
    assert proc.returncode == 2 and "completion index unset" in proc.stderr


def test_a_rerun_replaces_the_published_run_and_a_stale_partial_is_dropped(lite0_pod):
    pod, job = lite0_pod
    final = pod.results / job.run_name
    (pod.results / f"{job.run_name}.partial").mkdir()  # left by a pod killed mid-run
    assert pod.run(0)[0].returncode == 0
    (final / "predictions.npz").write_text("old")
    assert pod.run(0)[0].returncode == 0
    assert (final / "predictions.npz").read_text() == "npz\n"
    assert sorted(p.name for p in pod.results.iterdir()) == ["logs", job.run_name]


def test_the_model_timeout_is_enforced_in_the_pod(lite0_pod):
    pod, job = lite0_pod
    assert f"TIMEOUT={job.timeout_s}" in pod.script
    pod.script = pod.script.replace(f"TIMEOUT={job.timeout_s}", "TIMEOUT=1")
    proc, _ = pod.run(0, FAKE_SLEEP="20")
    assert proc.returncode == 124 and "timed out after 1 s" in proc.stderr
    assert not (pod.results / job.run_name).exists()


# ---------------------------------------------------------------- planning offline, limits, names

def test_listing_choice_without_docker(tmp_path, monkeypatch):
    monkeypatch.setattr(k8s_inputs.imagefacts, "cached_listing", lambda tag: None)
    tags = {"pytorch": "zoobench/pytorch:cpu-x"}
    notes: list[str] = []
    explicit = Profile(models={"pytorch": ["resnet50", "nosuchnet"]})
    served = k8s_inputs.served_offline(explicit, tags, {}, notes.append)
    assert set(served("pytorch")) == {"resnet50", "nosuchnet"} and "unchecked" in notes[0]
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([{"name": "resnet50", "preprocessing": {}}]))
    checked = k8s_inputs.served_offline(explicit, tags, {"pytorch": listing}, notes.append)
    with pytest.raises(BenchError, match="unknown model.*nosuchnet"):
        plan_jobs(explicit, load_models(), tags, checked)
    monkeypatch.setattr(k8s_inputs.imagefacts, "cached_listing", lambda tag: [{"name": "resnet50"}])
    cached = k8s_inputs.served_offline(explicit, tags, {}, notes.append)
    assert set(cached("pytorch")) == {"resnet50"}
    monkeypatch.setattr(k8s_inputs.imagefacts, "cached_listing", lambda tag: None)
    every = k8s_inputs.served_offline(Profile(models={"pytorch": "all"}), tags, {}, notes.append)
    with pytest.raises(BenchError, match="--models-from pytorch=FILE"):
        every("pytorch")
    assert len(notes) == 1


def test_memory_limits_and_names():
    assert [k8s_inputs.quantity(m) for m in ("512m", "8g", "1024", "64k", "2G")] == ["512Mi", "8Gi", "1024", "64Ki", "2Gi"]
    job = lambda model, memory: Job("pytorch", "zoobench/pytorch:cpu-x", model, "imagenet", 8, 60, {}, None,  # noqa: E731
                                    memory=memory)
    target = k8s.Target(profile="p", data_claim="d", results_claim="r", variant="cuda", registry="reg.example:5000/t")
    doc = k8s.render_job("pytorch", "zoobench/pytorch:cpu-x", [job("a", "512m"), job("b", "8g")], target)
    container = container_of(doc)
    assert container["resources"] == {"limits": {"memory": "8Gi", "nvidia.com/gpu": "1"},
                                      "requests": {"memory": "8Gi"}}
    assert container["image"] == "reg.example:5000/t/zoobench/pytorch:cpu-x"
    assert doc["spec"]["template"]["spec"]["volumes"][1] == {"name": "weights", "emptyDir": {}}
    notes: list[str] = []
    mixed = k8s.render_job("pytorch", "t", [job("a", "512m"), job("b", None)], target, notes.append)
    assert "memory" not in container_of(mixed)["resources"]["limits"] and notes
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION
    moved = k8s.render_job("pytorch", "t", [job("a", None)], k8s.Target(
        profile="p", data_claim="d", results_claim="r", data_path=k8s_inputs.check_data_path("/mnt/val/")))
    assert {"mountPath": "/mnt/val", "name": "data", "readOnly": True} in container_of(moved)["volumeMounts"]
    assert "--data /mnt/val --out /out" in container_of(moved)["command"][2]
    assert "resources" not in container_of(moved)  # cpu, no memory limit: nothing to ask for
    long = k8s.job_name("a_profile_with_a_very_long_name_that_goes_on_and_on", "pytorch")
    assert k8s_inputs.DNS_LABEL.match(long) and len(long) <= 50


def test_a_stale_render_is_removed_and_other_files_are_kept(tmp_path):
    out = tmp_path / "k8s"
    zoobench(*render_args("sample", "cpu", out), check=True)
    (out / "mine.yaml").write_text("kind: ConfigMap\n")
    zoobench(*render_args("sample", "cpu", out, "--model", "keras/efficientnet_lite0"), check=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "keras.yaml", "mine.yaml"]


# ---------------------------------------------------------------- bad input: one line, nothing written

@pytest.mark.parametrize("change, needle", [
    (["--profile", "nosuch"], "unknown profile 'nosuch'"),
    (["--data-claim", "ImageNet_Val"], "--data-claim 'ImageNet_Val': not a valid Kubernetes name (DNS-1123"),
    (["--results-claim", "-results"], "--results-claim '-results': not a valid Kubernetes name"),
    (["--namespace", "a.b"], "--namespace 'a.b': not a valid Kubernetes name (DNS-1123 label"),
    (["--variant", "rocm"], "--variant 'rocm': use cpu or cuda"),
    (["--gpus", "0"], "--gpus"),
    (["--weights", "/etc/hostname"], "a file on this host is not visible to the pods"),
    (["--precision", "fp16"], "--precision 'fp16'"),
    (["--image-registry", "bad registry"], "--image-registry 'bad registry'"),
    (["--data-path", "/usr/data"], "--data-path /usr/data: would hide or sit inside"),
    (["--models-from", "tensorflow=x.json"], "the profile has no image 'tensorflow'"),
    (["--model", "nosuchnet"], "--model nosuchnet: matches no model"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, change, needle):
    args = render_args("sample", "cpu", tmp_path / "out")
    flag = change[0]
    if flag in args:
        i = args.index(flag)
        args[i:i + 2] = change
    else:
        args += change
    one_line_error(zoobench(*args), needle)
    assert not (tmp_path / "out").exists()


def test_a_missing_claim_is_one_line(tmp_path):
    args = render_args("sample", "cpu", tmp_path / "out")
    i = args.index("--data-claim")
    del args[i:i + 2]
    one_line_error(zoobench(*args), "--data-claim")
    assert not (tmp_path / "out").exists()
