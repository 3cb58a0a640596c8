"""What the two training entry points share: data, device, the step of the chosen mode, the loop."""
import logging
import os
import sys
import tempfile

import numpy as np
import paddle

from danet.data.cityscapes import SegDataset
from danet.data.loader import WorkerLoader
from danet.data.transforms import build_train_transform, build_val_transform, limit_cv2_threads
from danet.engine.loop import Trainer
from danet.errors import UserError
from danet.options import parse
from danet.runtime import run_main, seed_everything, setup_device, setup_logging

log = logging.getLogger(__name__)


def main(entry, argv=None):
    from danet.cli import explicit_flags
    from danet.options import build_parser

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse(entry, argv)
    args.explicit = explicit_flags(build_parser(entry), argv)
    return run_main(train, args)


def check_writable(folder):
    """Fail before training, not at the first checkpoint hours later."""
    try:
        os.makedirs(folder, exist_ok=True)
        # A probe of this process's own: the ranks of a data-parallel run check the same folder at once.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-") as f:
            f.write(b"ok")
            f.flush()
    except OSError as e:
        raise UserError(f"--save_dir {folder} is not writable ({e.strerror}): choose another folder") from None


def build_loader(args, world_size):
    train_set = SegDataset(args.data_folder, "train", args.dataset,
                           build_train_transform(args.base_size, args.crop_size, scale=args.scale,
                                                 input_norm=args.input_norm),
                           num_classes=args.num_classes, preset=args.preset)
    if args.batch_size * world_size > len(train_set):
        raise UserError(f"--batch_size {args.batch_size} x {world_size} devices is more than the {len(train_set)} "
                        "training images: lower --batch_size")
    sampler = paddle.io.DistributedBatchSampler(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
    if args.num_workers == 0:
        return InlineLoader(train_set, sampler), sampler
    limit_cv2_threads(args.num_workers)  # before the workers fork: they inherit one OpenCV thread each
    loader = paddle.io.DataLoader(train_set, batch_sampler=sampler, num_workers=args.num_workers, return_list=True,
                                  use_shared_memory=False)
    return WorkerLoader(loader, debug=args.debug), sampler


class InlineLoader:
    """Batches read in the calling thread, as numpy arrays.

    Paddle's DataLoader with num_workers=0 reads in a helper thread; an error there (a truncated
    image) kills the thread and leaves training waiting forever (Paddle 2.6 and 3.3).
    """

    def __init__(self, dataset, batch_sampler):
        self.dataset, self.batch_sampler = dataset, batch_sampler

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for indices in self.batch_sampler:
            samples = [self.dataset[i] for i in indices]
            yield [np.stack(field) for field in zip(*samples)]


def train(args):
    world_size = paddle.distributed.get_world_size() if args.use_data_parallel else 1
    rank = paddle.distributed.get_rank() if args.use_data_parallel else 0
    check_writable(args.save_dir)
    setup_logging(os.path.join(args.log_root or args.save_dir, "train.log"), rank)
    device = setup_device(args.cuda, args.threads)
    log.info("danet %s on %s (Paddle %s), %d process(es): %s", args.entry, device, paddle.__version__, world_size,
             " ".join(f"--{k} {v}" for k, v in sorted(vars(args).items())
                      if v not in (None, False) and k not in ("explicit", "entry")))
    initial = args.pretrained or (args.save_model if args.load_pretrained_model or args.load_better_model else None)
    initial_weights = adopt_model_settings(args, initial)
    seed_everything(args.seed)
    if world_size > 1 and args.entry == "train_dygraph":
        paddle.distributed.init_parallel_env()
    loader, sampler = build_loader(args, world_size)
    val_set = SegDataset(args.data_folder, "val", args.dataset, build_val_transform(args.input_norm),
                         num_classes=args.num_classes, preset=args.preset) if args.eval_interval and rank == 0 else None
    steps_per_epoch = args.step_per_epoch or len(loader)
    if args.entry == "train_executor":
        from danet.engine.static import StaticStep

        paddle.enable_static()
        step = StaticStep(args, steps_per_epoch)
    else:
        from danet.engine.dygraph import DygraphStep

        step = DygraphStep(args, steps_per_epoch)
    trainer = Trainer(args, step, loader, sampler, val_set, rank, _vdl_writer(args, rank))
    resumed = args.resume and trainer.resume(args.resume)
    if initial and not resumed:
        step.load_initial(initial, initial_weights)
    trainer.train()
    return trainer


def adopt_model_settings(args, initial):
    """Take the model settings of the run's starting point for every model flag not given on the command line.

    The starting point is the checkpoint ``--resume`` continues, else the initial weights (``--pretrained``,
    the seed's ``--load_pretrained_model``): an imported mmseg or PaddleSeg checkpoint brings its stem,
    shortcuts, dilations, upsampling and input normalisation, so fine-tuning it needs no variant flags.
    Flags that were given win (and --resume refuses a checkpoint they contradict). Returns the initial
    weights when it read them (None otherwise), so they are read once.
    """
    from danet import checkpoint, weights
    from danet.engine.common import ARCH_KEYS, MEMBER_DEFAULTS, MEMBER_KEYS, arch

    config, source, initial_weights = None, None, None
    resume_dir = None
    if args.resume:
        resume_dir = checkpoint.read_pointer(args.save_dir, "latest") if args.resume == "latest" \
            else checkpoint.resolve(args.resume)[1]
    if resume_dir and os.path.isfile(os.path.join(resume_dir, checkpoint.STATE_FILE)):
        config, source = checkpoint.read_state(resume_dir).get("config"), resume_dir
    elif initial and not resume_dir:
        initial_weights = weights.read_weights(initial, arch(vars(args)))
        config, source = initial_weights.config, initial_weights.path
    if config:
        saved, current = arch(config), arch(vars(args))
        explicit = getattr(args, "explicit", ARCH_KEYS + MEMBER_KEYS)  # args made without main(): all given
        adopted = {k: v for k, v in saved.items() if k not in explicit and v != current.get(k)}
        own = MEMBER_DEFAULTS.get(adopted.get("model", current["model"]), {})  # settings of the model that runs
        adopted = {k: v for k, v in adopted.items() if k not in MEMBER_KEYS or k in own}
        if "num_classes" in adopted and not args.resume:  # fine-tuning on a data set of other classes: a new head
            del adopted["num_classes"]
        for key, value in adopted.items():
            setattr(args, key, value)
        if adopted:
            log.info("model settings from %s: %s", source, ", ".join(f"{k}={v}" for k, v in adopted.items()))
    return initial_weights


def _vdl_writer(args, rank):
    if not args.use_vdl or rank != 0:
        return None
    try:
        from visualdl import LogWriter
    except ImportError:
        raise UserError("--use_vdl needs VisualDL: pip install visualdl") from None
    return LogWriter(logdir=os.path.join(args.save_dir, "vdl"))
