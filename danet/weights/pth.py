"""Read PyTorch checkpoints (``.pth``, ``.pth.tar``, ``.pt``) into numpy arrays, without torch and without running code.

Why not ``torch.load``: a ``.pth`` is a pickle, and unpickling calls whatever functions the file names, so a
checkpoint downloaded from the internet can run ``os.system`` the moment it is loaded. Here the unpickler's
``find_class`` hands out only our own stand-ins for the few callables a tensor or a container needs; any other
global (``os.system``, ``builtins.eval``, any class such as ``argparse.Namespace``) stops the load with a
:class:`~danet.errors.UserError` that names it. Tensors become ``numpy.ndarray`` (bfloat16 widened to float32),
``OrderedDict`` becomes ``dict`` in the same order.

Both formats of ``torch.save`` are read:

* zip (torch >= 1.6): ``<top>/data.pkl`` plus one record ``<top>/data/<key>`` per storage, and maybe
  ``<top>/byteorder``; persistent ids are ``('storage', type, key, location, numel)``.
* legacy (torch < 1.6, e.g. the official ``DANet101.pth.tar``): pickles in a row - magic number, protocol
  1001, sys_info, the object (ids ``('storage', type, root_key, location, numel, view)``), the list of
  storage keys - then per key an 8-byte little-endian element count and the raw bytes.
"""
import io
import logging
import os
import pickle
import zipfile

import numpy as np

from danet.errors import UserError

log = logging.getLogger(__name__)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch dtype name -> numpy dtype of its raw bytes (bfloat16 is read as the uint16 top half of a float32)
_RAW = {"float32": "f4", "float16": "f2", "bfloat16": "u2", "float64": "f8", "int64": "i8", "int32": "i4",
        "int16": "i2", "int8": "i1", "uint8": "u1", "bool": "?", "complex64": "c8", "complex128": "c16",
        "uint16": "u2", "uint32": "u4", "uint64": "u8"}
_STORAGES = {"FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
             "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
             "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool", "UntypedStorage": "uint8",
             "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128"}


class _DType(str):
    """A torch dtype (``torch.float32``) or storage class (``torch.FloatStorage``) named by the pickle."""


class _Storage:
    """One storage's bytes; legacy files put them after the pickle, so tensors only point here until then."""
    __slots__ = ("key", "dtype", "numel", "data")

    def __init__(self, key, dtype, numel, data=None):
        self.key, self.dtype, self.numel, self.data = key, dtype, numel, data


class _Tensor:
    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, _Storage):
            raise TypeError(f"a tensor's storage is a {type(storage).__name__}")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)
        self.dtype = dtype or storage.dtype


class _OrderedDict(dict):
    def __setstate__(self, state):
        pass  # a state_dict's `_metadata` (module versions) is torch bookkeeping, not weights


def _rebuild_tensor(storage, offset, size, stride, *_):  # _rebuild_tensor and _v2: the rest is grad/hooks/meta
    return _Tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_):  # uint16/32/64 tensors
    if not isinstance(dtype, _DType):
        raise TypeError(f"tensor dtype {dtype!r}")
    return _Tensor(storage, offset, size, stride, dtype)


def _data(tensor, *_):
    return tensor


def _latin1(text, encoding):  # protocol 2 writes bytes as _codecs.encode(str, 'latin1')
    if encoding not in ("latin1", "latin-1"):
        raise ValueError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _np_reconstruct(subtype, *_):  # an empty array that the BUILD opcode then fills (ndarray.__setstate__)
    if subtype is not np.ndarray:
        raise TypeError(f"numpy _reconstruct of {subtype!r}")
    return np.ndarray((0,), np.uint8)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype):
        raise TypeError(f"numpy scalar of {dtype!r}")
    return data if dtype.hasobject else np.frombuffer(data, dtype, count=1)[0]


_ALLOWED = {
    "torch._utils._rebuild_tensor": _rebuild_tensor, "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3, "collections.OrderedDict": _OrderedDict,
    # a Parameter is its tensor plus requires_grad, hooks and state that numpy has no use for
    "torch._utils._rebuild_parameter": _data, "torch._utils._rebuild_parameter_with_state": _data,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.bytes": bytes, "builtins.bytearray": bytearray,
    "builtins.complex": complex, "_codecs.encode": _latin1, "numpy.ndarray": np.ndarray,
    "numpy.dtype": lambda spec, align=False, copy=False: np.dtype(spec, align, copy),
    "numpy.core.multiarray._reconstruct": _np_reconstruct, "numpy._core.multiarray._reconstruct": _np_reconstruct,
    "numpy.core.multiarray.scalar": _np_scalar, "numpy._core.multiarray.scalar": _np_scalar,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path, storage_for=None):
        super().__init__(file, encoding="utf-8")
        self.path, self.storage_for = path, storage_for

    def find_class(self, module, name):
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if module in ("torch", "torch.storage") and (name in _STORAGES or name in _RAW):
            return _DType(_STORAGES.get(name, name))
        if f"{module}.{name}" in _ALLOWED:
            return _ALLOWED[f"{module}.{name}"]
        shown = f"{'os' if module in ('posix', 'nt') else module}.{name}"  # pickle spells os.system posix.system
        raise UserError(f"refusing to load {self.path}: it asks for {shown}; only tensors and plain containers "
                        "are read, never code (save just the state_dict with torch.save, or use a trusted copy)")

    def persistent_load(self, pid):
        if self.storage_for is None or not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:60]}")
        stype, key, _location, numel, *view = pid[1:]
        if not isinstance(stype, _DType):
            raise pickle.UnpicklingError(f"storage of type {stype!r}")
        return self.storage_for(stype, str(key), int(numel), *view)


