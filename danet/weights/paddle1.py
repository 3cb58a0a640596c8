"""Readers for the two Paddle 1.5/1.6 weight layouts, without Paddle: numpy only, and no protobuf package.

Both layouts were read from Paddle's C++ source (1.6-era ``save_load_util.cc``, ``lod_tensor.cc``, ``tensor_util.cc``,
``framework.proto``; the layout is unchanged on develop). Little-endian, 64-bit builds, so ``size_t`` is 8 bytes:

* **TNUM file** (``fluid.save_dygraph`` -> ``core._save_dygraph_dict`` -> ``SaveTensorToDisk`` in
  ``paddle/fluid/framework/save_load_util.cc``, Paddle 1.6; ``.pdparams`` and ``.pdopt``)::

      256 reserved bytes (``new char[256]``, never cleared: arbitrary content)
      b"TNUM"  u64 count
      count x { b"NAME"  u64 name_length  name  <tensor record> }   # std::map order: sorted by name

* **Per-variable LoDTensor file** (the ``save`` op behind ``fluid.io.save_params``/``save_persistables`` and
  ``fluid.dygraph.save_persistables`` in 1.5.2; ``SerializeToStream`` in ``lod_tensor.cc``)::

      u32 version (0)  u64 lod_levels  lod_levels x { u64 nbytes  nbytes of size_t offsets }  <tensor record>

The tensor record is ``TensorToStream`` (``tensor_util.cc``): ``u32 version (0)``, ``i32 desc_size``, a
``framework.proto`` ``VarType.TensorDesc`` (field 1 ``data_type`` enum, field 2 ``repeated int64 dims``, proto2
so unpacked), then the raw data, ``numel x itemsize`` bytes. A tensor with no dims is a scalar (numel 1).
Paddle 3.3 still writes the per-variable layout (``paddle.save(t, p, use_binary_format=True)``,
``paddle.static.save_vars``); the tests compare our bytes with those files.
"""
import logging
import os
import struct

import numpy as np

from danet.errors import UserError

log = logging.getLogger(__name__)

RESERVED = 256
TNUM, NAME = b"TNUM", b"NAME"
# framework.proto VarType.Type: the POD types (1.6 has 0-6 and 19-21; 22-24 came with Paddle 2.x).
DTYPES = {
    0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16, 5: np.float32, 6: np.float64,
    19: np.uint64, 20: np.uint8, 21: np.int8,
    22: np.uint16,  # BF16: numpy has no bfloat16, so the raw bits, as paddle.Tensor.numpy() gives them
    23: np.complex64, 24: np.complex128,
}
# Program files and the pickled LR-decay objects 1.5's dygraph save_persistables puts in ``optimizers/``.
SKIP_FILES = {"__model__", "__params__"}
SKIP_DIRS = {"optimizers"}
MAX_LOD_LEVELS = 16  # a real file has 0 for parameters; more than this means it is no LoDTensor file


class _Reader:
    """Sequential little-endian reads from a file; running out of bytes is a UserError naming the file."""

    def __init__(self, f, path):
        self.f, self.path = f, path
        self.size = os.fstat(f.fileno()).st_size

    def left(self):
        return self.size - self.f.tell()

    def take(self, n, what):
        if n > self.left():
            raise UserError(f"{self.path}: truncated: {what} needs {n} bytes at byte {self.f.tell()} but only "
                            f"{self.left()} are left: the file is incomplete, copy or download it again")
        return self.f.read(n)

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def i32(self, what):
        return struct.unpack("<i", self.take(4, what))[0]

    def u64(self, what):
        return struct.unpack("<Q", self.take(8, what))[0]


