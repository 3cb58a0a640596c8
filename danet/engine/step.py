"""The contract between the training loop and a graph mode: what a step object has and does.

:class:`danet.engine.loop.Trainer` drives any object of this shape; :class:`~danet.engine.dygraph.DygraphStep`
and :class:`~danet.engine.static.StaticStep` are the two there are. Neither the loop nor the checkpoint
code knows which graph mode runs.
"""
from typing import Callable, NamedTuple, Protocol


class StepResult(NamedTuple):
    """One training iteration: the total loss, each output's loss by name (fused, position, ...), the LR used."""

    loss: float
    parts: dict
    lr: float


class Step(Protocol):
    format: str  # the checkpoint format it writes and resumes: 'dygraph' or 'executor'
    config: dict  # the model settings (build_model keywords), saved in every checkpoint
    scheduler: object  # a danet.lr.DANetLR: called for the current LR, state_dict() saved with checkpoints

    def run(self, images, labels) -> StepResult:
        """Train on one batch: images float32 [B, 3, H, W], labels int64 [B, H, W] (numpy)."""

    def predict_fn(self, window_batch: int = 2) -> Callable:
        """The eval-mode model as a function: float32 [N, 3, h, w] -> logits [N, C, h, w] (numpy)."""

    def load_initial(self, path: str, found=None):
        """Initial weights (--pretrained): any file danet.weights reads (``found``: already read); missing tensors
        keep their values. Returns the danet.weights.LoadReport."""

    def write_files(self, folder: str) -> None:
        """Write the weight and optimizer files of a checkpoint into ``folder`` (state.json is the loop's)."""

    def restore(self, ckpt_dir: str, state: dict) -> None:
        """Continue from a checkpoint of this format: weights, every optimizer tensor, the LR schedule."""
