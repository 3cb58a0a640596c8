"""Data: the list-file data set, (image, label) transforms, the synthetic default set, Cityscapes preparation.

Public names are resolved on first use (PEP 562), so ``import danet.data`` loads neither Paddle nor OpenCV.
"""
import importlib

_EXPORTS = {
    "cityscapes": ("CLASS_NAMES", "PALETTE", "LABEL_ID_TO_TRAIN_ID", "TRAIN_ID_TO_LABEL_ID", "colorize",
                   "read_list", "SegDataset"),
    "transforms": ("Compose", "RandomResizeShortSide", "RandomHorizontalFlip", "PadToSize", "RandomCrop",
                   "RandomScaleCrop", "RandomGaussianBlur", "RandomColorJitter", "Normalize", "ToCHW", "NormalizeToCHW",
                   "build_train_transform", "build_val_transform", "limit_cv2_threads", "IGNORE_INDEX"),
    "synthetic": ("make_synthetic_dataset", "render_scene", "USED_TRAIN_IDS"),
    "prepare": ("prepare_cityscapes", "PrepareSummary"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return __all__
