"""Read a PyTorch state-dict file into numpy arrays, without importing torch.

Both on-disk formats of ``torch.save`` are understood:

- legacy (torch < 1.6 or ``_use_new_zipfile_serialization=False``): five pickles in a row
  (magic number, protocol version, system info, the object, the storage keys), then each
  storage as an int64 element count followed by its raw little-endian bytes;
- zip (torch >= 1.6): ``<root>/data.pkl`` plus one member ``<root>/data/<key>`` per storage.

The pickles are read by a restricted unpickler that can only build tensors, ordered dicts
and storage types, so a checkpoint cannot run code. Tensors keep their saved strides
(converted checkpoints are often not contiguous) and come back as contiguous arrays.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),  # widened to float32 when a tensor is built
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
}


class CheckpointError(ValueError):
    """The file is not a PyTorch state dict this reader can decode safely."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _Storage:
    """A storage named in the pickle; its bytes arrive later (legacy) or from the zip."""

    key: str
    dtype: np.dtype
    numel: int
    bf16: bool = False  # stored as uint16 bit patterns, widened to float32 in tensors
    data: np.ndarray | None = None
    view_of: tuple["_Storage", int] | None = None  # legacy storage views: (root, element offset)

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            return root.array()[offset : offset + self.numel]
        if self.data is None:
            raise CheckpointError(f"storage {self.key} has no data in the file (truncated checkpoint?)")
        return self.data


@dataclass
class _LazyTensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        flat = self.storage.array()
        if any(s < 0 for s in self.stride) or any(n < 0 for n in self.shape):
            raise CheckpointError(f"storage {self.storage.key}: negative size or stride")
        if 0 in self.shape:
            out = np.zeros(self.shape, flat.dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
            if self.offset < 0 or last >= flat.size:
                raise CheckpointError(
                    f"storage {self.storage.key}: tensor {self.shape} at offset {self.offset} "
                    f"reads past its {flat.size} elements"
                )
            view = np.lib.stride_tricks.as_strided(
                flat[self.offset :],
                shape=self.shape,
                strides=tuple(s * flat.itemsize for s in self.stride),
                writeable=False,
            )
            out = np.array(view, order="C")
        if self.storage.bf16:
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _LazyTensor:
    if not isinstance(storage, _Storage):
        raise CheckpointError("tensor rebuild without a storage reference")
    return _LazyTensor(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _LazyTensor, *_: Any) -> _LazyTensor:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor rebuilds, ``OrderedDict`` and ``torch.*Storage``; storages via a callback."""

    def __init__(self, file: io.BufferedIOBase, persistent_load: Callable[[Any], Any]) -> None:
        super().__init__(file)
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"refusing to unpickle {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid: Any) -> Any:
        return self._persistent(pid)


def _storage_from_pid(pid: Any, storages: dict[str, _Storage]) -> _Storage:
    """``('storage', type, key, location, numel[, view_metadata])`` -> the shared :class:`_Storage`."""
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        raise CheckpointError(f"unexpected persistent id {pid!r}")
    stype, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(stype, _StorageType):
        raise CheckpointError(f"storage {key}: unknown storage type {stype!r}")
    view_meta = pid[5] if len(pid) > 5 else None
    storage = storages.get(key)
    if storage is None:
        storage = _Storage(key, stype.dtype, numel, bf16=stype.name == "BFloat16Storage")
        storages[key] = storage
    if view_meta is None:
        return storage
    view_key, offset, view_numel = view_meta
    return _Storage(str(view_key), stype.dtype, int(view_numel), bf16=storage.bf16, view_of=(storage, int(offset)))


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _load_legacy(raw: bytes, path: Path) -> Any:
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}

    def unpickle() -> Any:
        return _RestrictedUnpickler(f, lambda pid: _storage_from_pid(pid, storages)).load()

    if unpickle() != LEGACY_MAGIC:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
    if unpickle() != LEGACY_PROTOCOL:
        raise CheckpointError(f"{path}: unsupported legacy protocol version")
    sys_info = unpickle()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
    obj = unpickle()
    keys = unpickle()
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise CheckpointError(f"{path}: storage {key} is listed but never used")
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path}: truncated before storage {key}")
        numel = int(np.frombuffer(head, "<i8")[0])
        nbytes = numel * storage.dtype.itemsize
        data = f.read(nbytes)
        if numel != storage.numel or len(data) != nbytes:
            raise CheckpointError(f"{path}: storage {key} is truncated or has the wrong size")
        storage.data = np.frombuffer(data, storage.dtype)
    return obj


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise CheckpointError(f"{path}: zip file has no single <root>/data.pkl; not a torch.save file")
        root = pkl[0][: -len("data.pkl")]
        if f"{root}byteorder" in names and zf.read(f"{root}byteorder").strip() != b"little":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        storages: dict[str, _Storage] = {}
        with zf.open(pkl[0]) as fh:
            obj = _RestrictedUnpickler(io.BytesIO(fh.read()), lambda pid: _storage_from_pid(pid, storages)).load()
        for key, storage in storages.items():
            if storage.view_of is not None:
                continue
            member = f"{root}data/{key}"
            if member not in names:
                raise CheckpointError(f"{path}: storage {member} is missing")
            data = zf.read(member)
            if len(data) != storage.numel * storage.dtype.itemsize:
                raise CheckpointError(f"{path}: storage {member} has {len(data)} bytes, expected "
                                      f"{storage.numel * storage.dtype.itemsize}")
            storage.data = np.frombuffer(data, storage.dtype)
    return obj


def load_checkpoint(path: str | Path) -> Any:
    """Decode any pickled object made of dicts, lists and tensors (tensors -> numpy arrays)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path.read_bytes(), path)
    except CheckpointError as exc:
        raise exc if str(path) in str(exc) else CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # garbage bytes fail in many ways inside the unpickler
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    return _materialize(obj)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A ``torch.save(model.state_dict())`` file -> ``{name: array}`` in file order.

    A checkpoint that wraps the weights as ``{"state_dict": {...}}`` is unwrapped.
    """
    obj = load_checkpoint(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a flat mapping of names to tensors)")
    return OrderedDict((str(k), v) for k, v in obj.items())


__all__ = ["CheckpointError", "load_checkpoint", "load_state_dict"]
