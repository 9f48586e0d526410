"""nst.runtime: the session settings keep the graph rewrites the iteration's speed relies on."""
import collections

import numpy as np

import art_generation as ag
from nst import fast_ops, runtime

tf = runtime.import_tf()


def executed_op_types(config, fast_paths=False):
    """{op type: count} of the graph a session with config runs for the input gradient of the
    course's style cost of one ReLU convolution (its Gram gradient the one-matmul one).
    fast_paths: then a Winograd convolution, an average pool and a transposed convolution."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        image = tf.Variable(rng.standard_normal((1, 12, 16, 3)), dtype=tf.float32)
        kernel = tf.constant(rng.standard_normal((3, 3, 3, 8)), tf.float32)
        bias = tf.constant(rng.standard_normal(8), tf.float32)
        a_G = tf.nn.relu(tf.nn.conv2d(image, kernel, [1, 1, 1, 1], 'SAME') + bias)
        if fast_paths:
            for forward in ('winograd', 'transposed'):
                kernel = tf.constant(rng.standard_normal((3, 3, 8, 8)), tf.float32)
                a_G = tf.nn.relu(fast_ops.conv2d_same(a_G, kernel, forward=forward) + bias)
                if forward == 'winograd':
                    a_G = fast_ops.avg_pool_2x2(a_G, 'pool', 'broadcast')
        a_S = rng.standard_normal(a_G.get_shape().as_list()).astype(np.float32)
        J = ag.compute_layer_style_cost(tf.placeholder_with_default(a_S, a_S.shape), a_G)
        assert fast_ops.use_gram_gradients(tf.get_default_graph()) == 2
        [gradient] = tf.gradients(J, [image])
        with tf.Session(config=config) as sess:
            sess.run(image.initializer)
            metadata = tf.RunMetadata()
            sess.run(gradient, options=tf.RunOptions(output_partition_graphs=True),
                     run_metadata=metadata)
    return collections.Counter(node.op for graph in metadata.partition_graphs
                               for node in graph.node)


def test_the_session_runs_grappler_once_without_the_passes_that_change_nothing():
    from tensorflow.core.protobuf import rewriter_config_pb2 as rewriter
    rewrite = runtime.session_config().graph_options.rewrite_options
    assert rewrite.meta_optimizer_iterations == rewriter.RewriterConfig.ONE
    assert rewrite.layout_optimizer == rewriter.RewriterConfig.OFF
    assert rewrite.memory_optimization == rewriter.RewriterConfig.NO_MEM_OPT
    assert rewrite.loop_optimization == rewriter.RewriterConfig.OFF
    assert rewrite.implementation_selector == rewriter.RewriterConfig.OFF
    assert rewrite.disable_tfg_optimizer
    assert runtime.session_config().inter_op_parallelism_threads == 1


def test_the_passes_left_out_change_nothing_in_the_fast_paths_graph():
    """Loops, implementation selection and the MLIR (tfg) passes, turned back on, leave the
    graph run for the gradient through the fast paths (Winograd, transposed, pool) as it is."""
    from tensorflow.core.protobuf import rewriter_config_pb2 as rewriter
    config = runtime.session_config()
    rewrite = config.graph_options.rewrite_options
    rewrite.loop_optimization = rewriter.RewriterConfig.ON
    rewrite.implementation_selector = rewriter.RewriterConfig.ON
    rewrite.disable_tfg_optimizer = False
    ops = executed_op_types(runtime.session_config(), fast_paths=True)
    assert ops == executed_op_types(config, fast_paths=True)
    assert ops.get('BatchMatMulV2', 0) + ops.get('_MklBatchMatMulV2', 0) >= 2  # both ways


def test_one_grappler_pass_folds_and_fuses_as_the_default_two():
    """What the one pass must still do as TensorFlow's default passes do: fold the transposes
    of the Gram matrices and of their gradient into the matmuls (a transpose of the conv's
    (H W, C) activations is left), and fuse the convolution with its bias and ReLU."""
    ops = executed_op_types(runtime.session_config())
    default = executed_op_types(tf.ConfigProto(inter_op_parallelism_threads=1))
    heavy = lambda counts: {op: n for op, n in counts.items()  # noqa: E731
                            if any(word in op for word in ('Transpose', 'MatMul', 'Conv'))}
    assert heavy(ops) == heavy(default)
    assert sum(n for op, n in ops.items() if 'Transpose' in op) == 1
    assert sum(n for op, n in ops.items() if 'FusedConv2D' in op) == 1
