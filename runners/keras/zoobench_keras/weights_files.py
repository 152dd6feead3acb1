"""Where each keras.applications model keeps its ImageNet weights in the Keras cache, as data.

keras.applications names each weights file in code (``resnet50_weights_tf_dim_ordering_tf_kernels.h5``,
``efficientnetv2-b0.h5``...) and only asks for it after building the whole model, so the names are
kept here, read off the builders by :func:`probe` (each builder run with a ``get_file`` that records
the name it asks for and stops), so the orchestrator can tell a never-fetched model before starting
its container. ``tests/test_contract_suite.py`` checks the table against :func:`probe` for the smoke
models; after a Keras upgrade, regenerate it: ``python -c "from zoobench_keras.weights_files import
probe; print(probe())"`` in the image.
"""
from __future__ import annotations

import os
from typing import Any, Callable

CACHE_SUBDIR = "models"  # under $KERAS_HOME, as keras.applications' get_file calls use
FILES: dict[str, str] = {
    "convnextbase": "convnext_base.h5",
    "convnextlarge": "convnext_large.h5",
    "convnextsmall": "convnext_small.h5",
    "convnexttiny": "convnext_tiny.h5",
    "convnextxlarge": "convnext_xlarge.h5",
    "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels.h5",
    "densenet169": "densenet169_weights_tf_dim_ordering_tf_kernels.h5",
    "densenet201": "densenet201_weights_tf_dim_ordering_tf_kernels.h5",
    "efficientnetb0": "efficientnetb0.h5",
    "efficientnetb1": "efficientnetb1.h5",
    "efficientnetb2": "efficientnetb2.h5",
    "efficientnetb3": "efficientnetb3.h5",
    "efficientnetb4": "efficientnetb4.h5",
    "efficientnetb5": "efficientnetb5.h5",
    "efficientnetb6": "efficientnetb6.h5",
    "efficientnetb7": "efficientnetb7.h5",
    "efficientnetv2b0": "efficientnetv2-b0.h5",
    "efficientnetv2b1": "efficientnetv2-b1.h5",
    "efficientnetv2b2": "efficientnetv2-b2.h5",
    "efficientnetv2b3": "efficientnetv2-b3.h5",
    "efficientnetv2l": "efficientnetv2-l.h5",
    "efficientnetv2m": "efficientnetv2-m.h5",
    "efficientnetv2s": "efficientnetv2-s.h5",
    "inceptionresnetv2": "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
    "inceptionv3": "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    "mobilenet": "mobilenet_1_0_224_tf.h5",
    "mobilenetv2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
    "mobilenetv3large": "weights_mobilenet_v3_large_224_1.0_float.h5",
    "mobilenetv3small": "weights_mobilenet_v3_small_224_1.0_float.h5",
    "nasnetlarge": "nasnet_large.h5",
    "nasnetmobile": "nasnet_mobile.h5",
    "resnet101": "resnet101_weights_tf_dim_ordering_tf_kernels.h5",
    "resnet101v2": "resnet101v2_weights_tf_dim_ordering_tf_kernels.h5",
    "resnet152": "resnet152_weights_tf_dim_ordering_tf_kernels.h5",
    "resnet152v2": "resnet152v2_weights_tf_dim_ordering_tf_kernels.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    "resnet50v2": "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
    "xception": "xception_weights_tf_dim_ordering_tf_kernels.h5",
}


class _Asked(Exception):
    """Raised by the recording ``get_file`` once the builder named its file."""


def probe(builders: dict[str, Callable[..., Any]]) -> dict[str, str]:
    """Name -> the weights file each builder asks ``get_file`` for (``weights="imagenet"``, full model)."""
    import keras
    from keras.src.utils import file_utils

    found: dict[str, str] = {}
    real = file_utils.get_file
    for name, builder in builders.items():
        def record(fname: str | None = None, origin: str | None = None, *_: Any, **__: Any) -> str:
            found[name] = fname or os.path.basename(origin or "")
            raise _Asked()

        file_utils.get_file = record
        try:
            builder(weights="imagenet", classifier_activation=None)
        except _Asked:
            pass
        finally:
            file_utils.get_file = real
            keras.backend.clear_session()
    return found
