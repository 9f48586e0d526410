"""nst.runtime: the session runs no grappler, and the graph it runs is still the one grappler
would have left where the iteration's speed depends on it."""
import collections

import numpy as np
import pytest

import art_generation as ag
from nst import fast_ops, runtime

tf = runtime.import_tf()


def executed_op_types(config, fast_paths=False):
    """{op type: count} of the graph a session with config runs for the input gradient of the
    course's style cost of one ReLU convolution with its bias (its Grams made fast by
    fast_ops.use_fast_grams, as a run makes them). fast_paths: then a Winograd convolution, an
    average pool and a transposed convolution."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        image = tf.Variable(rng.standard_normal((1, 12, 16, 3)), dtype=tf.float32)
        kernel = tf.constant(rng.standard_normal((3, 3, 3, 8)), tf.float32)
        bias = tf.constant(rng.standard_normal(8), tf.float32)
        a_G = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(image, kernel, [1, 1, 1, 1], 'SAME'), bias))
        if fast_paths:
            for forward in ('winograd', 'transposed'):
                kernel = tf.constant(rng.standard_normal((3, 3, 8, 8)), tf.float32)
                a_G = tf.nn.relu(tf.nn.bias_add(
                    fast_ops.conv2d_same(a_G, kernel, forward=forward), bias))
                if forward == 'winograd':
                    a_G = fast_ops.avg_pool_2x2(a_G, 'pool', 'broadcast')
        a_S = rng.standard_normal(a_G.get_shape().as_list()).astype(np.float32)
        J = ag.compute_layer_style_cost(tf.placeholder_with_default(a_S, a_S.shape), a_G)
        assert fast_ops.use_fast_grams(tf.get_default_graph()) == 2
        [gradient] = tf.gradients(J, [image])
        return run_op_types(config, gradient, [image.initializer])


def run_op_types(config, fetches, initializers):
    """{op type: count} of the partition graphs a session with config runs for fetches."""
    with tf.Session(config=config) as sess:
        sess.run(initializers)
        metadata = tf.RunMetadata()
        sess.run(fetches, options=tf.RunOptions(output_partition_graphs=True),
                 run_metadata=metadata)
    return collections.Counter(node.op for graph in metadata.partition_graphs
                               for node in graph.node)


def heavy(counts):
    """The ops of counts that move or multiply whole feature maps, less the forward
    convolutions (their fusions differ: see below)."""
    return {op: n for op, n in counts.items()
            if any(word in op for word in ('Transpose', 'MatMul', 'Backprop', 'ReluGrad'))}


def test_the_session_runs_no_grappler_and_one_op_at_a_time():
    config = runtime.session_config()
    assert config.graph_options.rewrite_options.disable_meta_optimizer
    assert config.inter_op_parallelism_threads == 1


@pytest.mark.parametrize('fast_paths', [False, True], ids=['conv', 'fast-paths'])
def test_the_step_runs_the_heavy_ops_grappler_would_leave(fast_paths):
    """Without grappler the gradient runs the same transposes, matmuls and convolutions'
    gradients as with TensorFlow's default grappler: the Gram matrices' transposes, which
    grappler folded into their matmuls, are not built (fast_ops.use_fast_grams). Through one
    convolution, the one transpose left is dJ/dG's, (n_C, n_C)."""
    ops = executed_op_types(runtime.session_config(), fast_paths)
    grappler = executed_op_types(tf.ConfigProto(inter_op_parallelism_threads=1), fast_paths)
    assert heavy(ops) == heavy(grappler)
    if not fast_paths:
        assert sum(n for op, n in ops.items() if 'Transpose' in op) == 1


def test_the_sessions_own_optimiser_folds_constants_and_onednn_fuses_the_bias():
    """What is left without grappler: the session's own graph optimiser folds what depends on
    constants alone (a constant kernel's rotation for the transposed path: no reverse runs),
    and with oneDNN its own pass runs the direct convolution with its bias."""
    rng = np.random.default_rng(1)
    with tf.Graph().as_default():
        x = tf.Variable(rng.standard_normal((1, 6, 8, 8)), dtype=tf.float32)
        kernel = tf.constant(rng.standard_normal((3, 3, 8, 8)), tf.float32)
        bias = tf.constant(rng.standard_normal(8), tf.float32)
        outputs = [tf.nn.bias_add(fast_ops.conv2d_same(x, kernel, forward=forward), bias)
                   for forward in ('transposed', 'direct')]
        ops = run_op_types(runtime.session_config(), outputs, [x.initializer])
    assert not any('Reverse' in op for op in ops)
    if runtime.onednn_enabled():
        assert ops['_MklNativeConv2DWithBias'] == 1
