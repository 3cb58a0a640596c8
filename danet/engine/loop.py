"""The one training loop; the graph modes differ only in the ``step`` object it drives.

What a step is and does is written in :mod:`danet.engine.step`. The loop owns epochs, seeding,
logging, validation, checkpoints and resume.
"""
import logging
import math
import sys
import time

import numpy as np
from tqdm import tqdm

from danet import checkpoint
from danet.engine.common import arch
from danet.errors import UserError
from danet.inference import MULTI_SCALES, evaluate
from danet.metrics import format_table
from danet.runtime import seed_everything

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss became NaN or inf."""


class Trainer:
    def __init__(self, args, step, loader, sampler=None, val_set=None, rank=0, writer=None):
        self.args, self.step, self.loader, self.sampler = args, step, loader, sampler
        self.val_set, self.rank, self.writer = val_set, rank, writer
        self.epoch, self.iteration, self.best_miou = 0, 0, -1.0
        self.steps_per_epoch = len(loader)
        self.total_iterations = args.epoch_num * self.steps_per_epoch

    # -- resume -------------------------------------------------------------------------------
    def resume(self, path):
        """Continue from ``path`` ('latest' = the newest complete checkpoint in --save_dir)."""
        checkpoint.clean_partial(self.args.save_dir)
        if path == "latest":
            ckpt_dir = checkpoint.read_pointer(self.args.save_dir, "latest")
            if ckpt_dir is None:
                log.info("no checkpoint in %s yet: starting from scratch", self.args.save_dir)
                return False
        else:
            kind, ckpt_dir = checkpoint.resolve(path)
            if kind != "dir":
                raise UserError(f"--resume needs a checkpoint directory of this project, got the file {ckpt_dir}")
        state = checkpoint.read_state(ckpt_dir)
        if state.get("format") != self.step.format:
            raise UserError(f"{ckpt_dir} is a {state.get('format')} checkpoint; resume it with the "
                            f"{state.get('format')} trainer (or convert it with tools/convert.py)")
        saved, wanted = arch(state.get("config") or {}), arch(self.step.config)
        if saved != wanted:  # --recompute and the like may change: they do not change what the weights mean
            changed = ", ".join(f"{k} {saved[k]} -> {wanted[k]}" for k in saved if saved[k] != wanted[k])
            raise UserError(f"{ckpt_dir} was trained with other model flags ({changed}): use the same model flags "
                            "to resume")
        self.step.restore(ckpt_dir, state)
        self.epoch, self.iteration, self.best_miou = state["epoch"], state["iteration"], state["best_miou"]
        log.info("resumed from %s: epoch %d, iteration %d, LR %.6g, %s", ckpt_dir, self.epoch, self.iteration,
                 self.step.scheduler(), self._best_text())
        return True

    # -- training -----------------------------------------------------------------------------
    def train(self):
        args = self.args
        log.info("training %d epochs x %d iterations, %d images per iteration and device", args.epoch_num,
                 self.steps_per_epoch, args.batch_size)
        while self.epoch < args.epoch_num:
            self.train_epoch()
            self.epoch += 1
            if self.rank != 0:
                continue
            miou = self.maybe_validate()
            self.maybe_save(miou)
        log.info("done: %d iterations, %s", self.iteration, self._best_text())

    def train_epoch(self):
        # Seeding per epoch makes a resumed run draw the same batches and augmentations as an unbroken one.
        seed_everything(self.args.seed + self.epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        start, images_done = time.time(), 0
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{self.args.epoch_num}", unit="it",
                   disable=self.rank != 0 or not sys.stderr.isatty(), leave=False)
        for images, labels in self.loader:
            if callable(getattr(images, "shape", None)):  # static mode yields DenseTensors
                images, labels = np.array(images), np.array(labels)
            loss, parts, lr = self.step.run(images, labels)
            self.iteration += 1
            images_done += len(images)
            if not all(math.isfinite(v) for v in [loss, *parts.values()]):
                raise TrainingDiverged(f"loss became {loss} at iteration {self.iteration} (epoch {self.epoch + 1}; "
                                       f"{_parts_text(parts, '%s')}, LR {lr:.6g}); the last good "
                                       "checkpoint is untouched: lower --lr or check the data, then --resume")
            speed = images_done / max(time.time() - start, 1e-9)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
            bar.update()
            self._log_iteration(loss, parts, lr, speed)
        bar.close()

    def _log_iteration(self, loss, parts, lr, speed):
        if self.rank != 0:
            return
        if self.writer is not None:
            scalars = [("train/loss", loss), *((f"train/loss_{name}", v) for name, v in parts.items()),
                       ("train/lr", lr), ("train/images_per_s", speed)]
            for tag, value in scalars:
                self.writer.add_scalar(tag, value, self.iteration)
        if self.iteration % self.args.log_iters == 0 or self.iteration == self.total_iterations:
            left = (self.total_iterations - self.iteration) * self.args.batch_size / max(speed, 1e-9)
            log.info("epoch %d iter %d/%d loss %.4f (%s) lr %.6g %.2f img/s ETA %s", self.epoch + 1, self.iteration,
                     self.total_iterations, loss, _parts_text(parts), lr, speed, _hms(left))

    # -- validation and checkpoints -----------------------------------------------------------
    def maybe_validate(self):
        interval = self.args.eval_interval
        if self.val_set is None or not interval or (self.epoch % interval and self.epoch != self.args.epoch_num):
            return None
        args = self.args
        # --multi_scales, --scales and --flip choose how this validation predicts, as they do in danet.eval;
        # scales are relative to each image's own size here.
        scales = tuple(args.scales or (MULTI_SCALES if args.multi_scales else (1.0,)))
        matrix = evaluate(self.step.predict_fn(), self.val_set, args.num_classes, base_size=None,
                          crop_size=args.crop_size, scales=scales, flip=args.flip, stride_rate=args.stride_rate,
                          progress=sys.stderr.isatty(), limit=args.val_limit or None, num_workers=args.num_workers)
        result = matrix.summary()
        names = class_names(self.args.num_classes, getattr(self.args, "preset", None))
        log.info("validation after epoch %d:\n%s", self.epoch, format_table(result, names))
        if self.writer is not None:
            self.writer.add_scalar("val/miou", result["miou"], self.iteration)
            for name, iou in zip(names, result["iou"]):
                if iou == iou:  # skip NaN (class absent)
                    self.writer.add_scalar(f"val_iou/{name}", iou, self.iteration)
        return result["miou"]

    def _best_text(self):
        return f"best mIoU {self.best_miou:.4f}" if self.best_miou >= 0 else "not validated yet"

    def maybe_save(self, miou):
        args = self.args
        is_best = miou is not None and miou > self.best_miou
        if is_best:
            self.best_miou = miou
        due = self.epoch % args.save_interval == 0 or self.epoch == args.epoch_num
        if not (due or is_best):
            return
        name = f"epoch_{self.epoch:04d}"
        state = dict(format=self.step.format, epoch=self.epoch, iteration=self.iteration, best_miou=self.best_miou,
                     miou=miou, scheduler=self.step.scheduler.state_dict(), config=self.step.config,
                     dataset=args.preset.describe() if getattr(args, "preset", None) is not None else None,
                     steps_per_epoch=self.steps_per_epoch, args=vars(args))
        pointers = ("latest", "best") if is_best else ("latest",)
        try:
            path = checkpoint.save_checkpoint(args.save_dir, name, self.step.write_files, jsonable(state), pointers)
        except OSError as e:  # e.g. a full disk: the half-written folder goes, the previous checkpoints stay
            checkpoint.clean_partial(args.save_dir)
            raise UserError(f"cannot write checkpoint {name} in {args.save_dir} ({e.strerror or e}): free space or "
                            "fix permissions, then run again with --resume (earlier checkpoints are intact)") from e
        checkpoint.prune(args.save_dir, args.keep_checkpoints)
        log.info("saved %s%s", path, f" (best mIoU {miou:.4f})" if is_best else "")


def _parts_text(parts, fmt="%.4f"):
    return " ".join(f"{name} {fmt % value}" for name, value in parts.items())


def class_names(num_classes, preset=None, saved=None):
    """The names of ``num_classes`` classes: the data set preset's, else those a checkpoint saved, else numbers."""
    for names in (preset.classes if preset is not None else None, saved):
        if names and len(names) == num_classes:
            return list(names)
    return [str(i) for i in range(num_classes)]


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return float(value) if hasattr(value, "__float__") else str(value)


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
