"""`zoobench weights fetch --mirror` for real: an HTTP server on 127.0.0.1 laid out like the official
URLs (MIRROR/HOST/PATH) serves weights files made here by the images themselves (random-init'd
architectures, named as each framework's loader asks), the fetch containers run on the host network,
and the frameworks' own checks decide: Keras's MobileNetV2 file (its loader checks the name, no hash)
lands in a temporary weights cache byte for byte; torchvision's file, whose name carries the sha256
prefix of the real weights, is refused by torch's own hash check and nothing is left; MXNet asks its
model store's repository under the mirror."""
from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import zoobench

pytestmark = pytest.mark.docker

KERAS_MODEL, TORCH_MODEL, MXNET_MODEL = "mobilenetv2", "squeezenet1_1", "squeezenet1.1"
KERAS_SCRIPT = f"""
import json, os, h5py, keras
from keras.src.utils import file_utils
asked = {{}}
class Asked(Exception):
    pass
def record(fname=None, origin=None, *args, **kwargs):
    asked.update(fname=fname or os.path.basename(origin), origin=origin,
                 file_hash=kwargs.get("file_hash") or kwargs.get("md5_hash"))
    raise Asked()
real, file_utils.get_file = file_utils.get_file, record
try:
    keras.applications.MobileNetV2(weights="imagenet", classifier_activation=None)
except Asked:
    pass
file_utils.get_file = real
model = keras.applications.MobileNetV2(weights=None, classifier_activation=None)
from keras.src.legacy.saving import legacy_h5_format
with h5py.File("/out/" + asked["fname"], "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
print(json.dumps(asked))
"""
TORCH_SCRIPT = f"""
import json, torch
from torchvision import models as tvm
torch.manual_seed(0)
torch.save(tvm.get_model("{TORCH_MODEL}", weights=None).state_dict(), "/out/state.pth")
print(json.dumps({{"url": tvm.get_model_weights("{TORCH_MODEL}").DEFAULT.url}}))
"""
MXNET_SCRIPT = f"""
import json
from mxnet.gluon.model_zoo import model_store
print(json.dumps({{"file": "{MXNET_MODEL}-" + model_store.short_hash("{MXNET_MODEL}"),
                  "repo": getattr(model_store, "apache_repo_url", None)}}))
"""


def in_image(tag: str, script: str, out: Path) -> dict:
    """``script`` run by the image's Python (no network), ``/out`` = ``out``; its last JSON line."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o777)  # the image runs as its non-root user
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{out}:/out", "--entrypoint", "python",
                           tag, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def listing(tag: str, model: str) -> dict:
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", tag, "list"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return next(m for m in json.loads(proc.stdout) if m["name"] == model)


class Mirror:
    """A threaded HTTP server on 127.0.0.1: ``files`` (URL path -> bytes), every requested path kept."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.asked = files, []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                mirror.asked.append(self.path)
                body = mirror.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/site-mirror"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def path_of(self, official: str) -> str:
        """Where the mirror layout puts ``official``: /site-mirror/HOST/PATH."""
        parts = urlsplit(official)
        return f"/site-mirror/{parts.hostname}{parts.path}"


def fetch(mirror: Mirror, weights: Path, *models: str):
    args = ["weights", "fetch", "--profile", "full", "--network", "host", "--mirror", mirror.url]
    for model in models:
        args += ["--model", model]
    return zoobench(*args, env={"ZOOBENCH_WEIGHTS_CACHE": str(weights)}, timeout=1800)


@pytest.fixture
def weights_cache(tmp_path) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    folder.chmod(0o777)  # on a non-root host the fetch container runs as the invoking user; either way it writes
    return folder


def test_keras_weights_fetched_through_the_mirror_land_in_the_cache_byte_for_byte(image_tags, tmp_path, weights_cache):
    made = in_image(image_tags["keras"], KERAS_SCRIPT, tmp_path / "keras")
    assert made["file_hash"] is None, f"keras now checks a hash for {KERAS_MODEL} ({made}); pick an unhashed model"
    body = (tmp_path / "keras" / made["fname"]).read_bytes()
    mirror = Mirror({})
    mirror.files[mirror.path_of(made["origin"])] = body
    try:
        proc = fetch(mirror, weights_cache, f"keras/{KERAS_MODEL}")
    finally:
        mirror.server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert mirror.asked == [mirror.path_of(made["origin"])], mirror.asked  # nothing asked of the internet
    assert "fetched: 1 (keras/mobilenetv2)" in proc.stderr, proc.stderr
    rel = listing(image_tags["keras"], KERAS_MODEL)["weights_files"]["imagenet"]
    landed = weights_cache / rel
    assert landed.is_file(), sorted(p.relative_to(weights_cache).as_posix() for p in weights_cache.rglob("*"))
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == hashlib.sha256(body).hexdigest()


def test_torch_and_mxnet_ask_the_mirror_and_their_own_hash_checks_refuse_a_stand_in(image_tags, tmp_path,
                                                                                     weights_cache):
    made = in_image(image_tags["pytorch"], TORCH_SCRIPT, tmp_path / "torch")
    gluon = in_image(image_tags["mxnet"], MXNET_SCRIPT, tmp_path / "mxnet")
    mirror = Mirror({})
    torch_path = mirror.path_of(made["url"])
    mirror.files[torch_path] = (tmp_path / "torch" / "state.pth").read_bytes()  # real architecture, not the real weights
    repo = gluon["repo"] or "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/"
    try:
        proc = fetch(mirror, weights_cache, f"pytorch/{TORCH_MODEL}", f"mxnet/{MXNET_MODEL}")
    finally:
        mirror.server.shutdown()
    assert proc.returncode == 1, proc.stderr
    assert torch_path in mirror.asked, mirror.asked
    assert any(p.startswith(f"/site-mirror/{urlsplit(repo).hostname}/gluon/models/{gluon['file']}") for p in mirror.asked), \
        mirror.asked
    assert all(p.startswith("/site-mirror/") for p in mirror.asked), mirror.asked
    assert "hash" in proc.stderr and "weights of 2 of 2 model(s) could not be fetched" in proc.stderr, proc.stderr
    assert not list(weights_cache.rglob(f"{TORCH_MODEL}-*.pth")), "torch kept a file that failed its hash check"
