"""Checkpoints: atomic directories and the pointers ``latest`` and ``best``.

A checkpoint is a directory ``<save_dir>/epoch_0005/`` holding the weight files and ``state.json``
(format, epoch, iteration, best mIoU, LR scheduler state, model config, file sizes). It is written
into ``<save_dir>/.tmp-epoch_0005`` and renamed into place after every file is fsync'ed, so a crash
leaves either the whole checkpoint or none. ``latest`` and ``best`` are small text files naming a
checkpoint directory, replaced the same way after the directory exists.

Reading the weights in a checkpoint is :mod:`danet.weights`' job (without running code from the file).
"""
import io
import json
import logging
import os
import pickle
import re
import shutil

import numpy as np

from danet.errors import UserError

log = logging.getLogger(__name__)
STATE_FILE = "state.json"
POINTERS = ("latest", "best")

def save_arrays(path, arrays):
    """Write ``{name: ndarray}`` in the format ``paddle.load`` reads (a pickle of arrays)."""
    buf = io.BytesIO()
    pickle.dump({k: np.asarray(v) for k, v in arrays.items()}, buf, protocol=4)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _fsync_tree(folder):
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pointer(save_dir, pointer, name):
    tmp = os.path.join(save_dir, f".tmp-{pointer}")
    with open(tmp, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(save_dir, pointer))
    _fsync_dir(save_dir)


def read_pointer(save_dir, pointer):
    path = os.path.join(save_dir, pointer)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        name = f.read().strip()
    return os.path.join(save_dir, name) if name and os.path.isdir(os.path.join(save_dir, name)) else None


def save_checkpoint(save_dir, name, write_files, state, pointers=("latest",)):
    """Atomically write checkpoint ``save_dir/name``.

    ``write_files(tmp_dir)`` writes the weight files; ``state`` (JSON-able) goes to ``state.json``
    with the size of every file, checked when the checkpoint is read.
    """
    final = os.path.join(save_dir, name)
    tmp, old = os.path.join(save_dir, f".tmp-{name}"), os.path.join(save_dir, f".old-{name}")
    if os.path.isdir(old) and not os.path.exists(final):  # an earlier re-save of it stopped between its renames
        os.replace(old, final)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write_files(tmp)
    state = dict(state, files={f: os.path.getsize(os.path.join(tmp, f)) for f in sorted(os.listdir(tmp))})
    with open(os.path.join(tmp, STATE_FILE), "w") as f:
        json.dump(state, f, indent=1)
    _fsync_tree(tmp)
    if os.path.exists(final):  # re-saving the same epoch (a resumed run): move the old one aside first
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(save_dir)
    for pointer in pointers:
        write_pointer(save_dir, pointer, name)
    return final


def prune(save_dir, keep, prefix="epoch_"):
    """Delete the oldest ``prefix*`` checkpoints beyond ``keep``, never one a pointer names.

    A checkpoint is first renamed to ``.del-<name>`` (atomic), then deleted, so a crash while deleting
    never leaves a half-deleted directory under a checkpoint's name.
    """
    protected = {read_pointer(save_dir, p) for p in POINTERS}
    pattern = re.compile(re.escape(prefix) + r"\d+$")  # epoch_0005, not a converted epoch_0005-dygraph beside it
    names = sorted(n for n in os.listdir(save_dir) if pattern.match(n) and os.path.isdir(os.path.join(save_dir, n)))
    for name in names[:-keep] if keep > 0 else names:
        path = os.path.join(save_dir, name)
        if path not in protected:
            doomed = os.path.join(save_dir, f".del-{name}")
            shutil.rmtree(doomed, ignore_errors=True)
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def clean_partial(save_dir):
    """Tidy what an interrupted save or prune left behind.

    ``.tmp-*`` (a checkpoint or pointer not yet in place) and ``.del-*`` (a checkpoint being deleted) go.
    ``.old-<name>`` is the complete previous copy of a checkpoint being re-saved: it goes if ``<name>`` is
    in place, and is put back as ``<name>`` if the crash came between the two renames.
    """
    if not os.path.isdir(save_dir):
        return
    for name in sorted(os.listdir(save_dir)):
        path = os.path.join(save_dir, name)
        if name.startswith(".old-") and not os.path.exists(os.path.join(save_dir, name[len(".old-"):])):
            os.replace(path, os.path.join(save_dir, name[len(".old-"):]))
            log.warning("restored %s: a re-save of it was interrupted", name[len(".old-"):])
        elif name.startswith((".tmp-", ".old-", ".del-")):
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def read_state(ckpt_dir):
    """``state.json`` of a complete checkpoint; a missing or short file is a clear error."""
    path = os.path.join(ckpt_dir, STATE_FILE)
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{ckpt_dir} is not a checkpoint of this project (no {STATE_FILE})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is damaged ({e}); use another checkpoint") from None
    for name, size in state.get("files", {}).items():
        actual = os.path.getsize(os.path.join(ckpt_dir, name)) if os.path.exists(os.path.join(ckpt_dir, name)) else -1
        if actual != size:
            raise UserError(f"{os.path.join(ckpt_dir, name)} is missing or truncated ({actual} of {size} bytes); "
                            "use another checkpoint")
    return state


def resolve(path):
    """Find the checkpoint meant by ``path``.

    Accepts a checkpoint directory, a run directory (its ``best``, else ``latest``), a pointer
    file, a ``.pdparams`` file, or a prefix ``P`` with ``P.pdparams`` beside it (the seed's
    ``--save_model`` style). Returns ``(kind, path)`` with kind 'dir' or 'file'.
    """
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, STATE_FILE)):
            return "dir", path
        for pointer in ("best", "latest"):
            target = read_pointer(path, pointer)
            if target:
                return "dir", target
        if os.path.isfile(os.path.join(path, "model.pdparams")):
            return "dir", path
        raise UserError(f"{path} holds no checkpoint (no {STATE_FILE}, 'best' or 'latest' pointer, or model.pdparams)")
    if os.path.isfile(path) and os.path.basename(path) in POINTERS:
        target = read_pointer(os.path.dirname(path) or ".", os.path.basename(path))
        if target:
            return "dir", target
        raise UserError(f"pointer {path} names a checkpoint that does not exist")
    if os.path.isfile(path):
        return "file", path
    if os.path.isfile(path + ".pdparams"):
        return "file", path + ".pdparams"
    raise UserError(f"checkpoint {path} does not exist (looked for a directory, {path}.pdparams, or a file)")
