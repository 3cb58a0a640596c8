"""Released DANet weights of other implementations: each source is a name map plus config inference.

``read_foreign(path)`` reads a file of any supported source (detected from its keys; ``source=``
forces one) into :class:`~danet.weights.sources.common.Imported`: this project's structured names,
the model config the file reveals, and what was dropped and why. File formats: PyTorch ``.pth`` /
``.pth.tar`` (read without torch, see :mod:`danet.weights.pth`), Paddle pickles (``.pdparams``), and
the seed port's Paddle 1.x binary ``.pdparams`` and per-variable folders (:mod:`danet.weights.paddle1`).
"""
import importlib
import os

from danet.errors import UserError

# Detection order: the first source whose detect() accepts the keys. Sources have disjoint key patterns.
SOURCES = ("official", "dran", "mmseg", "ssseg", "paddleseg", "seed")


def source_module(name):
    if name not in SOURCES:
        raise UserError(f"unknown source {name!r}: choose one of {', '.join(SOURCES)}")
    return importlib.import_module(f"danet.weights.sources.{name}")


def container(path):
    """'pth' (PyTorch zip or legacy), 'paddle1-tnum', 'paddle1-folder', 'pdparams' (a pickle) or None."""
    from danet.weights import paddle1, pth

    if os.path.isdir(path):
        return "paddle1-folder" if paddle1.is_var_folder(path) else None
    with open(path, "rb") as f:
        head = f.read(14)
    # A zip (torch >= 1.6), or the legacy format, which opens with its magic number pickled (protocol 2).
    if head.startswith(b"PK") or head == b"\x80\x02\x8a\x0a" + pth.LEGACY_MAGIC.to_bytes(10, "little"):
        return "pth"
    if paddle1.is_tnum(path):
        return "paddle1-tnum"
    return "pdparams" if head[:1] == b"\x80" else None


def load_file(path):
    """The object a weight file holds, tensors as numpy arrays, read without running code from it."""
    from danet.weights import paddle1, pdparams, pth

    kind = container(path)
    readers = {"pth": pth.load_pth, "paddle1-tnum": paddle1.read_tnum, "paddle1-folder": paddle1.read_var_folder,
               "pdparams": pdparams.safe_load}
    if kind is None:
        raise UserError(f"{path} is not a weight file this project reads (PyTorch .pth, Paddle .pdparams, or a "
                        "Paddle 1.x checkpoint)")
    return readers[kind](path)


def detect_source(raw):
    """The name of the source whose keys the state dict ``raw`` has, or None."""
    keys = list(raw)
    return next((name for name in SOURCES if source_module(name).detect(keys)), None)


def read_foreign(path, source=None, obj=None, **options):
    """:class:`Imported` weights of the foreign checkpoint at ``path``; ``options`` go to the source's convert
    (e.g. ``align_corners`` where the file does not say)."""
    obj = load_file(path) if obj is None else obj
    candidates = [source] if source else SOURCES
    for name in candidates:
        module = source_module(name)
        raw, meta = module.split(obj)
        if raw is not None and (source or module.detect(list(raw))):
            imported = module.convert(raw, meta, path=path, **options)
            imported.meta.setdefault("source", name)
            return imported
    unknown_layout(path, obj)


def unknown_layout(path, obj):
    """Refuse a file whose keys no source (and not this project) knows, naming three of them."""
    keys = list(obj) if isinstance(obj, dict) else []
    sample = ", ".join(sorted(map(str, keys))[:3])
    raise UserError(f"{path}: no known DANet layout has these keys (e.g. {sample}); supported: this project's "
                    f"checkpoints and {', '.join(SOURCES)} (force one with --from)")
