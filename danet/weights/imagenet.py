"""ImageNet backbones of ``paddle.vision.models.resnet*`` as initial weights of this project's backbone."""


def is_vision_resnet(raw):
    return "conv1.weight" in raw and "bn1.weight" in raw and "layer1.0.conv1.weight" in raw


def vision_resnet_to_backbone(raw):
    """Rename ``paddle.vision.models.resnet*`` weights (ImageNet) to this backbone's names.

    Both are ResNet v1.5 with a 7x7 stem; here each conv and its BatchNorm form one ``conv_bn``
    Sequential: ``layer1.0.conv2.weight`` -> ``backbone.layer1.0.conv2.0.weight`` and
    ``layer1.0.bn2.weight`` -> ``backbone.layer1.0.conv2.1.weight``. The classifier ``fc`` is dropped.
    """
    out = {}
    for key, value in raw.items():
        if key.startswith("fc."):
            continue
        parts = key.split(".")
        name = parts[-2]
        if name.startswith("conv") and name[4:].isdigit():
            parts[-2:-1] = [name, "0"]
        elif name.startswith("bn") and name[2:].isdigit():
            parts[-2:-1] = [f"conv{name[2:]}", "1"]
        out["backbone." + ".".join(parts)] = value
    return out
