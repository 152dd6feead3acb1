"""Where things live on the host, defined once: the checkout root and the folders below it."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout (the image builds, manifests and caches are below it)
CACHE = ROOT / ".cache"
MANIFEST_DIR = ROOT / "manifests"
MODELS_CACHE = CACHE / "models"  # each image's cached `predict list`/`info`/image id, per tag
WEIGHTS_ENV = "ZOOBENCH_WEIGHTS_CACHE"  # a weights cache elsewhere (e.g. on a cluster's shared filesystem)
WEIGHTS_CACHE = Path(os.environ.get(WEIGHTS_ENV) or CACHE / "weights").expanduser().absolute()
CONVERTED_ENV = "ZOOBENCH_CONVERTED_CACHE"  # the conversions cache elsewhere (a cluster's shared filesystem)
CONVERTED_CACHE = Path(os.environ.get(CONVERTED_ENV) or CACHE / "converted").expanduser().absolute()
PIXEL_CACHE = CACHE / "pixels"  # default pixel cache root (ZOOBENCH_PIXEL_CACHE overrides it)
DATASCAN_CACHE = CACHE / "datascan"
SAMPLE_DATA = CACHE / "sample"
LOGS = CACHE / "logs"
RESULTS = ROOT / "results"
K8S = ROOT / "k8s"
