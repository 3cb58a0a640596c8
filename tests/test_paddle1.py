"""Paddle 1.5/1.6 weight files (danet.weights.paddle1) and the seed's names (danet.weights.sources.seed).

No real 1.x file exists here, so the test writers (tests/paddle1_writers.py) produce both layouts byte for byte as
Paddle 1.6's C++ does (``SaveTensorToDisk`` in save_load_util.cc; ``SerializeToStream``/``TensorToStream`` in
lod_tensor.cc and tensor_util.cc). The strongest checks compare with what Paddle 3.3 itself writes:
``paddle.save(tensor, path, use_binary_format=True)`` and ``paddle.static.save_vars`` still produce the
per-variable LoDTensor layout, and the TNUM records are the same TensorToStream bytes.
"""
import os
import pickle
import struct

import numpy as np
import paddle
import pytest
from paddle1_writers import ENUM, lod_tensor_file, marked, seed_params, tensor_desc, tnum_file, varint, write

import danet
from danet.errors import UserError
from danet.weights import paddle1
from danet.weights.sources import seed

SHAPES = [(), (1,), (2, 3), (4, 3, 2, 2)]


def sample(dtype, shape):
    values = np.arange(int(np.prod(shape)) or 1).reshape(shape) - 3
    return (values % 2 == 0) if dtype is np.bool_ else values.astype(dtype)


def assert_same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------- the byte layouts


def test_desc_encoder_matches_protobuf():
    from paddle.base.proto import framework_pb2

    for dtype in ENUM:
        for dims in [(), (1,), (64, 3, 7, 7), (2, -1)]:
            desc = framework_pb2.VarType.TensorDesc(data_type=ENUM[dtype], dims=list(dims))
            assert desc.SerializeToString() == tensor_desc(dtype, dims)
            assert paddle1.parse_tensor_desc(desc.SerializeToString()) == (ENUM[dtype], list(dims))
    packed = b"\x08\x05\x12\x03" + varint(2) + varint(3) + varint(4)  # a packed writer's form is read too
    assert paddle1.parse_tensor_desc(packed) == (5, [2, 3, 4])


def test_our_lod_writer_matches_paddle_bytes_and_reader_reads_paddle_files(tmp_path):
    """paddle.save(use_binary_format=True) writes a DenseTensor with SerializeToStream, as the 1.x save op did."""
    for dtype in ENUM:
        for shape in SHAPES:
            array = sample(dtype, shape)
            path = str(tmp_path / f"{np.dtype(dtype).name}_{len(shape)}")
            paddle.save(paddle.to_tensor(array), path, use_binary_format=True)
            with open(path, "rb") as f:
                assert f.read() == lod_tensor_file(array), (dtype, shape)
            assert_same(paddle1.read_lod_tensor(path), array)


def test_paddle_reads_our_lod_file_and_lod_is_skipped(tmp_path):
    array = np.random.rand(3, 2, 1, 1).astype("float32")
    path = write(tmp_path / "w", lod_tensor_file(array))
    np.testing.assert_array_equal(np.asarray(paddle.load(path)), array)
    with_lod = write(tmp_path / "seq", lod_tensor_file(array, lod=[[0, 1, 3]]))
    assert_same(paddle1.read_lod_tensor(with_lod), array)


def test_var_folder_written_by_paddle_save_vars(tmp_path):
    """paddle.static.save_vars (Paddle 3.3, one 'save' per variable) makes a subfolder for a '/' in a name."""
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        params = [paddle.static.create_parameter([4, 3, 3, 3], "float32", name="layer3.12/Conv2D_1.weight"),
                  paddle.static.create_parameter([1], "float32", name="pam_gamma"),
                  paddle.static.create_parameter([1], "int64", name="@LR_DECAY_COUNTER@",
                                                 default_initializer=paddle.nn.initializer.Constant(7))]
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        folder = str(tmp_path / "vars")
        paddle.static.save_vars(exe, folder, main, vars=params)
        want = {p.name: np.array(scope.find_var(p.name).get_tensor()) for p in params}
    paddle.disable_static()
    assert os.path.isfile(os.path.join(folder, "layer3.12", "Conv2D_1.weight"))
    write(os.path.join(folder, "__model__"), b"\x0a\x02program")  # skipped, as 1.5 load_persistables does
    write(os.path.join(folder, "optimizers", "Momentum_0"), pickle.dumps({"lr": 0.01}))
    got = paddle1.read_var_folder(folder)
    assert sorted(got) == sorted(want)
    for name in want:
        assert_same(got[name], want[name])
    assert paddle1.is_var_folder(folder) and not paddle1.is_tnum(folder)


def test_tnum_round_trip_our_writer(tmp_path):
    tensors = {f"resnet101/Conv2D_{i}.weight": sample(dtype, shape)
               for i, (dtype, shape) in enumerate((d, s) for d in ENUM for s in SHAPES)}
    tensors["pam_gamma"] = np.zeros([1], "float32")
    path = write(tmp_path / "m.pdparams", tnum_file(tensors))
    got = paddle1.read_tnum(path)
    assert list(got) == sorted(tensors)  # std::map order
    for name, array in tensors.items():
        assert_same(got[name], array)
    assert paddle1.is_tnum(path) and not paddle1.is_var_folder(path)


