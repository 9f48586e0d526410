"""TensorFlow's runtime as the project uses it: TF1 graph mode, oneDNN on, quiet start-up, and
what this CPU can do."""

import os
import sys


def import_tf():
    """Import tensorflow.compat.v1 in TF1 graph mode, with TensorFlow's start-up log silenced.

    oneDNN: TensorFlow turns its oneDNN kernels off on x86 CPUs without AVX512_VNNI, AVX512_BF16
    or AMX (most AVX2 laptops and servers) and falls back to Eigen, whose convolutions and
    matmuls run at about half the speed there (an AVX2 AMD EPYC: a 4096^2 matmul 71 against 150
    GFLOP/s, an iteration 2.58 against 1.57 s). So it is turned on here, before TensorFlow is
    imported, unless the user set TF_ENABLE_ONEDNN_OPTS themselves.
    Set TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's own log again.
    """
    if 'tensorflow' not in sys.modules:
        os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
        quiet = os.environ['TF_CPP_MIN_LOG_LEVEL'] == '3'
        # Some C++ start-up lines are printed before TensorFlow reads TF_CPP_MIN_LOG_LEVEL,
        # so stderr itself is muted for the import (Python exceptions still propagate).
        with _muted_stderr(quiet):
            import tensorflow
        tensorflow.get_logger().setLevel('ERROR')  # deprecation notices of compat.v1
    import tensorflow.compat.v1 as tf
    if tf.executing_eagerly():
        tf.disable_v2_behavior()
    return tf


def tf1_random_normal(shape, mean, stddev):
    """tf.random_normal drawing what TensorFlow 1 drew in the course's cells.

    With a graph-level seed and no op seed, TF1 used the graph's op count at the moment the op
    was created as its op seed; tf.random_normal first creates the constants for shape, mean and
    stddev, so in a fresh graph the first call got op seed 3 and the second (after 6 ops) op
    seed 9. TF 2.x counts differently, so the constants are created here and the op count is
    passed explicitly. The notebook and the course-value tests draw their tensors with it.
    """
    tf = import_tf()
    graph = tf.get_default_graph()
    shape_t = tf.constant(shape, dtype=tf.int32)
    mean_t = tf.constant(mean, dtype=tf.float32)
    stddev_t = tf.constant(stddev, dtype=tf.float32)
    op_seed = len(graph.get_operations())
    return tf.random_normal(shape_t, mean_t, stddev_t, seed=op_seed)


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process (after import_tf)."""
    import_tf()
    from tensorflow.python.util import _pywrap_util_port
    return bool(_pywrap_util_port.IsMklEnabled())


class _muted_stderr:
    """Point file descriptor 2 at /dev/null for the duration of a with block."""

    def __init__(self, enabled=True):
        self.enabled = enabled

    def __enter__(self):
        if self.enabled:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)

    def __exit__(self, *exc):
        if self.enabled:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


def session_config(inter_op_threads=1):
    """The session settings of a style-transfer run.

    One op at a time (inter-op threads 1), each on all cores: the graph is a chain of large
    convolutions, and two running side by side only compete for the same cores (measured 4 %
    faster per iteration at 400x300 on 2 cores than TensorFlow's default).

    No grappler. It rewrites the graph of every new executor a session builds (a run builds
    several: the weights, the content and style passes, the fixed inputs, the training step;
    the tuning many more), and even trimmed to one pass it was half of the time the start-up's
    runs spent before their first op: 0.44-0.56 s in all, 0.19-0.31 s of it the training
    step's, against 0.18-0.23 s without it (400x300, AVX2 EPYC, five alternating pairs of
    processes). The graph is built as it would have left it where that matters: the Gram
    matrices without transposes (nst.fast_ops.use_fast_grams; grappler folded them into the
    matmuls), so a training step runs the same ops but for a dozen small ones of the costs'
    gradient and conv1_1's ReLU, which oneDNN's own pass (not grappler's) no longer fuses with
    the convolution and its bias (1-2 ms a step).

    Nor the session's own graph optimiser (level L0): it folded constants and merged common
    subexpressions in each executor's graph: 50 of the 85-115 ms the training step spent before
    its first op, to spare a step 33 ops of a scalar or a shape each (400x300, AVX2 EPYC): what
    depends on the fixed inputs alone is folded once by nst.optimize.fold_fixed, and the
    weights are variables.
    """
    tf = import_tf()
    config = tf.ConfigProto(inter_op_parallelism_threads=inter_op_threads)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.optimizer_options.opt_level = tf.OptimizerOptions.L0
    return config


def cpu_flags():
    """The set of this CPU's feature flags (from /proc/cpuinfo; empty where there is none)."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model():
    """This CPU's model name, or the machine type where /proc/cpuinfo has none."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


# The values oneDNN takes for ONEDNN_MAX_CPU_ISA (its documentation's list, with the older
# names of the AVX10 ones); it ignores any other value, as the cap does here.
ONEDNN_ISAS = ('SSE41', 'AVX', 'AVX2', 'AVX2_VNNI', 'AVX2_VNNI_2', 'AVX512_CORE',
               'AVX512_CORE_VNNI', 'AVX512_CORE_BF16', 'AVX10_1_512', 'AVX512_CORE_FP16',
               'AVX10_1_512_AMX', 'AVX512_CORE_AMX', 'AVX10_1_512_AMX_FP16',
               'AVX512_CORE_AMX_FP16', 'AVX10_2_512', 'AVX10_2_512_AMX_2')


def onednn_isa_cap():
    """(variable, instruction set) of a cap on oneDNN's kernels, such as ('ONEDNN_MAX_CPU_ISA',
    'AVX2'): ONEDNN_MAX_CPU_ISA, else its older name DNNL_MAX_CPU_ISA; None when oneDNN may use
    all this CPU has (neither set, ALL, or a value oneDNN does not know). The cap changes which
    kernels run, hence which paths are fastest, while the CPU's flags stay the same."""
    for name in ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA'):
        value = os.environ.get(name)
        if value:
            return (name, value.upper()) if value.upper() in ONEDNN_ISAS else None
    return None


