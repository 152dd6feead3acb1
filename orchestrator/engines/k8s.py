"""Render a bench profile for Kubernetes: one batch/v1 Indexed Job per image, one completion index per model.

Nothing here talks to a cluster or to a Docker engine. The jobs are planned by the same
:func:`~orchestrator.bench.plan_jobs` as a local run and every pod runs ``predict`` with the
arguments :func:`~orchestrator.bench.predict_run_args` makes for a local run, so a model gives the
same run on both. Each pod's command is a short POSIX ``sh`` script (the runner images have the
``predict`` entry point, ``sh`` and coreutils, nothing else is needed): a ``case`` on
``$JOB_COMPLETION_INDEX`` (set by Kubernetes in every pod of an Indexed Job) picks the model's
arguments, ``predict`` writes into an ``emptyDir`` at ``/out`` (as in a local container), and after
``predict`` exits 0 the script copies the two outputs into ``RESULTS/<image>-<model>.partial`` on the
results claim and renames it to ``RESULTS/<image>-<model>``: the local results layout, which
``zoobench rank`` reads (so every image and model name must be one safe path component,
:func:`check_safe_name`, refused in one line before anything is written). The objects are the
official ``kubernetes`` client models, serialised with ``ApiClient().sanitize_for_serialization``.

What a local run has and a rendered Job does not: ``request.json`` (the resume record needs the
Docker image id and the host's data digest, neither known in a pod; a local ``zoobench run`` on a
collected folder therefore runs those models again rather than trusting them), the pixel cache,
and halving the batch size after an out-of-memory exit (Kubernetes retries the index once, as is).
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from kubernetes import client as k

from zoobench_contract.backend import WEIGHTS_MOUNT
from zoobench_contract.cli import EXIT_USAGE, EXIT_WEIGHTS

from ..bench import containers
from ..bench.containers import EXIT_TIMEOUT
from ..bench.layout import OUT_MOUNT, OUTPUTS, PARTIAL_SUFFIX
from ..bench.plan import Job, check_safe_name, predict_run_args
from ..errors import BenchError
from .k8s_inputs import DATA_MOUNT, RESULTS_MOUNT, SHM_MOUNT, memory_bytes, quantity

CONTAINER = "predict"
GPU_RESOURCE = "nvidia.com/gpu"
BACKOFF_LIMIT_PER_INDEX = 1
# predict's exit codes that a second pod would meet again: bad input, weights unavailable, and the
# script's per-model timeout (coreutils `timeout`: 124). They fail the index at once (no retry).
NO_RETRY_EXIT_CODES = (EXIT_USAGE, EXIT_WEIGHTS, EXIT_TIMEOUT)
KILL_AFTER_S = 30  # after the timeout's SIGTERM, SIGKILL
MARKER = "# rendered by `zoobench k8s render`"
README = "README.txt"
MIN_KUBERNETES = "1.29"  # backoffLimitPerIndex, podReplacementPolicy, FailIndex: beta and on by default; GA in 1.33

_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------- the pod

@dataclass(frozen=True)
class Target:
    """Where and how the Jobs run: claims, variant, parallelism, namespace, image registry."""

    profile: str
    data_claim: str
    results_claim: str
    weights_claim: str | None = None
    variant: str = "cpu"
    parallelism: int = 1
    namespace: str | None = None
    registry: str | None = None
    data_path: str = DATA_MOUNT
    slot: str | None = None  # the evaluation set's results sub-folder (None: the default set, at the top)

    @property
    def device(self) -> str:
        return "cuda" if self.variant == "cuda" else "cpu"

    def image_ref(self, tag: str) -> str:
        return f"{self.registry}/{tag}" if self.registry else tag


def pod_args(job: Job, target: Target) -> list[str]:
    """The ``predict`` arguments of one model's pod: exactly what a local Bench passes for it (no
    pixel cache: each pod decodes its images)."""
    return predict_run_args(job, job.batch_size, target.device, target.data_path, job.weights, pixels=False)


def pod_script(jobs: list[Job], target: Target) -> str:
    """The pod's command: completion index -> model, ``predict``, then publish like a local run."""
    q = shlex.quote
    outputs = " ".join(f'"$OUT/{name}"' for name in OUTPUTS)
    lines = [
        "# zoobench: completion index -> one model; `predict run` with the arguments of a local run,",
        "# then RESULTS/NAME.partial renamed to RESULTS/NAME, as a local run publishes it.",
        "set -u",
        f"OUT={OUT_MOUNT}",
        f"RESULTS={RESULTS_MOUNT}" + (f"/{target.slot}" if target.slot else ""),
        'case "${JOB_COMPLETION_INDEX:-}" in',
    ]
    for index, job in enumerate(jobs):
        lines.append(f"  {index}) NAME={q(job.run_name)}; TIMEOUT={job.timeout_s}")
        lines.append(f"     set -- {' '.join(q(a) for a in pod_args(job, target))} ;;")
    lines += [
        f'  *) echo "error: completion index ${{JOB_COMPLETION_INDEX:-unset}} names no model of this Job '
        f'(0..{len(jobs) - 1})" >&2; exit 2 ;;',
        "esac",
        'FINAL="$RESULTS/$NAME"',
        f'PARTIAL="$FINAL{PARTIAL_SUFFIX}"',
        'fail() { rm -rf "$PARTIAL"; echo "error: $NAME: $1" >&2; exit "$2"; }',
        'mkdir -p "$RESULTS/logs" || fail "cannot write to the results volume at $RESULTS" 1',
        'rm -rf "$PARTIAL"',
        'RC="${TMPDIR:-/tmp}/zoobench-rc"',
        f'{{ timeout -k {KILL_AFTER_S} "$TIMEOUT" predict "$@" 2>&1; echo "$?" > "$RC"; }} '
        '| tee "$RESULTS/logs/$NAME.log"',
        'rc=$(cat "$RC" 2>/dev/null) || rc=1',
        '[ "$rc" != 124 ] || fail "timed out after $TIMEOUT s (timeout_s in manifests/models.yaml)" 124',
        '[ "$rc" = 0 ] || fail "predict exited $rc (log: $RESULTS/logs/$NAME.log)" "$rc"',
        f"for f in {' '.join(OUTPUTS)}; do",
        '  [ -f "$OUT/$f" ] || fail "predict exited 0 without writing $f" 1',
        "done",
        f'mkdir "$PARTIAL" && cp {outputs} "$PARTIAL/" '
        '|| fail "cannot write $PARTIAL" 1',
        'rm -rf "$FINAL.old"',
        'if [ -e "$FINAL" ]; then mv "$FINAL" "$FINAL.old" || fail "cannot move the old $FINAL aside" 1; fi',
        'mv "$PARTIAL" "$FINAL" || fail "cannot rename $PARTIAL to $FINAL" 1',
        'rm -rf "$FINAL.old"',
        'echo "zoobench: published $FINAL"',
    ]
    return "\n".join(lines) + "\n"


