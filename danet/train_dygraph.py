"""Train DANet in dygraph mode: ``python -m danet.train_dygraph --help``."""
import os


def main(argv=None):
    # Read by Paddle when it loads: the static executor's worker threads fight the math threads on a CPU.
    os.environ.setdefault("FLAGS_new_executor_serial_run", "true")
    import danet.quiet  # noqa: F401  (Paddle's C++ log level: before Paddle loads)
    from danet.train import main as _main

    return _main("train_dygraph", argv)


def console():
    """The console script: exit status 0 on success (``main`` returns its result to callers in Python)."""
    main()


if __name__ == "__main__":
    console()
