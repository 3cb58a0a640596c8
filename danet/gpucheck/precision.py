"""Which kernels ran in which precision: counted by Paddle while they run (dygraph, the PIR executor) or read from a
legacy Program's ops, and the rule the AMP checks apply to the counts (:func:`check_precision`)."""
import contextlib

from danet.gpucheck.common import Failed

# Kernels that compute the attention energies and their softmax: none may run in half precision.
ATTENTION_OPS = {"bmm", "matmul", "matmul_v2", "softmax", "flash_attn", "flash_attn_unpadded",
                 "memory_efficient_attention", "variable_length_memory_efficient_attention",
                 "fused_dot_product_attention", "scaled_dot_product_attention"}


@contextlib.contextmanager
def kernel_dtypes():
    """Yields a dict filled at exit with {op: [fp16, bf16, fp32, other] kernel calls} of the block.

    Paddle counts every kernel it runs by dtype while ``FLAGS_low_precision_op_list`` is set (dygraph and the
    PIR executor); op names lose ``pd_op.``, an in-place ``_`` and ``_grad``, so backward calls count too.
    """
    import paddle

    core = paddle.base.core
    counts = {}
    core.clear_low_precision_op_list()
    paddle.set_flags({"FLAGS_low_precision_op_list": 1})
    try:
        yield counts
    finally:
        raw = core.get_low_precision_op_list()
        paddle.set_flags({"FLAGS_low_precision_op_list": 0})
        counts.update(parse_kernel_counts(raw))


def parse_kernel_counts(raw):
    """{op: 'fp16,bf16,fp32,other'} (or lists) -> {normalised op: [4 ints]}, summing names that normalise alike."""
    counts = {}
    for name, value in (raw or {}).items():
        calls = [int(v) for v in (value.split(",") if isinstance(value, str) else value)][:4]
        op = _op_name(name)
        counts[op] = [a + b for a, b in zip(counts.get(op, [0, 0, 0, 0]), calls)]
    return counts


def _op_name(name):
    op = name.split(".", 1)[1] if name.startswith("pd_op.") else name
    op = op[:-5] if op.endswith("_grad") else op
    return op.rstrip("_")


def program_dtypes(program):
    """{op: [fp16, bf16, fp32, other]} of a legacy (Paddle 2.6) Program's ops by their inputs' dtype: one call per
    op, in the lowest precision among its floating inputs."""
    counts = {}
    block = program.global_block()
    for op in block.ops:
        kinds = set()
        for name in op.input_arg_names:
            if block.has_var(name):
                kinds.add(_dtype_kind(block.var(name).dtype))
        slot = 0 if "fp16" in kinds else 1 if "bf16" in kinds else 2 if "fp32" in kinds else 3
        calls = counts.setdefault(_op_name(op.type), [0, 0, 0, 0])
        calls[slot] += 1
    return counts


def _dtype_kind(dtype):
    text = str(dtype).lower()
    if "bf16" in text or "bfloat16" in text:
        return "bf16"
    if "fp16" in text or "float16" in text:
        return "fp16"
    return "fp32" if "fp32" in text or "float32" in text else "other"


def check_precision(counts, amp):
    """Raise Failed if an attention kernel ran in half precision, or (``amp``) no convolution did."""
    half = {op: c[0] + c[1] for op, c in counts.items() if op in ATTENTION_OPS and c[0] + c[1]}
    if half:
        raise Failed("attention kernels ran in half precision: " + ", ".join(f"{op} x{n}" for op, n in half.items()))
    attention = sum(sum(c) for op, c in counts.items() if op in ATTENTION_OPS)
    if not attention:
        raise Failed("no attention kernel was counted: cannot tell their precision")
    conv_half = sum(c[0] + c[1] for op, c in counts.items() if op.startswith("conv2d"))
    if amp and not conv_half:
        raise Failed("AMP did not run: no convolution kernel ran in float16")
    return f"attention kernels float32 ({attention} calls), convolutions in float16: {conv_half} calls"
