"""A crash at any moment of saving or pruning leaves only whole checkpoints under checkpoint names.

The crash is simulated in-process: an exception that no handler catches (like SIGKILL, nothing after it runs)
raised from inside a file operation, after part of the work was done.
"""
import os

import pytest

from danet import checkpoint


class Killed(BaseException):
    """Stands for SIGKILL: not an OSError, so ``rmtree(ignore_errors=True)`` does not swallow it."""


def _save(save_dir, name, payload=b"weights", pointers=("latest",)):
    def write_files(folder):
        with open(os.path.join(folder, "model.pdparams"), "wb") as f:
            f.write(payload)
        with open(os.path.join(folder, "model.pdopt"), "wb") as f:
            f.write(payload * 2)

    return checkpoint.save_checkpoint(str(save_dir), name, write_files, {"epoch": int(name[-4:])}, pointers)


def _names(save_dir):
    return sorted(os.listdir(save_dir))


def _whole(save_dir):
    """Every epoch_* directory passes read_state (state.json present, every file at its size)."""
    names = [n for n in _names(save_dir) if n.startswith("epoch_")]
    for name in names:
        checkpoint.read_state(os.path.join(save_dir, name))
    return names


def _crash_after(monkeypatch, function_name, calls):
    """Let ``os.<function_name>`` succeed ``calls`` times, then raise Killed instead of the next call."""
    real = getattr(os, function_name)
    count = [0]

    def crashing(*args, **kwargs):
        if count[0] == calls:
            raise Killed()
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(os, function_name, crashing)


@pytest.mark.parametrize("deleted_first", [0, 1, 2])
def test_a_crash_while_pruning_never_leaves_a_half_deleted_checkpoint(tmp_path, monkeypatch, deleted_first):
    for epoch in (1, 2, 3):
        _save(tmp_path, f"epoch_{epoch:04d}")
    _crash_after(monkeypatch, "unlink", deleted_first)  # the files of the pruned checkpoint go one by one
    with pytest.raises(Killed):
        checkpoint.prune(str(tmp_path), keep=2)
    monkeypatch.undo()
    assert _whole(tmp_path) == ["epoch_0002", "epoch_0003"]
    checkpoint.clean_partial(str(tmp_path))  # what a resume does first
    assert _names(tmp_path) == ["epoch_0002", "epoch_0003", "latest"]


def test_pruning_keeps_the_newest_and_every_checkpoint_a_pointer_names(tmp_path):
    _save(tmp_path, "epoch_0001", pointers=("latest", "best"))
    for epoch in (2, 3, 4):
        _save(tmp_path, f"epoch_{epoch:04d}")
    checkpoint.prune(str(tmp_path), keep=2)
    assert _names(tmp_path) == ["best", "epoch_0001", "epoch_0003", "epoch_0004", "latest"]


def test_a_crash_between_the_renames_of_a_resave_restores_the_previous_copy(tmp_path, monkeypatch):
    _save(tmp_path, "epoch_0001", b"first")
    _crash_after(monkeypatch, "replace", 1)  # the old copy moved aside, the new one not yet in place
    with pytest.raises(Killed):
        _save(tmp_path, "epoch_0001", b"second")
    monkeypatch.undo()
    assert "epoch_0001" not in _names(tmp_path)
    checkpoint.clean_partial(str(tmp_path))
    assert _names(tmp_path) == ["epoch_0001", "latest"]
    latest = checkpoint.read_pointer(str(tmp_path), "latest")
    checkpoint.read_state(latest)
    with open(os.path.join(latest, "model.pdparams"), "rb") as f:
        assert f.read() == b"first"


def test_a_crash_while_writing_leaves_the_previous_checkpoints_and_pointer(tmp_path, monkeypatch):
    _save(tmp_path, "epoch_0001")
    _crash_after(monkeypatch, "replace", 0)  # every file written and synced, the rename not done
    with pytest.raises(Killed):
        _save(tmp_path, "epoch_0002")
    monkeypatch.undo()
    assert ".tmp-epoch_0002" in _names(tmp_path)
    assert _whole(tmp_path) == ["epoch_0001"]
    checkpoint.clean_partial(str(tmp_path))
    assert _names(tmp_path) == ["epoch_0001", "latest"]
    assert checkpoint.read_pointer(str(tmp_path), "latest") == str(tmp_path / "epoch_0001")


def test_a_completed_resave_replaces_the_checkpoint_and_leaves_nothing_behind(tmp_path):
    _save(tmp_path, "epoch_0001", b"first")
    _save(tmp_path, "epoch_0001", b"second")
    assert _names(tmp_path) == ["epoch_0001", "latest"]
    with open(tmp_path / "epoch_0001" / "model.pdparams", "rb") as f:
        assert f.read() == b"second"


def test_saving_again_after_a_crash_between_the_renames_leaves_nothing_behind(tmp_path, monkeypatch):
    """Where nothing runs clean_partial first (danet-import --replace into a plain folder)."""
    _save(tmp_path, "epoch_0001", b"first")
    _crash_after(monkeypatch, "replace", 1)
    with pytest.raises(Killed):
        _save(tmp_path, "epoch_0001", b"second")
    monkeypatch.undo()
    _save(tmp_path, "epoch_0001", b"third")
    assert _names(tmp_path) == ["epoch_0001", "latest"]
    with open(tmp_path / "epoch_0001" / "model.pdparams", "rb") as f:
        assert f.read() == b"third"
