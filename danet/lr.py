"""Learning-rate schedules, the same step for step in both graph modes.

``lr_at`` is the formula; :class:`DANetLR` wraps it as a Paddle ``LRScheduler`` that both trainers
step once per iteration (so its state can be saved and restored with the checkpoint).

- poly:      base * (1 - t / total) ** power, reaching 0 at ``total`` steps;
- cosine:    base * (1 + cos(pi * epoch / epochs)) / 2, changing once per epoch;
- piecewise: base * 0.1 ** k after the epochs in ``boundaries`` (default 50, 100, 150).

With warm-up, the LR rises linearly from 0 to the schedule's own value at the end of the warm-up
(``t < W: lr = schedule(W) * t / W``), then follows the schedule at the same global step, so the
joint is continuous (the seed port's rule).
"""
import math

from paddle.optimizer.lr import LRScheduler

from danet.errors import UserError

SCHEDULES = ("poly", "cosine", "piecewise")


def lr_at(step, base_lr, total_steps, scheduler="poly", power=0.9, warmup_steps=0, steps_per_epoch=1,
          boundaries=(50, 100, 150)):
    """The learning rate at global iteration ``step`` (0-based)."""
    if scheduler not in SCHEDULES:
        raise UserError(f"unknown --lr_scheduler {scheduler!r}: choose one of {', '.join(SCHEDULES)}")
    if 0 < warmup_steps and step < warmup_steps:
        return _schedule(warmup_steps, base_lr, total_steps, scheduler, power, steps_per_epoch, boundaries) \
            * step / warmup_steps
    return _schedule(step, base_lr, total_steps, scheduler, power, steps_per_epoch, boundaries)


def _schedule(step, base_lr, total_steps, scheduler, power, steps_per_epoch, boundaries):
    step = min(step, total_steps)
    if scheduler == "poly":
        return base_lr * (1.0 - step / total_steps) ** power
    epoch = step // steps_per_epoch
    if scheduler == "cosine":
        epochs = max(1, math.ceil(total_steps / steps_per_epoch))
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return base_lr * 0.1 ** sum(epoch >= b for b in boundaries)


class DANetLR(LRScheduler):
    """``lr_at`` as a Paddle scheduler; ``last_epoch`` counts iterations, not epochs."""

    def __init__(self, base_lr, total_steps, scheduler="poly", power=0.9, warmup_steps=0, steps_per_epoch=1):
        if scheduler not in SCHEDULES:
            raise UserError(f"unknown --lr_scheduler {scheduler!r}: choose one of {', '.join(SCHEDULES)}")
        if total_steps < 1:
            raise UserError(f"the schedule has {total_steps} steps: check --epoch_num and --step_per_epoch")
        self.kwargs = dict(base_lr=base_lr, total_steps=total_steps, scheduler=scheduler, power=power,
                           warmup_steps=warmup_steps, steps_per_epoch=steps_per_epoch)
        super().__init__(learning_rate=base_lr)

    def get_lr(self):
        return lr_at(max(self.last_epoch, 0), **self.kwargs)

    def set_state_dict(self, state_dict):
        super().set_state_dict(state_dict)
        # The saved ``last_lr`` came from the old flags: a resume with another --lr continues this curve.
        self.last_lr = self.get_lr()