def _varint(buf, pos):
    """One base-128 varint from ``buf`` at ``pos`` -> (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _int64(value):
    # protobuf int64 is the 64-bit two's complement as a varint (-1 is ten bytes).
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_tensor_desc(buf):
    """Decode a ``VarType.TensorDesc`` -> (data_type enum, dims). Accepts packed dims too; skips unknown fields."""
    data_type, dims, pos = None, [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            if field == 1:
                data_type = value
            elif field == 2:
                dims.append(_int64(value))
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("field runs past the end")
            if field == 2:  # packed dims
                sub = 0
                while sub < length:
                    value, sub_end = _varint(buf[pos:pos + length], sub)
                    dims.append(_int64(value))
                    sub = sub_end
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
    if data_type is None or pos != len(buf):
        raise ValueError("no data_type" if data_type is None else "trailing bytes")
    return data_type, dims


def _tensor_record(reader, name):
    """Read one TensorToStream record (version, TensorDesc, data) -> ndarray."""
    label = f"tensor '{name}'"
    version = reader.u32(f"the version of {label}")
    size = reader.i32(f"the description size of {label}")
    if version != 0 or not 0 < size <= 4096:
        raise UserError(f"{reader.path}: {label} has tensor version {version} and description size {size}, "
                        "expected 0 and 1..4096: the file is damaged or not a Paddle 1.x tensor file")
    try:
        data_type, dims = parse_tensor_desc(reader.take(size, f"the description of {label}"))
    except ValueError as exc:
        raise UserError(f"{reader.path}: the description of {label} is not a valid TensorDesc ({exc}): "
                        "the file is damaged or not a Paddle 1.x tensor file") from None
    if data_type not in DTYPES:
        raise UserError(f"{reader.path}: {label} has data type {data_type} (framework.proto VarType.Type), which "
                        f"this reader does not know (it reads {sorted(DTYPES)}): convert it with Paddle 1.x first")
    if any(d < 0 for d in dims):
        raise UserError(f"{reader.path}: {label} has dims {dims} with an unknown (-1) size: the file is damaged")
    dtype = np.dtype(DTYPES[data_type]).newbyteorder("<")
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if count * dtype.itemsize > reader.left():
        raise UserError(f"{reader.path}: {label} has shape {dims} ({dtype.name}), which needs "
                        f"{count * dtype.itemsize} bytes, but only {reader.left()} are left: the file is truncated")
    data = np.fromfile(reader.f, dtype=dtype, count=count)
    return data.astype(dtype.newbyteorder("="), copy=False).reshape(dims)


def read_tnum(path):
    """Read a Paddle 1.6 ``save_dygraph`` file (``.pdparams``/``.pdopt``) -> ``{name: ndarray}`` in file order."""
    with open(path, "rb") as f:
        reader = _Reader(f, path)
        reader.take(RESERVED, "the 256 reserved header bytes")
        tag = reader.take(4, "the TNUM tag")
        if tag != TNUM:
            raise UserError(f"{path}: not a Paddle 1.6 save_dygraph file (expected the tag b'TNUM' at byte "
                            f"{RESERVED}, found {tag!r}): pass a .pdparams/.pdopt written by fluid.save_dygraph")
        count = reader.u64("the tensor count")
        out = {}
        for index in range(count):
            where = f"the name tag of tensor {index + 1} of {count}"
            if reader.take(4, where) != NAME:
                raise UserError(f"{path}: {where} is not b'NAME' (at byte {f.tell() - 4}): the file is damaged")
            length = reader.u64(f"the name length of tensor {index + 1}")
            name = reader.take(length, f"the name of tensor {index + 1}").decode("utf-8", "replace")
            out[name] = _tensor_record(reader, name)
        if reader.left():
            log.warning("%s: %d bytes after the last of %d tensors were ignored", path, reader.left(), count)
    log.info("read %d tensors from %s (Paddle 1.6 TNUM file)", len(out), path)
    return out


def read_lod_tensor(path, name=None):
    """Read one per-variable LoDTensor file (the ``save`` op of Paddle 1.x) -> ndarray; the LoD is dropped."""
    name = name or os.path.basename(path)
    with open(path, "rb") as f:
        reader = _Reader(f, path)
        version = reader.u32("the LoDTensor version")
        levels = reader.u64("the LoD level count")
        if version != 0 or levels > MAX_LOD_LEVELS:
            raise UserError(f"{path}: not a Paddle LoDTensor file (version {version}, {levels} LoD levels; expected "
                            "0 and a few): remove it from the folder or pass the file Paddle saved")
        for level in range(levels):
            reader.take(reader.u64(f"the size of LoD level {level}"), f"LoD level {level}")
        array = _tensor_record(reader, name)
        if reader.left():
            raise UserError(f"{path}: {reader.left()} bytes follow tensor '{name}': it is a combined file "
                            "(save_combine / __params__) or no LoDTensor file, not one variable per file")
    return array


def _var_files(folder):
    """Candidate variable files under ``folder`` as sorted (relative name, path), and the skipped paths."""
    found, skipped = [], []
    for root, dirs, files in os.walk(folder):
        rel_root = os.path.relpath(root, folder)
        skipped += [os.path.join(root, d) + "/" for d in dirs if d in SKIP_DIRS or d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for file in sorted(files):
            if file in SKIP_FILES or file.startswith("."):
                skipped.append(os.path.join(root, file))
                continue
            rel = file if rel_root == "." else os.path.join(rel_root, file)
            found.append((rel.replace(os.sep, "/"), os.path.join(root, file)))
    return found, skipped


def read_var_folder(folder):
    """Read a folder of per-variable files (``save_params``/``save_persistables``, 1.5.2 dygraph
    ``save_persistables``) -> ``{name: ndarray}``; the relative path is the name (``layer3.12/Conv2D_1.weight``).

    Skipped, as Paddle 1.5's ``load_persistables`` does: ``__model__`` and ``__params__`` (program / combined
    files), hidden files and the ``optimizers/`` folder (pickled LR-decay objects). Any other file that is not a
    LoDTensor file is a UserError naming it.
    """
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: not a folder: pass the folder Paddle 1.x save_params/save_persistables wrote")
    files, skipped = _var_files(folder)
    for path in skipped:
        log.info("skipping %s: a program file, optimizer pickle or hidden file, not a variable", path)
    out = {name: read_lod_tensor(path, name) for name, path in files}
    if not out:
        combined = os.path.exists(os.path.join(folder, "__params__"))
        raise UserError(f"{folder}: no tensor files found" + (
            " (only a combined __params__ file, which needs its __model__ program to split)" if combined else "")
            + ": pass the folder holding one file per variable")
    log.info("read %d tensors from %s (Paddle 1.x per-variable folder)", len(out), folder)
    return out


def is_tnum(path):
    """True when ``path`` is a file with the TNUM tag after the 256 reserved bytes (reads 4 bytes)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        f.seek(RESERVED)
        return f.read(4) == TNUM


def _looks_like_lod_tensor(path):
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 16:
        return False
    version, levels = struct.unpack("<IQ", head[:12])
    # With no LoD (every parameter) the tensor record's version follows at once.
    return version == 0 and levels <= MAX_LOD_LEVELS and (levels > 0 or head[12:16] == b"\0\0\0\0")


def is_var_folder(path):
    """True when ``path`` is a folder whose first candidate variable file starts like a LoDTensor file
    (lists the folder, reads 16 bytes)."""
    if not os.path.isdir(path):
        return False
    files = _var_files(path)[0]
    return bool(files) and _looks_like_lod_tensor(files[0][1])
