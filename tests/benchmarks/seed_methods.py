"""Runs INSIDE a runner image: ResNet-50 (random weights) fed the way the published seed table did it.

  keras:   keras.utils.load_img(path, target_size=(224, 224)) + img_to_array + preprocess_input,
           then model.predict(x[None]) one image at a time (the published table's method);
  pytorch: torchvision.datasets.ImageFolder + the weights' transforms (IMAGENET1K_V1, the seed's
           weights) + torch.utils.data.DataLoader(batch_size=32, num_workers=2) in torch.inference_mode().

Only the loop over the images is timed (after building the model and one warm-up call), like
bare_loop.py. Prints one JSON object: method, images, seconds, images_per_second.
Usage: python seed_methods.py keras|pytorch DATA [BATCH_SIZE]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def keras_method(data: str) -> dict:
    import numpy as np
    import keras
    from keras.applications.resnet50 import ResNet50, preprocess_input

    keras.utils.set_random_seed(0)
    model = ResNet50(weights=None)
    paths = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and not any(part.startswith(".") for part in p.relative_to(data).parts))
    model.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0)
    t0 = time.perf_counter()
    for p in paths:
        img = keras.utils.load_img(p, target_size=(224, 224))
        x = preprocess_input(keras.utils.img_to_array(img))
        model.predict(x[None], verbose=0)
    seconds = time.perf_counter() - t0
    return {"method": "keras load_img + model.predict, one image at a time", "images": len(paths),
            "seconds": seconds, "images_per_second": len(paths) / seconds}


def pytorch_method(data: str, batch_size: int) -> dict:
    import torch
    import torchvision
    from torchvision.models import ResNet50_Weights

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    dataset = torchvision.datasets.ImageFolder(data, transform=ResNet50_Weights.IMAGENET1K_V1.transforms())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=2)
    with torch.inference_mode():
        model(torch.zeros(batch_size, 3, 224, 224))
        t0 = time.perf_counter()
        for x, _ in loader:
            model(x)
        seconds = time.perf_counter() - t0
    return {"method": f"torchvision ImageFolder + DataLoader(batch_size={batch_size}, num_workers=2)",
            "images": len(dataset), "seconds": seconds, "images_per_second": len(dataset) / seconds}


def main() -> None:
    which, data = sys.argv[1], sys.argv[2]
    batch_size = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    result = keras_method(data) if which == "keras" else pytorch_method(data, batch_size)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
