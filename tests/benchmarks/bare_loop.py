"""Runs INSIDE a runner image: the same model, fed by the plainest loop a user would write.

Sequential decode + the same preprocessing in the main thread, batched, no prefetch.
Prints one JSON object: images, seconds, images_per_second.
"""
from __future__ import annotations

import json
import sys
import time
from importlib.metadata import entry_points

import numpy as np
from PIL import Image

from zoobench_contract.dataset import list_images
from zoobench_contract.preprocessing import preprocess


def main(model: str, data: str, batch_size: int) -> None:
    backend = next(iter(entry_points(group="zoobench.backend"))).load()()
    spec = next(s for s in backend.models() if s.name == model)
    net = backend.load(spec, "imagenet" if spec.weights_bundled else "random", backend.resolve_device("auto"))
    paths = list_images(data)
    backend.predict(net, np.zeros((batch_size, spec.preprocessing.crop_size, spec.preprocessing.crop_size, 3), np.float32))
    t0 = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        batch = np.stack([preprocess(Image.open(f"{data}/{p}"), spec.preprocessing) for p in paths[i:i + batch_size]])
        backend.predict(net, batch)
    seconds = time.perf_counter() - t0
    print(json.dumps({"images": len(paths), "seconds": seconds, "images_per_second": len(paths) / seconds}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
