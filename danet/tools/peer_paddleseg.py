"""PaddleSeg 2.8.0's DANet (ResNet50_vd, output stride 8) timed on this machine, for ``danet-benchmark --peer``.

Runs in a Python that has PaddleSeg (``make peer-venv``), not this package, so it imports nothing of ours:

    .venv-peer/bin/python danet/tools/peer_paddleseg.py CROP STEPS

Prints one JSON line: the median seconds of a training step (batch 2, CROP x CROP, forward, its four
losses weighted 1/1/1/0.4 as PaddleSeg's config, backward and a Momentum update; the first two steps are
warm-up) and of an eval-mode forward pass on one 2*CROP x 2*CROP image.
"""
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")  # PaddleSeg's own import-time notices are not part of a measurement

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402
from paddleseg.models import DANet  # noqa: E402
from paddleseg.models.backbones import ResNet50_vd  # noqa: E402

WARMUP = 2
LOSS_WEIGHTS = (1.0, 1.0, 1.0, 0.4)


def time_training(model, crop, steps):
    optimizer = paddle.optimizer.Momentum(0.01, 0.9, parameters=model.parameters(), weight_decay=1e-4)
    images, labels = paddle.randn([2, 3, crop, crop]), paddle.randint(0, 19, [2, crop, crop])
    model.train()
    seconds = []
    for _ in range(steps + WARMUP):
        start = time.perf_counter()
        outputs = model(images)
        loss = sum(w * F.cross_entropy(o, labels, axis=1, ignore_index=255) for w, o in zip(LOSS_WEIGHTS, outputs))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds[WARMUP:]))


def time_forward(model, size, passes=3):
    image = paddle.randn([1, 3, size, size])
    model.eval()
    seconds = []
    with paddle.no_grad():
        for _ in range(passes + 1):
            start = time.perf_counter()
            model(image)
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds[1:]))


def main(argv):
    crop = int(argv[0]) if argv else 256
    steps = int(argv[1]) if len(argv) > 1 else 6
    paddle.set_device("cpu")
    paddle.seed(0)
    model = DANet(num_classes=19, backbone=ResNet50_vd(output_stride=8), backbone_indices=[2, 3])
    step = time_training(model, crop, steps)
    forward = time_forward(model, crop * 2)
    print(json.dumps({"peer": "paddleseg-2.8.0 DANet R50_vd os8", "paddle": paddle.__version__, "crop": crop,
                      "train_step_s_median": step, "train_img_per_s": 2 / step,
                      f"eval_fwd_s_median_{crop * 2}": forward}))


if __name__ == "__main__":
    main(sys.argv[1:])
