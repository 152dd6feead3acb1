"""The predict contract, in-process, with a tiny numpy backend standing in for a framework."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import predict_in_process
from zoobench_contract import cli
from zoobench_contract.backend import ModelSpec
from zoobench_contract.outputs import read_predictions
from zoobench_contract.preprocessing import Preprocessing


class NumpyBackend:
    """A fixed random linear classifier on the preprocessed pixels."""

    framework = "numpy"

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.fail_with = fail_with
        self.spec = ModelSpec("linear", Preprocessing(crop_size=16, resize_size=20), "fixed seed 0")
        self.w = np.random.default_rng(0).standard_normal((16 * 16 * 3, 1000)).astype(np.float32) / 50

    def framework_version(self) -> str:
        return np.__version__

    def models(self) -> list[ModelSpec]:
        return [self.spec]

    def environment(self) -> dict:
        return {"gpus": []}

    def resolve_device(self, requested: str) -> str:
        return "cpu"

    def load(self, spec, weights, device):
        return self.w

    def fetch_weights(self, spec, weights="imagenet"):
        return "nowhere"

    def predict(self, model, batch):
        if self.fail_with is not None and batch.shape[0] > 1:
            raise self.fail_with
        return np.stack([x.reshape(-1) @ model for x in batch])


@pytest.fixture
def backend(monkeypatch):
    b = NumpyBackend()
    monkeypatch.setattr(cli, "load_backend", lambda: b)
    return b


predict = predict_in_process  # noqa: E731 (the name these tests read best with)


def photo(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "n01440764").mkdir(parents=True)
    (root / "deep" / "er").mkdir(parents=True)
    photo(1).save(root / "n01440764" / "b.JPEG")
    photo(2).save(root / "n01440764" / "a.jpg")
    photo(3).save(root / "deep" / "er" / "c.PNG")
    photo(4, (25, 50)).save(root / "d.jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def test_list_and_info_are_json(backend, capsys):
    assert predict("list") == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing[0]["name"] == "linear"
    assert listing[0]["preprocessing"]["crop_size"] == 16
    assert predict("info") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["framework"] == "numpy" and info["numpy"] == np.__version__


def test_run_writes_contract_files(backend, data, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(out), "--topk", "7") == 0
    pred = read_predictions(out / "predictions.npz")
    assert list(pred["paths"]) == ["d.jpeg", "deep/er/c.PNG", "n01440764/a.jpg", "n01440764/b.JPEG"]
    assert pred["topk_indices"].shape == (4, 7) and pred["topk_scores"].dtype == np.float32
    assert np.all(np.diff(pred["topk_scores"], axis=1) <= 0), "scores must be sorted descending"
    run = json.loads((out / "run.json").read_text())
    for key in ("schema_version", "framework", "framework_version", "model", "weights", "preprocessing",
                "device", "batch_size", "n_images", "images_per_second", "seconds", "env", "status"):
        assert key in run, key
    assert run["status"] == "ok" and run["n_images"] == 4 and run["data"]["digest"].startswith("sha256:")
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"
    # the scores are the softmax of the model's logits
    x = np.stack([np.asarray(Image.open(data / "d.jpeg").convert("RGB").resize((20, 40), Image.BILINEAR))])
    assert pred["topk_indices"][0, 0] == int(np.argmax(
        ((x[:, 12:28, 2:18].astype(np.float32) / 255 - np.array([0.485, 0.456, 0.406])) /
         np.array([0.229, 0.224, 0.225])).astype(np.float32).reshape(1, -1) @ backend.w))


def test_batched_equals_single(backend, data, tmp_path):
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "b1"), "--batch-size", "1") == 0
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "b3"), "--batch-size", "3") == 0
    one, many = read_predictions(tmp_path / "b1" / "predictions.npz"), read_predictions(tmp_path / "b3" / "predictions.npz")
    np.testing.assert_array_equal(one["topk_indices"], many["topk_indices"])
    np.testing.assert_allclose(one["topk_scores"], many["topk_scores"], atol=1e-4)


def test_limit_and_logits(backend, data, tmp_path):
    out = tmp_path / "o"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(out), "--limit", "2", "--save-logits") == 0
    pred = read_predictions(out / "predictions.npz")
    assert len(pred["paths"]) == 2 and pred["logits"].shape == (2, 1000) and pred["logits"].dtype == np.float16


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["--model", "nope"], 2, "unknown model 'nope'"),
        (["--data", "/nonexistent/zoo"], 2, "does not exist"),
        (["--preprocess", "{bad"], 2, "--preprocess"),
        (["--preprocess", '{"crop_size": 64}'], 2, "crop_size"),
        (["--weights", "/no/such/file.pt"], 2, "no such file"),
        (["--batch-size", "0"], 2, "--batch-size"),  # click's own usage errors are one line too
        (["--topk", "3"], 2, "--topk"),
        (["--colour", "red"], 2, "No such option"),
    ],
)
def test_bad_input_is_one_line(backend, data, tmp_path, capsys, args, code, needle):
    base = {"--model": "linear", "--data": str(data), "--out": str(tmp_path / "o")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = ["run"] + [x for kv in base.items() for x in kv]
    assert predict(*argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "o" / "run.json").exists()


def test_empty_data_dir(backend, tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert predict("run", "--model", "linear", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")) == 2
    assert "no images found" in capsys.readouterr().err


def test_corrupt_jpeg_names_the_file(backend, data, tmp_path, capsys):
    good = (data / "n01440764" / "a.jpg").read_bytes()
    (data / "n01440764" / "broken.jpg").write_bytes(good[: len(good) // 3])
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and err.count("\n") == 1
    assert not (tmp_path / "o" / "predictions.npz").exists()


def test_cmyk_grey_16bit_are_converted(backend, tmp_path):
    root = tmp_path / "odd"
    root.mkdir()
    rgb = photo(7)
    rgb.convert("CMYK").save(root / "cmyk.jpg")
    grey = rgb.convert("L")
    grey.save(root / "grey.png")
    Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(root / "grey16.png")
    rgba = rgb.convert("RGBA")
    rgba.save(root / "alpha.png")
    rgb.convert("P").save(root / "palette.png")
    assert Image.open(root / "grey16.png").mode.startswith("I")
    assert predict("run", "--model", "linear", "--data", str(root), "--out", str(tmp_path / "o"), "--save-logits") == 0
    pred = read_predictions(tmp_path / "o" / "predictions.npz")
    paths = list(pred["paths"])
    assert paths == ["alpha.png", "cmyk.jpg", "grey.png", "grey16.png", "palette.png"]
    # 16-bit greyscale scaled down to 8 bits gives the same prediction as the 8-bit file
    np.testing.assert_array_equal(pred["logits"][2], pred["logits"][3])


def test_out_of_memory_exit_code(monkeypatch, data, tmp_path, capsys):
    b = NumpyBackend(fail_with=MemoryError())
    monkeypatch.setattr(cli, "load_backend", lambda: b)
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "o"), "--batch-size", "4") == 3
    assert "smaller --batch-size" in capsys.readouterr().err
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "o"), "--batch-size", "1") == 0


def test_killed_write_leaves_no_file(backend, data, tmp_path, monkeypatch):
    import zoobench_contract.outputs as outputs

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.np, "savez_compressed", boom)
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "o")) == 130
    assert list((tmp_path / "o").iterdir()) == []


# ---------------------------------------------------------------- uint8 input path and the pixel cache

def run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--model", "linear", "--data", str(data), "--out", str(out), "--batch-size", "2", *extra]


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("prep", [
    Preprocessing(), Preprocessing(mode="tf"), Preprocessing(mode="raw"),
    Preprocessing(mode="caffe", channel_order="bgr"), Preprocessing(mode="caffe", channel_order="rgb"),
    Preprocessing(mode="meanstd", channel_order="bgr", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)),
])
def test_normalisation_as_data_is_the_host_normalisation(prep):
    from zoobench_contract.preprocessing import normalize

    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(prep.normalisation().apply(pixels), normalize(pixels, prep), rtol=0, atol=2e-5)


class DeviceBackend(NumpyBackend):
    """Normalises the uint8 batch itself, as a GPU backend does on its device."""

    def predict_pixels(self, model, pixels, norm):
        assert pixels.dtype == np.uint8
        return self.predict(model, norm.apply(pixels))


def test_device_and_host_normalisation_agree(monkeypatch, data, tmp_path):
    b = DeviceBackend()
    monkeypatch.setattr(cli, "load_backend", lambda: b)
    logits = {}
    for where in ("device", "host"):
        out = tmp_path / where
        assert predict(*run_args(data, out, "--normalise", where, "--save-logits")) == 0
        assert json.loads((out / "run.json").read_text())["normalise"] == where
        logits[where] = read_predictions(out / "predictions.npz")["logits"].astype(np.float32)
    assert np.abs(logits["device"] - logits["host"]).max() <= 1e-3  # float16 storage of near-equal logits


def test_pixel_cache_gives_byte_identical_predictions(backend, data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert predict("cache", "--data", str(data), "--out", str(cache), "--resize-size", "20", "--crop-size", "16") == 0
    index = json.loads((cache / "index.json").read_text())
    assert index["n_images"] == 4 and index["config"] == {"resize_size": 20, "crop_size": 16, "interpolation": "bilinear"}
    assert np.load(cache / "pixels.npy", mmap_mode="r").shape == (4, 16, 16, 3)
    assert predict(*run_args(data, tmp_path / "decoded", "--save-logits")) == 0
    assert predict(*run_args(data, tmp_path / "cached", "--save-logits", "--pixels", str(cache))) == 0
    a, b = npz_arrays(tmp_path / "decoded/predictions.npz"), npz_arrays(tmp_path / "cached/predictions.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    runs = [json.loads((tmp_path / n / "run.json").read_text()) for n in ("decoded", "cached")]
    assert runs[0]["data"]["digest"] == runs[1]["data"]["digest"] == index["data_digest"]
    assert runs[0]["pixel_cache"] is None and runs[1]["pixel_cache"]["folder"] == str(cache)
    assert predict(*run_args(data, tmp_path / "limited", "--pixels", str(cache), "--limit", "2")) == 0


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_pixel_cache_that_does_not_fit_is_refused(backend, data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert predict("cache", "--data", str(data), "--out", str(cache), "--resize-size", "24", "--crop-size", "16") == 0
    capsys.readouterr()
    assert predict(*run_args(data, tmp_path / "o1", "--pixels", str(cache))) == 2
    assert "needs {'resize_size': 20" in one_error_line(capsys)
    small = tmp_path / "small"
    assert predict("cache", "--data", str(data), "--out", str(small), "--resize-size", "20", "--crop-size", "16",
                   "--limit", "2") == 0
    capsys.readouterr()
    assert predict(*run_args(data, tmp_path / "o2", "--pixels", str(small))) == 2
    assert "not in the cache" in one_error_line(capsys)
    (small / "index.json").unlink()
    assert predict(*run_args(data, tmp_path / "o3", "--pixels", str(small), "--limit", "2")) == 2
    assert "incomplete" in one_error_line(capsys)
    assert not (tmp_path / "o3" / "run.json").exists()


def test_precision_the_backend_cannot_serve_is_one_line(backend, data, tmp_path, capsys):
    assert predict(*run_args(data, tmp_path / "o", "--precision", "bf16")) == 2
    assert "fp32 only" in one_error_line(capsys)
    assert predict(*run_args(data, tmp_path / "o", "--precision", "fp8")) == 2
    assert "--precision 'fp8'" in one_error_line(capsys)
    assert predict(*run_args(data, tmp_path / "o")) == 0
    assert json.loads((tmp_path / "o" / "run.json").read_text())["precision"] == "fp32"


class StatefulBackend(NumpyBackend):
    """Like a model left in training mode: every batch moves a running statistic."""

    framework = "stateful"

    def load(self, spec, weights, device):
        return {"w": self.w, "running_mean": np.zeros(3, np.float32)}

    def predict(self, model, batch):
        model["running_mean"] += batch.mean(axis=(0, 1, 2))
        return np.stack([x.reshape(-1) @ model["w"] for x in batch])

    def state_arrays(self, model):
        return sorted(model.items())


def test_inference_that_changes_the_model_fails_the_run(monkeypatch, data, tmp_path, capsys):
    monkeypatch.setattr(cli, "load_backend", lambda: StatefulBackend())
    out = tmp_path / "out"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the model's parameters or buffers changed during inference")
    assert not (out / "run.json").exists() and not (out / "predictions.npz").exists()


def test_run_records_unchanged_parameters_and_its_outputs_digest(monkeypatch, data, tmp_path):
    class Frozen(NumpyBackend):
        def state_arrays(self, model):
            return [("w", model)]

    monkeypatch.setattr(cli, "load_backend", lambda: Frozen())
    runs = []
    for name in ("a", "b"):
        assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / name)) == 0
        runs.append(json.loads((tmp_path / name / "run.json").read_text()))
    params = runs[0]["parameters"]
    assert params["unchanged"] is True and params["sha256_before"] == params["sha256_after"]
    assert params["arrays"] == 1 and params["values"] == 16 * 16 * 3 * 1000
    assert runs[0]["determinism"]["outputs_sha256"] == runs[1]["determinism"]["outputs_sha256"]
    assert runs[0]["determinism"]["expected_bitwise"] is True
    from zoobench_contract.integrity import outputs_digest

    pred = read_predictions(tmp_path / "a" / "predictions.npz")
    assert runs[0]["determinism"]["outputs_sha256"] == outputs_digest(list(pred["paths"]), pred["topk_indices"],
                                                                       pred["topk_scores"])


def test_without_state_arrays_parameters_say_why(backend, data, tmp_path):
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(tmp_path / "o")) == 0
    params = json.loads((tmp_path / "o" / "run.json").read_text())["parameters"]
    assert params["unchanged"] is None and "state_arrays" in params["why"]


def test_an_altered_pixel_cache_is_refused_as_it_is_read(backend, data, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert predict("cache", "--data", str(data), "--out", str(cache), "--resize-size", "20", "--crop-size", "16") == 0
    index = json.loads((cache / "index.json").read_text())
    assert index["schema"] == 2 and len(index["chunk_sha256"]) == 1 and index["pixels_digest"].startswith("sha256:")
    clean = tmp_path / "clean"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(clean), "--pixels", str(cache)) == 0
    record = json.loads((clean / "run.json").read_text())["pixel_cache"]
    assert record["digest"] == index["pixels_digest"] and record["verified_chunks"] == 1
    pixels = np.load(cache / "pixels.npy", mmap_mode="r+")
    pixels[1, 0, 0, 0] ^= 1  # one bit of one pixel
    pixels.flush()
    del pixels
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert predict("run", "--model", "linear", "--data", str(data), "--out", str(bad), "--pixels", str(cache)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "rows 0-3 of pixels.npy do not match their digest" in err[-1] and not (bad / "run.json").exists()