def onednn_isa_limit():
    """The instruction set of onednn_isa_cap(), such as 'AVX2', or None."""
    cap = onednn_isa_cap()
    return cap[1] if cap else None


def no_bfloat16_reason():
    """Why bfloat16_support() is None here, for a one-line note."""
    cap = onednn_isa_cap()
    if cap and cpu_flags() & {'avx512_bf16', 'amx_bf16'}:
        return '%s=%s keeps oneDNN below AVX512_BF16' % cap
    return 'this CPU has no AVX512_BF16 or AMX-BF16'


def bfloat16_support(flags=None):
    """This CPU's native bfloat16 arithmetic as oneDNN may use it: 'amx' (AMX-BF16), 'avx512'
    (AVX512_BF16 only) or None.

    A cap on oneDNN's instruction set below the one that brings the CPU's bfloat16 arithmetic
    keeps oneDNN from it: below AVX-512 (ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512_BF16 CPU, say) it
    has no bfloat16 kernels at all (TensorFlow's bfloat16 convolutions fail and its bfloat16
    matmul aborts the process), at AVX512_CORE(_VNNI) only emulated ones, about 5x slower. So
    under such a cap, with oneDNN on, this CPU counts as having none (or no AMX). (Only then
    does it import TensorFlow, to ask whether oneDNN is on: callers are past that point.)
    """
    flags = cpu_flags() if flags is None else flags
    support = 'amx' if 'amx_bf16' in flags else 'avx512' if 'avx512_bf16' in flags else None
    limit = onednn_isa_limit()
    if support and limit and onednn_enabled():
        # oneDNN's names: AVX512_CORE_BF16, AVX512_CORE_FP16 and the AVX10_* ones bring
        # AVX512_BF16, the *_AMX* ones AMX too; SSE41, AVX, AVX2*, AVX512_CORE(_VNNI) neither.
        if 'AMX' in limit:
            return support
        if any(word in limit for word in ('BF16', 'FP16', 'AVX10')):
            return 'avx512'
        return None
    return support
