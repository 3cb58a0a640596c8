"""Segmentation loss: cross-entropy per output, averaged over the valid (non-ignored) pixels."""
import paddle
import paddle.nn.functional as F

from danet.constants import IGNORE_INDEX

# DANet's outputs in the order the model returns them in training (the last only with an auxiliary head).
OUTPUT_NAMES = ("fused", "position", "channel", "aux")


def cross_entropy(logits, label, ignore_index=IGNORE_INDEX):
    """Mean cross-entropy over pixels whose label is not ``ignore_index``; 0 when there are none.

    logits: [B, C, H, W] float; label: [B, H, W] int64. (The seed port divided by all pixels,
    ignored ones included, which shrank the gradient by the void fraction.)
    """
    label = label.astype("int64").unsqueeze(1)                         # [B, 1, H, W]
    per_pixel = F.cross_entropy(logits.astype("float32"), label, ignore_index=ignore_index,
                                reduction="none", axis=1)              # [B, 1, H, W], 0 where ignored
    valid = (label != ignore_index).astype("float32").sum()
    return per_pixel.sum() / paddle.maximum(valid, paddle.ones_like(valid))


def danet_loss(outputs, label, weights=(1.0, 1.0, 1.0), ignore_index=IGNORE_INDEX, names=OUTPUT_NAMES):
    """Weighted sum of the cross-entropies of a model's train-mode outputs (DANet's: fused, position, channel, and
    aux if present; each model declares its ``output_names`` and ``loss_weights``).

    Returns ``(total, parts)`` where ``parts`` maps each output's name to its (unweighted) loss.
    """
    if len(weights) != len(outputs) or len(names) < len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(weights)} loss weights and {len(names)} names")
    parts = {name: cross_entropy(o, label, ignore_index) for name, o in zip(names, outputs)}
    total = None
    for part, w in zip(parts.values(), weights):
        total = part * w if total is None else total + part * w
    return total, parts
