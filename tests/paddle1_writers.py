"""Writers of Paddle 1.5/1.6 weight files and of the seed's parameter names, for tests (no Paddle needed).

The byte layouts are those Paddle 1.6's C++ writes (``SaveTensorToDisk`` in save_load_util.cc;
``SerializeToStream``/``TensorToStream`` in lod_tensor.cc and tensor_util.cc); tests/test_paddle1.py checks
them against the bytes Paddle 3.3 itself writes. ``seed_params`` replays the seed's ``danet.py`` ``__init__``
order through Paddle 1.6's naming rule (see danet/weights/sources/seed.py).
"""
import os
import struct
from collections import Counter

import numpy as np

# framework.proto VarType.Type numbers, written out here independently of the reader.
ENUM = {np.bool_: 0, np.int16: 1, np.int32: 2, np.int64: 3, np.float16: 4, np.float32: 5, np.float64: 6,
        np.uint8: 20, np.int8: 21}


def varint(value):
    value &= (1 << 64) - 1  # int64 as two's complement, like protobuf
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tensor_desc(dtype, dims):
    """VarType.TensorDesc as proto2 serialises it: field 1 varint, then field 2 once per dim (unpacked)."""
    return b"\x08" + varint(ENUM[np.dtype(dtype).type]) + b"".join(b"\x10" + varint(d) for d in dims)


def tensor_record(array):
    """TensorToStream: u32 version 0, i32 desc size, TensorDesc, raw little-endian data."""
    desc = tensor_desc(array.dtype, array.shape)
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return struct.pack("<Ii", 0, len(desc)) + desc + data


def lod_tensor_file(array, lod=()):
    """SerializeToStream(LoDTensor): u32 version 0, u64 levels, per level u64 bytes + size_t offsets, record."""
    head = struct.pack("<IQ", 0, len(lod))
    for level in lod:
        head += struct.pack("<Q", 8 * len(level)) + np.asarray(level, "<u8").tobytes()
    return head + tensor_record(array)


def tnum_file(tensors, reserved=None, records=None):
    """SaveTensorToDisk: 256 uninitialised bytes, TNUM, u64 count, then NAME/u64 length/name/record per tensor,
    in std::map order (bytewise sorted names). ``records`` may supply the record bytes (e.g. Paddle-written)."""
    reserved = reserved if reserved is not None else np.random.bytes(256)
    parts = [reserved, b"TNUM", struct.pack("<Q", len(tensors))]
    for name in sorted(tensors, key=str.encode):
        raw = name.encode()
        parts += [b"NAME", struct.pack("<Q", len(raw)), raw]
        parts.append(records[name] if records else tensor_record(tensors[name]))
    return b"".join(parts)  # one join: appending to bytes copies them each time (a ResNet-50 is 100 MB)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def seed_params(depth, num_classes=19):
    """(seed name, shape, structured name) for every parameter of the seed's DANet, replaying its __init__ order
    (danet.py) through Paddle 1.6's naming: full_name = unique_name.generate(scope + "/" + Class)."""
    counters, out = Counter(), []

    def full(scope, cls):
        key = f"{scope}/{cls}"
        counters[key] += 1
        return f"{key}_{counters[key] - 1}"

    def conv_bn(scope, cin, cout, k, ours):
        full(scope, "ConvBN")
        conv, bn = full(scope, "Conv2D"), full(scope, "BatchNorm")
        out.append((f"{conv}.weight", (cout, cin, k, k), f"{ours}.0.weight"))
        bn_attrs = ("weight", "bias", "running_mean", "running_var"), ("weight", "bias", "_mean", "_variance")
        for attr, mine in zip(*bn_attrs):
            out.append((f"{bn}.{attr}", (cout,), f"{ours}.1.{mine}"))

    def conv(scope, cin, cout, ours):
        name = full(scope, "Conv2D")
        out.extend([(f"{name}.weight", (cout, cin, 1, 1), f"{ours}.weight"), (f"{name}.bias", (cout,), f"{ours}.bias")])

    stem = f"resnet{depth}"
    full(stem, "ResNet")
    conv_bn(stem, 3, 64, 7, "backbone.conv1")
    full(stem, "Pool2D")
    cin = 64
    for stage, (blocks, planes) in enumerate(zip({50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth], (64, 128, 256, 512))):
        for i in range(blocks):
            scope, ours = f"layer{stage + 1}.{i}", f"backbone.layer{stage + 1}.{i}"
            full(scope, "BottleneckBlock")
            conv_bn(scope, cin, planes, 1, f"{ours}.conv1")
            conv_bn(scope, planes, planes, 3, f"{ours}.conv2")
            conv_bn(scope, planes, planes * 4, 1, f"{ours}.conv3")
            if i == 0:
                conv_bn(scope, cin, planes * 4, 1, f"{ours}.downsample")
            cin = planes * 4
    full("DA_head", "DAHead")
    conv_bn("DA_head", 2048, 512, 3, "head.pam_in")
    conv_bn("DA_head", 2048, 512, 3, "head.cam_in")
    full("pam", "PAM")
    conv("pam", 512, 64, "head.pam.query")
    conv("pam", 512, 64, "head.pam.key")
    conv("pam", 512, 512, "head.pam.value")
    out.append(("pam_gamma", (1,), "head.pam.gamma"))
    full("cam", "CAM")
    out.append(("cam_gamma", (1,), "head.cam.gamma"))
    conv_bn("DA_head", 512, 512, 3, "head.pam_out")
    conv_bn("DA_head", 512, 512, 3, "head.cam_out")
    for ours in ("head.cls_pam", "head.cls_cam", "head.cls_fused"):
        conv("DA_head", 512, num_classes, ours)
    return out


def marked(params):
    """Zero arrays with a distinct marker in element 0, so a swapped same-shape pair would show."""
    raw = {}
    for i, (name, shape, _) in enumerate(params):
        raw[name] = np.zeros(shape, "float32")
        raw[name].flat[0] = i + 1
    return raw