def label_value(text: str) -> str:
    value = _LABEL_VALUE.sub("-", text)[:63].strip("-_.")
    return value or "x"


def job_name(profile: str, image: str) -> str:
    """``zoobench-PROFILE-IMAGE`` as a DNS-1123 label short enough for the pods' hostnames."""
    raw = f"zoobench-{profile}-{image}".lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")
    if len(name) > 50 or name != raw:
        name = f"{name[:43].rstrip('-')}-{hashlib.sha256(raw.encode()).hexdigest()[:6]}"
    return name


def memory_limit(jobs: list[Job], note: Callable[[str], None]) -> str | None:
    """One pod template per Job: the largest memory limit of its models, when every model has one."""
    limits = [j.memory for j in jobs]
    if not any(limits):
        return None
    if not all(limits):
        note(f"{jobs[0].image}: only some models have a memory limit in manifests/models.yaml; the Job sets none "
             "(its pods share one template)")
        return None
    return quantity(max(limits, key=lambda m: memory_bytes(m or "0")))


def pod_resources(jobs: list[Job], target: Target, note: Callable[[str], None]) -> k.V1ResourceRequirements | None:
    """The pod's memory limit and request (:func:`memory_limit`) and, for cuda, one GPU; None when neither."""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    memory = memory_limit(jobs, note)
    if memory:
        limits["memory"] = requests["memory"] = memory
    if target.variant == "cuda":
        limits[GPU_RESOURCE] = "1"
    return k.V1ResourceRequirements(limits=limits, requests=requests or None) if limits else None


