"""The torch-free .pth reader: real torch files (zip and legacy) read exactly, hostile or broken files refused.

Tests marked ``partners`` write checkpoints with the real torch of the partner environment
(``DANET_PARTNER_PYTHON``); the others build torch's formats by hand so they run anywhere.
"""
import io
import os
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

from danet.errors import UserError
from danet.weights.pth import LEGACY_MAGIC, LEGACY_PROTOCOL, load_pth

META = {"mmseg_version": "0.30.0", "config": "norm_cfg = dict(type='SyncBN')\nmodel = dict(type='EncoderDecoder')\n",
        "CLASSES": ("road", "sidewalk", "building"), "PALETTE": [[128, 64, 128], [244, 35, 232], [70, 70, 70]],
        "time": "Mon Dec  1 15:10:00 2025", "iter": 80000, "lr": 0.01, "flag": True, "nothing": None,
        "raw": b"\x00\xff", "ids": {1, 2}, "hook_msgs": {"last_ckpt": "work_dirs/iter_80000.pth"}}

PARTNER_SCRIPT = r"""
import collections, sys
import numpy as np
import torch

out, meta = sys.argv[1], eval(sys.argv[2])
torch.manual_seed(0)
base = torch.randn(4, 6)
tensors = collections.OrderedDict([
    ("f32", torch.randn(3, 4)), ("f16", torch.randn(2, 3).half()), ("bf16", torch.randn(2, 3).bfloat16()),
    ("f64", torch.randn(5, dtype=torch.float64)), ("i64", torch.arange(-3, 3)),
    ("i32", torch.arange(6, dtype=torch.int32).reshape(2, 3)), ("i8", torch.tensor([-128, 0, 127], dtype=torch.int8)),
    ("u8", torch.tensor([0, 7, 255], dtype=torch.uint8)), ("bool", torch.tensor([True, False, True])),
    ("i16", torch.tensor([-300, 300], dtype=torch.int16)), ("u16", torch.tensor([0, 65535], dtype=torch.uint16)),
    ("c64", torch.tensor([1 + 2j, -3j], dtype=torch.complex64)),
    ("transposed", base.t()), ("sliced", base[1:, 2:]), ("every_other", base[:, ::2]),
    ("scalar", torch.tensor(3.5)), ("empty", torch.zeros(0, 3)),
])
conv = torch.nn.Conv2d(3, 4, 3)
opt = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
conv(torch.randn(1, 3, 5, 5)).sum().backward()
opt.step()
meta.update(np_float=np.float64(0.5), np_int=np.int64(7), np_array=np.arange(4, dtype=np.int32))
ckpt = {"meta": meta, "state_dict": tensors, "conv": conv.state_dict(), "optimizer": opt.state_dict(),
        "param": torch.nn.Parameter(torch.ones(2)), "epoch": 240, "best_pred": 0.8125}
for name, zipped in (("zip", True), ("legacy", False)):
    torch.save(ckpt, f"{out}/{name}.pth", _use_new_zipfile_serialization=zipped)
    torch.save(conv.state_dict(), f"{out}/conv_{name}.pt", _use_new_zipfile_serialization=zipped)
expected = {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in tensors.items()}
expected.update({"conv." + k: v.detach().numpy() for k, v in conv.state_dict().items()})
expected["momentum"] = opt.state_dict()["state"][0]["momentum_buffer"].numpy()
np.savez(f"{out}/expected.npz", **expected)
"""


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    """(folder with zip.pth, legacy.pth, conv_*.pt, expected.npz, None) or (None, why they could not be made)."""
    partner = os.environ.get("DANET_PARTNER_PYTHON")
    if not partner:
        return None, ("DANET_PARTNER_PYTHON is unset: point it at the partner environment's python, made by "
                      "`python3 -m venv .venv-partners && .venv-partners/bin/pip install torch==2.13.0`")
    out = tmp_path_factory.mktemp("torch_files")
    run = subprocess.run([partner, "-c", PARTNER_SCRIPT, str(out), repr(META)], capture_output=True, text=True,
                         timeout=120)
    if run.returncode:
        return None, f"{partner} could not write the torch files:\n{run.stderr[-2000:]}"
    return out, None


