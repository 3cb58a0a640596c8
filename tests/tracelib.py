"""Helpers of the static-graph tests: a model traced into a Program and run by an Executor, to compare with dygraph.

``trace_and_run`` builds the Program in static mode (dygraph again after it) and runs it in a private scope, so
nothing of it is left in the process; it starts no process.
"""
import numpy as np
import paddle

from danet.engine.static import static_mode  # dygraph again after the block


def as_list(out):
    """A model's outputs as a list: the tuple of train mode, or the one tensor of eval mode."""
    return list(out) if isinstance(out, (tuple, list)) else [out]


def trace_and_run(make_model, state, images, training=False, read_state=False):
    """Trace ``make_model()`` (train or eval mode) on an image input of unknown batch, height and width, load the
    dygraph ``state`` {structured name: array} into the Program and run it on each of ``images``: per image, the
    list of outputs, or with ``read_state`` (outputs, {structured name: array in the scope after that run})."""
    with static_mode():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
            image = paddle.static.data("image", [None, 3, None, None], "float32")  # B, H, W unknown when traced
            traced = make_model()
            traced.train() if training else traced.eval()
            outs = as_list(traced(image))
            names = {k: v.name for k, v in traced.state_dict().items()}
        assert names.keys() == state.keys()
        exe = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(paddle.static.Scope()):
            exe.run(startup)
            paddle.static.set_program_state(main, {names[k]: v for k, v in state.items()})
            scope = paddle.static.global_scope()
            runs = []
            for x in images:
                fetched = exe.run(main, feed={"image": x}, fetch_list=outs)
                if read_state:
                    fetched = fetched, {k: np.array(scope.find_var(n).get_tensor()) for k, n in names.items()}
                runs.append(fetched)
            return runs
