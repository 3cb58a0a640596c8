"""Paddle's pickled weight files (``.pdparams``/``.pdopt`` of ``paddle.save`` and ``paddle.static.save``), read safely.

A pickle can name any Python callable and run it while loading. These files are read with an unpickler
that rebuilds numpy arrays and plain containers only and refuses everything else, so a checkpoint from
the internet cannot run code here.
"""
import pickle

import numpy as np

from danet.errors import UserError

_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("builtins", "tuple"), ("builtins", "list"), ("builtins", "dict"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
}


class _Refused(pickle.UnpicklingError):
    """The pickle names a class or function outside the allowed list (it could run code)."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"it asks for {module}.{name}")


def safe_load(path):
    """Read a Paddle ``.pdparams``/``.pdopt`` pickle as ``{name: np.ndarray | value}`` without running code.

    Paddle stores a tensor as ``(name, ndarray)``; those pairs come back as the array.
    """
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"checkpoint file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a weight file") from None
    except _Refused as e:
        raise UserError(f"refusing to load {path}: {e}, and only arrays and plain containers are loaded, never code; "
                        "use a checkpoint you trust, re-saved with paddle.save(model.state_dict())") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise UserError(f"{path} is truncated or not a Paddle weight file ({type(e).__name__}: {e}); "
                        "use another checkpoint") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return {k: _unwrap(v) for k, v in obj.items() if k != "StructuredToParameterName@@"}


def _unwrap(value):
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], np.ndarray):
        return value[1]
    return value


def is_pickle(path):
    """True if ``path`` starts like a pickle (protocol 2+), the format of ``paddle.save`` in 2.x and 3.x."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"
