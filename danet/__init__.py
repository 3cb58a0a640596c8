"""DANet (Dual Attention Network for Scene Segmentation) for PaddlePaddle.

``from danet import build_model`` gives the model; the entry points are ``danet.train_executor``,
``danet.train_dygraph`` and ``danet.eval``. Importing the package changes no global state.
"""
# Paddle 2.6's libpaddle.so exports a zlib of its own: loaded first, it captures the PNG decoders of OpenCV and
# Pillow ("libpng error: IDAT: bad parameters to zlib"). Loading the system zlib before Paddle avoids that.
import warnings
import zlib  # noqa: F401

# Paddle warns on import that ccache is missing: it only speeds up compiling custom C++ operators, and this
# project builds none. That one message is dropped so a first run does not read as a failure.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

__version__ = "0.1.0"


def build_model(*args, **kwargs):
    """See :func:`danet.models.danet.build_model` (imported lazily so ``import danet`` stays cheap)."""
    from danet.models.danet import build_model as _build

    return _build(*args, **kwargs)


def load_model(path, **config):
    """See :func:`danet.weights.load_model`: the eval-mode model of any checkpoint this project reads."""
    from danet.weights import load_model as _load

    return _load(path, **config)


__all__ = ["build_model", "load_model", "__version__"]
