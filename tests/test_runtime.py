"""nst.runtime: the session runs no graph optimiser (neither grappler nor its own), and the
graph it runs is still the one they would have left where the iteration's speed depends on
it."""
import collections

import numpy as np
import pytest

import art_generation as ag
from nst import fast_ops, optimize, runtime

tf = runtime.import_tf()


def executed_op_types(config, fast_paths=False):
    """{op type: count} of the graph a session with config runs for the input gradient of the
    course's style cost of one ReLU convolution with its bias (its Grams made fast by
    fast_ops.use_fast_grams and the style's Gram folded by optimize.fold_fixed, the weights
    variables, as a run makes them). fast_paths: then a Winograd convolution, an average pool
    and a transposed convolution."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        image = tf.Variable(rng.standard_normal((1, 12, 16, 3)), dtype=tf.float32)
        kernel = tf.Variable(rng.standard_normal((3, 3, 3, 8)), dtype=tf.float32)
        bias = tf.Variable(rng.standard_normal(8), dtype=tf.float32)
        a_G = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(image, kernel, [1, 1, 1, 1], 'SAME'), bias))
        if fast_paths:
            for forward in ('winograd', 'transposed'):
                kernel = tf.Variable(rng.standard_normal((3, 3, 8, 8)), dtype=tf.float32)
                a_G = tf.nn.relu(tf.nn.bias_add(
                    fast_ops.conv2d_same(a_G, kernel, forward=forward), bias))
                if forward == 'winograd':
                    a_G = fast_ops.avg_pool_2x2(a_G, 'pool', 'broadcast')
        fixed = optimize.FixedInputs()
        a_S = fixed.hold(rng.standard_normal(a_G.get_shape().as_list()).astype(np.float32))
        J = ag.compute_layer_style_cost(a_S, a_G)
        assert fast_ops.use_fast_grams(tf.get_default_graph()) == 2
        [gradient] = tf.gradients(J, [image])
        return run_op_types(config, gradient, tf.global_variables_initializer(), fixed)


def run_op_types(config, fetches, initializers, fixed=None):
    """{op type: count} of the partition graphs a session with config runs for fetches (fed,
    with fixed, what depends on its placeholders alone)."""
    with tf.Session(config=config) as sess:
        sess.run(initializers)
        feeds = optimize.fold_fixed(sess, fixed.values)[0] if fixed else {}
        metadata = tf.RunMetadata()
        sess.run(fetches, feeds, options=tf.RunOptions(output_partition_graphs=True),
                 run_metadata=metadata)
    return collections.Counter(node.op for graph in metadata.partition_graphs
                               for node in graph.node)


def heavy(counts):
    """The ops of counts that move or multiply whole feature maps, less the forward
    convolutions (their fusions differ: see below)."""
    return {op: n for op, n in counts.items()
            if any(word in op for word in ('Transpose', 'MatMul', 'Backprop', 'ReluGrad'))}


def test_the_session_runs_no_graph_optimiser_and_one_op_at_a_time():
    config = runtime.session_config()
    assert config.graph_options.rewrite_options.disable_meta_optimizer
    assert config.graph_options.optimizer_options.opt_level == tf.OptimizerOptions.L0
    assert config.inter_op_parallelism_threads == 1


@pytest.mark.parametrize('fast_paths', [False, True], ids=['conv', 'fast-paths'])
def test_the_step_runs_the_heavy_ops_grappler_would_leave(fast_paths):
    """Without grappler or the session's optimiser the gradient runs the same transposes,
    matmuls and convolutions' gradients as with TensorFlow's defaults: the Gram matrices'
    transposes, which grappler folded into their matmuls, are not built
    (fast_ops.use_fast_grams). Through one convolution, the one transpose left is dJ/dG's,
    (n_C, n_C)."""
    ops = executed_op_types(runtime.session_config(), fast_paths)
    grappler = executed_op_types(tf.ConfigProto(inter_op_parallelism_threads=1), fast_paths)
    assert heavy(ops) == heavy(grappler)
    if not fast_paths:
        assert sum(n for op, n in ops.items() if 'Transpose' in op) == 1


def test_onednn_runs_the_direct_convolution_with_its_bias():
    """What is left without the graph optimisers: oneDNN's own pass runs a direct convolution
    and its bias as one op."""
    rng = np.random.default_rng(1)
    with tf.Graph().as_default():
        x = tf.Variable(rng.standard_normal((1, 6, 8, 8)), dtype=tf.float32)
        kernel = tf.constant(rng.standard_normal((3, 3, 8, 8)), tf.float32)
        bias = tf.constant(rng.standard_normal(8), tf.float32)
        output = tf.nn.bias_add(fast_ops.conv2d_same(x, kernel, forward='direct'), bias)
        ops = run_op_types(runtime.session_config(), output, [x.initializer])
    if not runtime.onednn_enabled():
        pytest.skip('oneDNN is off')
    assert ops['_MklNativeConv2DWithBias'] == 1


@pytest.mark.parametrize('flags, cap, expected', [
    ({'avx2', 'avx512f', 'avx512_bf16'}, None, 'avx512'),
    ({'avx2', 'avx512f', 'avx512_bf16'}, 'AVX2', None),
    ({'avx2', 'avx512f', 'avx512_bf16'}, 'avx512_core', None),
    ({'avx2', 'avx512f', 'avx512_bf16'}, 'AVX512_CORE_VNNI', None),
    ({'avx2', 'avx512f', 'avx512_bf16'}, 'AVX512_CORE_BF16', 'avx512'),
    ({'avx2', 'avx512f', 'avx512_bf16'}, 'ALL', 'avx512'),
    ({'avx512_bf16', 'amx_bf16'}, None, 'amx'),
    ({'avx512_bf16', 'amx_bf16'}, 'AVX512_CORE_BF16', 'avx512'),
    ({'avx512_bf16', 'amx_bf16'}, 'AVX10_1_512', 'avx512'),
    ({'avx512_bf16', 'amx_bf16'}, 'AVX512_CORE_AMX', 'amx'),
    ({'avx512_bf16', 'amx_bf16'}, 'AVX2', None),
    ({'avx2', 'avx512f'}, None, None),
    ({'avx2', 'avx512f'}, 'AVX512_CORE_AMX', None)])
def test_bfloat16_support_under_a_cap_on_onednn(monkeypatch, flags, cap, expected):
    """A cap below AVX512_CORE_BF16 leaves oneDNN no bfloat16 kernels, one below the AMX
    ones no AMX; a cap never adds what the CPU lacks."""
    monkeypatch.delenv('DNNL_MAX_CPU_ISA', raising=False)
    if cap is None:
        monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    else:
        monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', cap)
    monkeypatch.setattr(runtime, 'onednn_enabled', lambda: True)
    assert runtime.bfloat16_support(flags) == expected
    # With oneDNN off, TensorFlow's own kernels do bfloat16, whatever oneDNN's cap.
    monkeypatch.setattr(runtime, 'onednn_enabled', lambda: False)
    assert runtime.bfloat16_support(flags) == ('amx' if 'amx_bf16' in flags else
                                               'avx512' if 'avx512_bf16' in flags else None)


@pytest.mark.parametrize('onednn, dnnl, expected', [
    ('avx2', None, ('ONEDNN_MAX_CPU_ISA', 'AVX2')),
    ('AVX512_CORE_BF16', 'AVX2', ('ONEDNN_MAX_CPU_ISA', 'AVX512_CORE_BF16')),
    (None, 'Avx2', ('DNNL_MAX_CPU_ISA', 'AVX2')),
    ('ALL', 'AVX2', None),
    ('garbage', None, None),
    (' AVX2', None, None),   # oneDNN ignores it too: it runs at the full instruction set
    ('', 'AVX', ('DNNL_MAX_CPU_ISA', 'AVX')),
    (None, None, None)])
def test_onednn_isa_cap_as_onednn_reads_it(monkeypatch, onednn, dnnl, expected):
    for name, value in (('ONEDNN_MAX_CPU_ISA', onednn), ('DNNL_MAX_CPU_ISA', dnnl)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert runtime.onednn_isa_cap() == expected
    assert runtime.onednn_isa_limit() == (expected[1] if expected else None)
