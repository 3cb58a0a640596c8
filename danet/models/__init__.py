from danet.models.danet import BACKBONES, DANet, build_model

__all__ = ["BACKBONES", "DANet", "build_model"]