def _need(torch_files):
    out, why = torch_files
    if out is None:
        pytest.fail(why)
    return out, np.load(out / "expected.npz")


def _same(got, want):
    assert isinstance(got, np.ndarray) and got.flags.owndata and got.flags.c_contiguous
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.partners
@pytest.mark.process  # torch runs in the partner environment
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_checkpoint_reads_exactly(torch_files, fmt):
    out, expected = _need(torch_files)
    ckpt = load_pth(out / f"{fmt}.pth")
    assert list(ckpt) == ["meta", "state_dict", "conv", "optimizer", "param", "epoch", "best_pred"]
    state = ckpt["state_dict"]
    assert type(state) is dict and list(state) == [k for k in expected.files if "." not in k and k != "momentum"]
    for key, value in state.items():
        _same(value, expected[key])
    assert state["bf16"].dtype == np.float32 and state["scalar"].shape == () and state["empty"].shape == (0, 3)
    meta = ckpt["meta"]
    assert {k: meta[k] for k in META} == META and type(meta["CLASSES"]) is tuple
    assert type(meta["np_float"]) is np.float64 and meta["np_float"] == 0.5 and type(meta["np_int"]) is np.int64
    _same(meta["np_array"], np.arange(4, dtype=np.int32))
    for key in ("weight", "bias"):
        _same(ckpt["conv"][key], expected["conv." + key])
    _same(ckpt["optimizer"]["state"][0]["momentum_buffer"], expected["momentum"])
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["lr"] == 0.1 and group["params"] == [0, 1]
    _same(ckpt["param"], np.ones(2, np.float32))
    assert (ckpt["epoch"], ckpt["best_pred"]) == (240, 0.8125)


@pytest.mark.partners
@pytest.mark.process  # torch runs in the partner environment
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_conv2d_state_dict(torch_files, fmt):
    out, expected = _need(torch_files)
    state = load_pth(str(out / f"conv_{fmt}.pt"))
    assert type(state) is dict and list(state) == ["weight", "bias"]
    _same(state["weight"], expected["conv.weight"])
    _same(state["bias"], expected["conv.bias"])
    assert state["weight"].shape == (4, 3, 3, 3)


# --- torch's formats written by hand: a pickler that writes torch's globals without importing torch ---

class _Global:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle insists that a reduce function be callable
        raise AssertionError("never called")


class _Storage:
    def __init__(self, *pid):
        self.pid = pid


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, _OrderedDict())

    def __reduce__(self):
        return _Global("torch._utils", "_rebuild_tensor_v2"), self.args


class _OrderedDict(dict):
    def __reduce__(self):
        return _Global("collections", "OrderedDict"), (), None, None, iter(self.items())