def _array(t, path):
    s, raw = t.storage, np.dtype("<" + _RAW[t.dtype])
    data = s.data
    if not isinstance(data, bytes):
        raise UserError(f"{path} has no data for storage {s.key}: the file is damaged; download it again")
    if len(data) < s.numel * np.dtype(_RAW[s.dtype]).itemsize:
        raise UserError(f"{path}: storage {s.key} holds {len(data)} bytes, fewer than its {s.numel} elements need: "
                        "the file is truncated or damaged; download it again")
    if 0 in t.size:
        return np.empty(t.size, raw.newbyteorder("="))
    need = t.offset + sum((n - 1) * st for n, st in zip(t.size, t.stride)) + 1
    if t.offset < 0 or min(t.stride, default=0) < 0 or need * raw.itemsize > len(data):
        raise UserError(f"{path}: a tensor of shape {list(t.size)} needs {need} elements of storage {s.key}, which "
                        f"holds {len(data) // raw.itemsize}: the file is damaged; download it again")
    view = np.ndarray(t.size, raw, buffer=data, offset=t.offset * raw.itemsize,
                      strides=[st * raw.itemsize for st in t.stride])
    arr = np.array(view, dtype=raw.newbyteorder("="), order="C")  # a copy: owns its memory, native byte order
    if t.dtype == "bfloat16":  # bfloat16 is the top half of a float32
        return np.left_shift(arr.astype(np.uint32), 16).view(np.float32).copy()
    return arr


def _plain(obj, path):
    """Tensors -> arrays, OrderedDict -> dict, containers rebuilt around them."""
    if isinstance(obj, _Tensor):
        return _array(obj, path)
    if isinstance(obj, _DType):  # torch.float32 in a checkpoint's extras: its name
        return str(obj)
    if isinstance(obj, dict):
        return {k: _plain(v, path) for k, v in obj.items()}
    if type(obj) in (list, tuple, set, frozenset):
        return type(obj)(_plain(v, path) for v in obj)
    return obj


def _load_zip(path, order="<"):
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        pkl = next((n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
        if pkl is None:
            raise UserError(f"{path} is a zip archive without data.pkl: not a torch.save checkpoint "
                            "(a TorchScript file, say); save the model's state_dict with torch.save")
        top = pkl[:-len("data.pkl")]
        if top + "byteorder" in names and zf.read(top + "byteorder").strip() == b"big":
            order = ">"
        storages = {}

        def storage_for(dtype, key, numel, *_):
            if key not in storages:
                if f"{top}data/{key}" not in names:
                    raise UserError(f"{path} lacks the storage record {top}data/{key}: the file is incomplete or "
                                    "damaged; download it again")
                storages[key] = _Storage(key, dtype, numel)
                storages[key].data = _swap(zf.read(f"{top}data/{key}"), dtype, order)
            return storages[key]

        return _Unpickler(io.BytesIO(zf.read(pkl)), path, storage_for).load()


def _swap(data, dtype, order):  # a big-endian machine's checkpoint: bytes to little-endian once
    if order == "<" or np.dtype(_RAW[dtype]).itemsize == 1:
        return data
    return np.frombuffer(data, ">" + _RAW[dtype]).astype("<" + _RAW[dtype]).tobytes()


def _load_legacy(path, f):
    try:
        magic, protocol, _sys_info = (_Unpickler(f, path).load() for _ in range(3))
    except UserError:
        raise
    except Exception:
        magic = protocol = None
    if magic != LEGACY_MAGIC:
        raise _not_torch(path)
    if protocol != LEGACY_PROTOCOL:
        raise UserError(f"{path}: legacy torch protocol {protocol} is not {LEGACY_PROTOCOL}: re-save it with torch")
    roots, views = {}, {}

    def storage_for(dtype, key, numel, view=None):
        root = roots.setdefault(key, _Storage(key, dtype, numel))
        if view is None:
            return root
        view_key, offset, size = view  # a storage view (old torch): elements offset.. of its root, filled below
        return views.setdefault(view_key, _Storage(view_key, dtype, size, (root, offset)))

    obj = _Unpickler(f, path, storage_for).load()
    for key in _Unpickler(f, path).load():
        count = int.from_bytes(f.read(8), "little")
        roots[key].data = f.read(count * np.dtype(_RAW[roots[key].dtype]).itemsize)  # short: _array says so
    for view in views.values():
        (root, offset), size = view.data, np.dtype(_RAW[view.dtype]).itemsize
        view.data = root.data[offset * size:(offset + view.numel) * size] if isinstance(root.data, bytes) else None
    return obj


def _not_torch(path):
    return UserError(f"{path} is not a PyTorch checkpoint (neither torch.save's zip nor its legacy pickle format; "
                     "tar files of torch < 0.4 are not read): pass a .pth/.pt file written by torch.save")


def load_pth(path):
    """The object a ``torch.save`` file at ``path`` holds, every tensor as a numpy array; never runs its code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file: check the path to the PyTorch checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        try:
            if head == b"PK\x03\x04":
                obj, kind = _load_zip(path), "zip"
            elif head[:1] == b"\x80":  # a pickle's PROTO opcode
                obj, kind = _load_legacy(path, f), "legacy"
            else:
                raise _not_torch(path)
            out = _plain(obj, path)
        except UserError:
            raise
        except Exception as err:  # a damaged pickle or zip fails in many ways; all mean the same to the user
            why = " ".join(str(err).split())[:120]
            raise UserError(f"{path} is truncated or damaged ({type(err).__name__}: {why}): "
                            "download or copy the checkpoint again") from err
    log.info("read %s (torch %s format)", path, kind)
    return out
