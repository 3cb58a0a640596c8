"""Paddle's multi-process DataLoader with its workers' failures reported as one clear line.

What Paddle (2.6 and 3.3) does when a worker fails, and what :class:`WorkerLoader` makes of it:

- a worker raises (a truncated image: our UserError): Paddle re-raises it in its reader thread, which
  prints a traceback of the worker's traceback, and the training loop gets a bare
  ``SystemError: Blocking queue is killed``. The reader thread's exception is caught with
  ``threading.excepthook`` and the worker's own message raised in the training loop instead;
- a worker dies (killed, out of memory): Paddle's SIGCHLD handler raises a SystemError wherever the main
  thread happens to be (inside a forward pass), or, for a signal, the reader thread stops ~5 s later with
  the same bare SystemError. The handler is wrapped so it only records the exit, and the loop gets one
  line saying a worker died;
- the iterator is shut down when the loop ends: left to ``__del__`` at interpreter exit, after
  multiprocessing killed the workers, Paddle can block for ever reading a half-written batch.
"""
import re
import signal
import threading

from danet.errors import UserError

_LAST_ERROR_LINE = re.compile(r"(?:^|\n)[\w.]*UserError: (.*)\s*$")
_EXIT = re.compile(r"DataLoader process \(pid \d+\) exited unexpectedly with code -?\d+")


class WorkerLoader:
    """Iterates ``loader`` (a multi-process ``paddle.io.DataLoader``); worker failures become a UserError.

    With ``debug`` the reader thread's traceback is still printed.
    """

    def __init__(self, loader, debug=False):
        self.loader, self.debug = loader, debug

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        failures, exits = [], []
        previous_hook = threading.excepthook
        threading.excepthook = self._thread_hook(failures, previous_hook)
        iterator, previous_handler, count = None, None, 0
        try:
            iterator = iter(self.loader)  # starts the workers and installs Paddle's SIGCHLD handler
            previous_handler = _record_worker_exits(exits)
            for batch in iterator:
                count += 1
                yield batch
        except (SystemError, RuntimeError) as e:
            reader = getattr(iterator, "_thread", None)  # it may still be handing the worker's error to the hook
            if reader is not None and reader is not threading.current_thread():
                reader.join(timeout=10)
            explained = _explain(failures, exits, e)
            if explained is None:
                raise
            raise explained from e
        finally:
            _shut_down(iterator)
            threading.excepthook = previous_hook
            if previous_handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGCHLD, previous_handler)
        if count < len(self.loader):  # Paddle ends an epoch early when it lost a worker between batches
            raise UserError(f"the data loader stopped after {count} of {len(self.loader)} batches (a worker "
                            "process died?): check memory, lower --num_workers, or use --num_workers 0")

    def _thread_hook(self, failures, previous):
        def hook(args):
            if str(args.exc_value).startswith("DataLoader worker("):  # Paddle's re-raise of a worker's exception
                failures.append(args.exc_value)
                if not self.debug:
                    return
            previous(args)

        return hook


def _record_worker_exits(exits):
    """Wrap Paddle's SIGCHLD handler so a dead worker is noted in ``exits`` instead of raising mid-step.

    Returns the handler to restore, or None when there is none to wrap (not the main thread, or no handler).
    """
    previous = signal.getsignal(signal.SIGCHLD) if hasattr(signal, "SIGCHLD") else None
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        try:
            previous(signum, frame)
        except SystemError as e:
            exits.append(e)

    signal.signal(signal.SIGCHLD, handler)
    return previous


def _shut_down(iterator):
    shut_down = getattr(iterator, "_try_shutdown_all", None)  # Paddle 2.6 and 3.x; a no-op after a full epoch
    if shut_down is not None:
        shut_down()


def _explain(failures, exits, error):
    """The UserError to raise for the loader's ``error``, given the reader thread's ``failures`` and the workers'
    ``exits``; None when nothing says a worker failed (then the error is not ours to explain)."""
    for failure in failures:
        found = _LAST_ERROR_LINE.search(str(failure))
        if isinstance(failure, UserError) and found:
            return UserError(found.group(1).strip())
    if failures:
        last = str(failures[0]).strip().splitlines()[-1]
        return UserError(f"a data loader worker failed: {last}; run with --num_workers 0 --debug for the traceback")
    found = [m.group(0) for m in (_EXIT.search(str(e)) for e in exits) if m]
    if not exits and "Blocking queue is killed" not in str(error):
        return None
    detail = f"{found[0]}; " if found else ""  # else a signal: Paddle only says its "Blocking queue is killed"
    return UserError(f"a data loader worker process died ({detail}killed, or out of memory?): "
                     "lower --num_workers, or use --num_workers 0")


def prefetch(dataset, count, workers, debug=False):
    """Yield ``dataset[i]`` as numpy arrays for i in 0..count-1 in order, read by ``workers`` processes ahead.

    Evaluation decodes whole images (a Cityscapes PNG pair takes ~60 ms) while the model runs on the
    previous one. ``workers=0`` reads in this process. Paddle's DataLoader without batching does the
    reading; :class:`WorkerLoader` turns a worker's error or death into one line.
    """
    if workers <= 0 or count <= 1:
        yield from (dataset[i] for i in range(count))
        return
    import numpy as np
    import paddle

    from danet.data.transforms import limit_cv2_threads

    limit_cv2_threads(workers)  # before the workers fork: they inherit one OpenCV thread each
    subset = dataset if count == len(dataset) else paddle.io.Subset(dataset, list(range(count)))
    loader = paddle.io.DataLoader(subset, batch_size=None, num_workers=min(workers, count), return_list=True,
                                  use_shared_memory=False)
    for image, label in WorkerLoader(loader, debug=debug):
        yield np.asarray(image), np.asarray(label)