class _Writer(pickle._Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            return self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        return super().save(obj, save_persistent_id)


def _dumps(obj):
    buf = io.BytesIO()
    _Writer(buf, protocol=2).dump(obj)
    return buf.getvalue()


FLOAT = _Global("torch", "FloatStorage")
DATA = np.arange(12, dtype=np.float32)


def _zip_file(path, obj, records, byteorder=b"little"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mymodel/data.pkl", _dumps(obj))
        z.writestr("mymodel/byteorder", byteorder)
        for key, raw in records.items():
            z.writestr(f"mymodel/data/{key}", raw)
    return path


def _zip_ckpt(storage_numel=12):
    s = _Storage("storage", FLOAT, "0", "cpu", storage_numel)
    return _OrderedDict(w=_Tensor(s, 0, (3, 4), (4, 1)), t=_Tensor(s, 0, (4, 3), (1, 4)),
                        part=_Tensor(s, 5, (2, 2), (4, 1)), name="w", ints=[1, (2, 3.5)])


def _check_small(ckpt):
    assert type(ckpt) is dict and list(ckpt) == ["w", "t", "part", "name", "ints"]
    full = DATA.reshape(3, 4)
    _same(ckpt["w"], full)
    _same(ckpt["t"], full.T.copy())
    _same(ckpt["part"], full[1:, 1:3].copy())
    assert ckpt["name"] == "w" and ckpt["ints"] == [1, (2, 3.5)]


@pytest.mark.parametrize("order", ["little", "big"])
def test_hand_built_zip(tmp_path, order):
    raw = DATA.astype("<f4" if order == "little" else ">f4").tobytes()
    _check_small(load_pth(_zip_file(tmp_path / "m.pth", _zip_ckpt(), {"0": raw}, order.encode())))


def _legacy_bytes(records=None):
    s = _Storage("storage", FLOAT, "0", "cpu", 12, None)
    view = _Storage("storage", FLOAT, "0", "cpu", 12, ("v", 4, 8))  # storage view: elements 4..11 of root "0"
    obj = _OrderedDict(w=_Tensor(s, 0, (3, 4), (4, 1)), t=_Tensor(s, 0, (4, 3), (1, 4)),
                       part=_Tensor(view, 1, (2, 2), (4, 1)), name="w", ints=[1, (2, 3.5)])
    head = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}))
    body = (12).to_bytes(8, "little") + DATA.tobytes()
    return head + _dumps(obj) + pickle.dumps(["0"], protocol=2) + body


def test_hand_built_legacy(tmp_path):
    path = tmp_path / "m.pth.tar"
    path.write_bytes(_legacy_bytes())
    _check_small(load_pth(path))


def _refusal(path, match):
    with pytest.raises(UserError) as err:
        load_pth(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    assert match in message, message
    return message


class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_code_in_the_pickle_is_refused_and_never_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"state_dict": _Evil(f"echo pwned > {marker}")}, protocol=2)
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", evil)
    else:
        path.write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, LEGACY_PROTOCOL, {})) + evil)
    message = _refusal(path, "it asks for os.system")
    assert message.startswith(f"refusing to load {path}") and "never code" in message
    assert not marker.exists()


@pytest.mark.parametrize("obj, name", [((eval, ("1",)), "builtins.eval"), (None, "argparse.Namespace")])
def test_other_globals_are_refused_by_name(tmp_path, obj, name):
    import argparse

    class Reduce:
        def __reduce__(self):
            return obj

    data = pickle.dumps(Reduce() if obj else argparse.Namespace(lr=0.01), protocol=2)
    path = tmp_path / "x.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data)
    _refusal(path, f"it asks for {name}")


def test_truncated_zip(tmp_path):
    whole = _zip_file(tmp_path / "whole.pth", _zip_ckpt(), {"0": DATA.tobytes()}).read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole[:len(whole) // 2])
    _refusal(cut, "truncated or damaged")


def test_truncated_legacy(tmp_path):
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(_legacy_bytes()[:-10])
    _refusal(path, "truncated or damaged")


def test_missing_storage_record(tmp_path):
    _refusal(_zip_file(tmp_path / "m.pth", _zip_ckpt(), {}), "lacks the storage record mymodel/data/0")


def test_storage_shorter_than_the_tensor(tmp_path):
    _refusal(_zip_file(tmp_path / "m.pth", _zip_ckpt(4), {"0": DATA[:4].tobytes()}), "needs 12 elements")
    _refusal(_zip_file(tmp_path / "n.pth", _zip_ckpt(), {"0": DATA[:4].tobytes()}), "truncated or damaged")


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    _refusal(path, "without data.pkl")


def test_not_a_torch_file(tmp_path):
    noise = tmp_path / "noise.pth"
    noise.write_bytes(b"\x13" + np.random.default_rng(0).bytes(4096))
    _refusal(noise, "is not a PyTorch checkpoint")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    _refusal(plain, "is not a PyTorch checkpoint")


def test_missing_file(tmp_path):
    _refusal(tmp_path / "nowhere.pth", "no such file")