def test_tnum_with_records_paddle_wrote(tmp_path):
    """The TNUM tensor record is TensorToStream, i.e. a Paddle-written LoDTensor file minus its 12-byte LoD head."""
    tensors = {"DA_head/Conv2D_6.weight": np.random.rand(19, 512, 1, 1).astype("float32"),
               "layer1.0/BatchNorm_3.running_var": np.random.rand(256).astype("float64"),
               "global_step": np.array([5], "int32")}
    records = {}
    for name, array in tensors.items():
        path = str(tmp_path / "one")
        paddle.save(paddle.to_tensor(array), path, use_binary_format=True)
        with open(path, "rb") as f:
            head, records[name] = f.read(12), f.read()
        assert head == struct.pack("<IQ", 0, 0)
    path = write(tmp_path / "m.pdopt", tnum_file(tensors, reserved=b"\xff" * 256, records=records))
    got = paddle1.read_tnum(path)
    for name, array in tensors.items():
        assert_same(got[name], array)


# ---------------------------------------------------------------------------------------- errors


def one_line_error(call, *must_contain):
    with pytest.raises(UserError) as err:
        call()
    text = str(err.value)
    assert "\n" not in text
    for part in must_contain:
        assert part in text, text
    return text


def test_truncated_tnum_names_file_and_tensor(tmp_path):
    data = tnum_file({"a/Conv2D_0.weight": np.ones((8, 4), "float32"), "b": np.ones(3, "int64")})
    for cut in (100, 262, 280, len(data) - 5):
        path = write(tmp_path / f"cut{cut}.pdparams", data[:cut])
        one_line_error(lambda p=path: paddle1.read_tnum(p), path, "truncated")
    text = one_line_error(lambda: paddle1.read_tnum(str(tmp_path / f"cut{len(data) - 5}.pdparams")))
    assert "'b'" in text


def test_wrong_tag_unknown_dtype_and_short_data(tmp_path):
    good = tnum_file({"x": np.ones(2, "float32")})
    wrong = write(tmp_path / "wrong.pdparams", good[:256] + b"ABCD" + good[260:])
    one_line_error(lambda: paddle1.read_tnum(wrong), wrong, "TNUM")
    assert not paddle1.is_tnum(wrong)
    desc = b"\x08\x07\x10\x02"  # data type 7 (LOD_TENSOR) is no POD type
    record = struct.pack("<Ii", 0, len(desc)) + desc + b"\0" * 8
    bad = write(tmp_path / "dtype.pdparams", good[:268] + b"NAME" + struct.pack("<Q", 1) + b"x" + record)
    one_line_error(lambda: paddle1.read_tnum(bad), bad, "'x'", "data type 7")
    short = write(tmp_path / "short", lod_tensor_file(np.ones((4, 4), "float32"))[:-10])
    one_line_error(lambda: paddle1.read_lod_tensor(short), short, "[4, 4]", "truncated")


def test_folder_errors_name_the_file(tmp_path):
    folder = tmp_path / "ckpt"
    write(folder / "layer1.0" / "Conv2D_0.weight", lod_tensor_file(np.ones((2, 2), "float32")))
    junk = write(folder / "layer1.0" / "notes.txt", b"trained on 4 GPUs for 240 epochs\n")
    one_line_error(lambda: paddle1.read_var_folder(str(folder)), junk)
    os.remove(junk)
    combined = write(folder / "both", lod_tensor_file(np.ones(2, "float32")) * 2)
    one_line_error(lambda: paddle1.read_var_folder(str(folder)), combined, "combined")
    empty = tmp_path / "empty"
    write(empty / "__model__", b"program")
    one_line_error(lambda: paddle1.read_var_folder(str(empty)), str(empty), "no tensor")
    assert not paddle1.is_var_folder(str(empty))


# ---------------------------------------------------------------------------------------- the seed's names



@pytest.mark.parametrize("depth", [101, 50])
def test_seed_names_load_strictly(depth):
    params = seed_params(depth)
    raw = marked(params)
    raw.update({"layer3.1/Conv2D_1.weight_velocity_0": np.zeros(1, "float32"), "@LR_DECAY_COUNTER@":
                np.zeros(1, "int64"), "learning_rate_0": np.zeros(1, "float32"), "global_step": np.zeros(1, "int32")})
    assert seed.infer_config(raw) == {"backbone": f"resnet{depth}", "num_classes": 19, "dilated": True,
                                      "multi_grid": True, "multi_dilation": (4, 8, 16)}
    mapped, dropped = seed.to_structured(raw)
    assert sorted(dropped) == ["@LR_DECAY_COUNTER@", "global_step", "layer3.1/Conv2D_1.weight_velocity_0",
                               "learning_rate_0"]
    model = danet.build_model(backbone=f"resnet{depth}", num_classes=19, multi_grid=True, multi_dilation=(4, 8, 16))
    state = model.state_dict()
    assert len(params) == len(state) == (554 if depth == 101 else 299)
    for key, value in state.items():
        assert key in mapped and list(mapped[key].shape) == list(value.shape), key
    assert set(mapped) == set(state)
    model.set_state_dict(mapped)
    state = model.state_dict()
    for i, (_, _, ours) in enumerate(params):
        assert state[ours].numpy().flat[0] == i + 1, ours


def test_seed_counter_offset_and_unmapped_names():
    raw = marked(seed_params(50))
    shifted = {k.replace("layer2.1/Conv2D_", "layer2.1/Conv2D_1").replace("layer2.1/BatchNorm_", "layer2.1/BatchNorm_1")
               : v for k, v in raw.items()}  # counters 10..13 instead of 0..3
    assert seed.to_structured(shifted)[0].keys() == seed.to_structured(raw)[0].keys()
    extra = dict(raw, **{"resnet50/FC_0.w_0": np.zeros((2048, 1000), "float32")})
    one_line_error(lambda: seed.to_structured(extra), "resnet50/FC_0.w_0")
    partial = {k: v for k, v in raw.items() if not k.startswith("layer4.2/")}
    one_line_error(lambda: seed.infer_config(partial), "blocks per stage")