def container_spec(tag: str, jobs: list[Job], target: Target, env: dict[str, str],
                   resources: k.V1ResourceRequirements | None) -> k.V1Container:
    """The one ``predict`` container: the pod script, hardened like a local container, its mounts."""
    uid = containers.IMAGE_UID
    return k.V1Container(
        name=CONTAINER,
        image=target.image_ref(tag),
        image_pull_policy="IfNotPresent",  # tags are content hashes: a tag never names another image
        command=["/bin/sh", "-c", pod_script(jobs, target)],
        env=[k.V1EnvVar(name=key, value=value) for key, value in env.items()],
        resources=resources,
        security_context=k.V1SecurityContext(
            run_as_non_root=True, run_as_user=uid, run_as_group=uid, privileged=False,
            allow_privilege_escalation=False, read_only_root_filesystem=True,
            capabilities=k.V1Capabilities(drop=["ALL"]), seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volume_mounts=[
            k.V1VolumeMount(name="data", mount_path=target.data_path, read_only=True),
            k.V1VolumeMount(name="weights", mount_path=WEIGHTS_MOUNT, read_only=True),
            k.V1VolumeMount(name="results", mount_path=RESULTS_MOUNT),
            k.V1VolumeMount(name="out", mount_path=OUT_MOUNT),
            k.V1VolumeMount(name="tmp", mount_path="/tmp"),
            k.V1VolumeMount(name="shm", mount_path=SHM_MOUNT),
        ],
    )


def pod_volumes(target: Target, shm_size: str) -> list[k.V1Volume]:
    """The claims (data and weights read-only) and the scratch volumes, in the order of the mounts."""
    weights = (k.V1Volume(name="weights", persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(
        claim_name=target.weights_claim, read_only=True)) if target.weights_claim
        else k.V1Volume(name="weights", empty_dir=k.V1EmptyDirVolumeSource()))  # bundled weights only
    return [
        k.V1Volume(name="data", persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(
            claim_name=target.data_claim, read_only=True)),
        weights,
        k.V1Volume(name="results", persistent_volume_claim=k.V1PersistentVolumeClaimVolumeSource(
            claim_name=target.results_claim)),
        k.V1Volume(name="out", empty_dir=k.V1EmptyDirVolumeSource()),
        k.V1Volume(name="tmp", empty_dir=k.V1EmptyDirVolumeSource()),
        k.V1Volume(name="shm", empty_dir=k.V1EmptyDirVolumeSource(
            medium="Memory", size_limit=quantity(shm_size))),
    ]


def pod_spec(container: k.V1Container, volumes: list[k.V1Volume]) -> k.V1PodSpec:
    """A pod that runs once, with no service account token or service links, as the image's user."""
    uid = containers.IMAGE_UID
    return k.V1PodSpec(
        restart_policy="Never",
        automount_service_account_token=False,
        enable_service_links=False,
        security_context=k.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=uid, run_as_group=uid, fs_group=uid,
            fs_group_change_policy="OnRootMismatch", seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[container],
        volumes=volumes,
    )


def failure_policy() -> k.V1PodFailurePolicy:
    """:data:`NO_RETRY_EXIT_CODES` fail the index at once; a disrupted pod (eviction, preemption) is not counted."""
    return k.V1PodFailurePolicy(rules=[
        k.V1PodFailurePolicyRule(action="FailIndex", on_exit_codes=k.V1PodFailurePolicyOnExitCodesRequirement(
            container_name=CONTAINER, operator="In", values=list(NO_RETRY_EXIT_CODES))),
        k.V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[
            k.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")]),
    ])


def render_job(image: str, tag: str, jobs: list[Job], target: Target,
               note: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """The Indexed Job of one image, as the plain dict ``kubectl apply`` reads."""
    labels = {"app.kubernetes.io/name": "zoobench", "app.kubernetes.io/managed-by": "zoobench",
              "zoobench/profile": label_value(target.profile), "zoobench/image": label_value(image),
              "zoobench/variant": target.variant}
    local = containers.hardened()  # the local containers' settings: the pods get their equivalent
    env = {**local["environment"], "ZOOBENCH_IMAGE_TAG": tag}
    container = container_spec(tag, jobs, target, env, pod_resources(jobs, target, note))
    pod = pod_spec(container, pod_volumes(target, local["shm_size"]))
    n = len(jobs)
    job = k.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k.V1ObjectMeta(
            name=job_name(target.profile + (f"-{target.slot}" if target.slot else ""), image), namespace=target.namespace, labels=labels,
            annotations={"zoobench/image-tag": tag,
                         "zoobench/models": json.dumps([j.model for j in jobs])},  # completion index -> model
        ),
        spec=k.V1JobSpec(
            completion_mode="Indexed",
            completions=n,
            parallelism=target.parallelism,
            backoff_limit_per_index=BACKOFF_LIMIT_PER_INDEX,
            max_failed_indexes=n,  # one model's failure never stops the others
            pod_replacement_policy="Failed",  # a retry starts only once the failed pod is gone
            pod_failure_policy=failure_policy(),
            template=k.V1PodTemplateSpec(metadata=k.V1ObjectMeta(labels=labels), spec=pod),
        ),
    )
    return k.ApiClient().sanitize_for_serialization(job)


def render(jobs: list[Job], target: Target, note: Callable[[str], None] = lambda m: None) -> dict[str, dict[str, Any]]:
    """image -> its Indexed Job; completion index i runs the image's i-th job in plan order. Every image
    and model name must be safe as a path component (:func:`check_safe_name`): it names RESULTS/IMAGE-MODEL."""
    by_image: dict[str, list[Job]] = {}
    for job in jobs:
        check_safe_name(job.image, "image")
        check_safe_name(job.model, f"{job.image} model")
        by_image.setdefault(job.image, []).append(job)
    return {image: render_job(image, group[0].tag, group, target, note) for image, group in by_image.items()}


# ---------------------------------------------------------------- files

class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None  # the pod script stays readable
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def readme(rendered: dict[str, dict[str, Any]], target: Target, sample: bool, folder: Path) -> str:
    ns = f" -n {target.namespace}" if target.namespace else ""
    lines = [
        f"zoobench profile {target.profile!r}, {target.variant} variant: one Kubernetes Indexed Job per image.",
        "Rendered and schema-checked by zoobench, not run by it: no cluster runs on zoobench's own machines.",
        f"Needs Kubernetes >= {MIN_KUBERNETES} (backoffLimitPerIndex, podFailurePolicy FailIndex)"
        + (" and the NVIDIA device plugin (nvidia.com/gpu)." if target.variant == "cuda" else "."),
        "",
        "Before applying:",
        f"  * the images, pushed where the nodes pull from: {', '.join(sorted({j['spec']['template']['spec']['containers'][0]['image'] for j in rendered.values()}))}",
        f"    (`zoobench images build --variant {target.variant}`; with --image-registry PREFIX: "
        "`docker tag TAG PREFIX/TAG && docker push PREFIX/TAG`);",
        f"  * PersistentVolumeClaims{' in namespace ' + target.namespace if target.namespace else ''}: "
        f"{target.data_claim} (the validation images: synset sub-folders at its root, read-only, mounted at "
        f"{target.data_path}"
        + ("; `zoobench data sample --out DIR` makes the embedded sample set" if sample else "") + "), "
        f"{target.results_claim} (writable, ReadWriteMany when --gpus > 1 spreads pods over nodes)"
        + (f", {target.weights_claim} (the content of .cache/weights after `zoobench weights fetch`, read-only)"
           if target.weights_claim else "; no --weights-claim: only weights bundled in the images load, the other "
           "models exit 4 (weights unavailable)") + ".",
        "",
        "Apply and watch:",
        f"  kubectl apply{ns} -f {folder}",
        f"  kubectl get jobs{ns} -l zoobench/profile={label_value(target.profile)}",
        f"  kubectl get pods{ns} -l job-name=JOB -L batch.kubernetes.io/job-completion-index",
        f"  kubectl logs{ns} POD",
        "",
        "Each pod runs the model of its completion index (JOB_COMPLETION_INDEX) with the same `predict run`",
        "arguments as a local `zoobench run`, and publishes RESULTS/IMAGE-MODEL (predictions.npz + run.json)",
        "through RESULTS/IMAGE-MODEL.partial, with its log in RESULTS/logs/IMAGE-MODEL.log. Exit codes 2 (bad",
        "input), 4 (weights unavailable) and 124 (timeout_s) fail the model's index at once; any other failure",
        f"is retried once (backoffLimitPerIndex {BACKOFF_LIMIT_PER_INDEX}); the other models go on either way.",
        "",
        "Collect and rank: copy the results claim's content to a local folder (e.g. kubectl cp from a pod that",
        "mounts it), then",
        "  zoobench rank FOLDER      (and zoobench report FOLDER)",
        "The pods write no request.json (the resume record of a local run needs the Docker image id and the",
        "host's data digest): a local `zoobench run --results FOLDER` runs those models again rather than reuse them.",
        "",
        "Jobs (completion index: model):",
    ]
    for image, doc in rendered.items():
        models = json.loads(doc["metadata"]["annotations"]["zoobench/models"])
        lines.append(f"  {image}.yaml: Job {doc['metadata']['name']}, {len(models)} model(s), parallelism "
                     f"{doc['spec']['parallelism']}")
        lines += [f"    {i}: {m}" for i, m in enumerate(models)]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, rendered: dict[str, dict[str, Any]], target: Target, sample: bool) -> list[Path]:
    """``IMAGE.yaml`` per Job plus README.txt; earlier renders of images no longer rendered are removed
    (``kubectl apply -f DIR`` would apply them too)."""
    written: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*.yaml"):
            if old.stem not in rendered and old.read_text(errors="replace").startswith(MARKER):
                old.unlink()
        header = (f"{MARKER} from profile {target.profile!r} ({target.variant}); edit manifests/ and render again "
                  "rather than editing this file\n")
        files = {f"{image}.yaml": header + dump(doc) for image, doc in rendered.items()}
        files[README] = readme(rendered, target, sample, out_dir)
        for name, text in files.items():
            path = out_dir / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text)
            tmp.replace(path)
            written.append(path)
    except OSError as exc:
        raise BenchError(f"--out {out_dir}: {exc.strerror or exc}; pass a writable folder") from None
    return written
