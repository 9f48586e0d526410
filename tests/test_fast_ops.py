"""nst.fast_ops against TensorFlow's own ops and gradients: the 2x2 average pool's broadcast
gradient, the transposed forward convolution and the narrow layers' matmul input gradient each
compute what tf.nn computes, for even and odd sizes, in float32 and bfloat16."""

import numpy as np
import pytest

from nst import config, fast_ops, vgg
from nst import weights as nst_weights
from nst.runtime import import_tf

tf = import_tf()


@pytest.mark.parametrize('with_session', [True, False], ids=['variables', 'constants'])
def test_transposed_convolution_matches_conv2d(tiny_vgg_file, with_session):
    """Wide layers run their forward pass as a transposed convolution of the rotated kernel
    (fast_ops.conv2d_same), with a hand-written gradient. With every layer on that path
    (the narrow layers' matmul input gradient switched off for it): outputs and input gradients
    must equal those of tf.nn.conv2d everywhere (with the default input gradients: the matmul
    one on the narrow layers conv1_1 and, at the tiny widths, conv1_2)."""
    weights = nst_weights.read_vgg_weights(tiny_vgg_file)
    rng = np.random.default_rng(5)
    image = rng.normal(0, 50, (1, 11, 13, 3)).astype(np.float32)
    probes = {name: rng.normal(size=(1,) + shape).astype(np.float32)
              for name, shape in [('conv1_2', (11, 13, 4)), ('conv3_4', (3, 4, 8)),
                                  ('conv5_4', (1, 1, 16))]}

    def outputs_and_gradient(forward):
        if forward == 'transposed':
            conv = {name: ('transposed', 'tf') for name in config.VGG19_CONV_LAYERS}
        else:
            conv = {name: ('direct', fast_ops.default_conv_path(weights[name][0].shape[2])[1])
                    for name in config.VGG19_CONV_LAYERS}
        paths = fast_ops.Paths(conv=conv)
        with tf.Graph().as_default(), tf.Session() as sess:
            model = vgg.build_vgg_graph(weights, 11, 13, sess=sess if with_session else None,
                                        paths=paths)
            ops = {op.type for op in tf.get_default_graph().get_operations()}
            # A scalar that depends on shallow and deep layers, for the input gradient.
            J = tf.add_n([tf.reduce_sum(model[name] * probe) for name, probe in probes.items()])
            gradient = tf.gradients(J, model['input'])[0]
            sess.run(model['input'].initializer)
            model['input'].load(image, sess)
            layers = sess.run({name: model[name] for name in config.VGG19_CONV_LAYERS})
            return layers, sess.run(gradient), ops

    transposed, transposed_gradient, ops = outputs_and_gradient('transposed')
    plain, plain_gradient, plain_ops = outputs_and_gradient('direct')
    assert 'Conv2D' not in ops and 'Conv2DBackpropInput' in ops
    assert 'Conv2D' in plain_ops
    for name in config.VGG19_CONV_LAYERS:
        scale = np.abs(plain[name]).max() + 1e-6
        np.testing.assert_allclose(transposed[name], plain[name], rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=name)
    scale = np.abs(plain_gradient).max()
    assert scale > 0
    np.testing.assert_allclose(transposed_gradient, plain_gradient, rtol=1e-3, atol=1e-5 * scale)


def test_avg_pool_gradient_by_hand():
    """3x3 input, upstream gradient 1 everywhere: each pixel gets 1 / (pixels in its window);
    the odd bottom row and right column form windows of 2 and 1 (SAME padding not counted)."""
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.constant(np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1))
        pooled = fast_ops.avg_pool_2x2(x)
        gradient = tf.gradients(tf.reduce_sum(pooled), x)[0]
        pooled, gradient = sess.run([pooled, gradient])
    np.testing.assert_allclose(pooled[0, :, :, 0], [[2.0, 3.5], [6.5, 8.0]], rtol=1e-6)
    np.testing.assert_allclose(gradient[0, :, :, 0],
                               [[0.25, 0.25, 0.5], [0.25, 0.25, 0.5], [0.5, 0.5, 1.0]],
                               rtol=1e-6)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('height, width', [(6, 8), (5, 7), (5, 8), (6, 7), (1, 1)])
def test_avg_pool_gradient_equals_tensorflows(height, width, dtype):
    """The pool's hand-written gradient equals TensorFlow's AvgPoolGrad for even and odd sizes,
    for a random upstream gradient (float32 exactly up to rounding; bfloat16 to its precision)."""
    rng = np.random.default_rng(height * 10 + width)
    image = rng.normal(size=(1, height, width, 3)).astype(np.float32)
    upstream = rng.normal(size=(1, -(-height // 2), -(-width // 2), 3)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.cast(tf.constant(image), dtype)
        ours = fast_ops.avg_pool_2x2(x)
        theirs = tf.nn.avg_pool(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding='SAME')
        weights = tf.cast(tf.constant(upstream), dtype)
        grads = [tf.gradients(tf.reduce_sum(pooled * weights), x)[0] for pooled in (ours, theirs)]
        values = sess.run([tf.cast(t, tf.float32) for t in [ours, theirs] + grads])
    assert values[2].shape == image.shape
    tolerance = 1e-6 if dtype == 'float32' else 1e-2
    np.testing.assert_allclose(values[0], values[1], rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(values[2], values[3], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('height, width, channels_in, channels_out',
                         [(5, 7, 3, 4), (1, 1, 3, 2), (4, 6, 1, 3), (2, 9, 4, 5)])
def test_narrow_convolution_gradient_equals_backprop_input(height, width, channels_in,
                                                           channels_out, dtype):
    """conv1_1's input gradient (few input channels: one matmul and shifted sums) equals
    TensorFlow's Conv2DBackpropInput, and the forward pass is still tf.nn.conv2d's."""
    assert channels_in <= fast_ops.NARROW_CONV_MAX_CHANNELS
    rng = np.random.default_rng(height * 100 + width * 10 + channels_in)
    image = rng.normal(size=(1, height, width, channels_in)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, channels_in, channels_out)).astype(np.float32)
    upstream = rng.normal(size=(1, height, width, channels_out)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        x, k, up = (tf.cast(tf.constant(v), dtype) for v in (image, kernel, upstream))
        ours = fast_ops.conv2d_same(x, k)
        gradient = tf.gradients(tf.reduce_sum(ours * up), x)[0]
        reference = tf.nn.conv2d(x, k, strides=[1, 1, 1, 1], padding='SAME')
        expected = tf.nn.conv2d_backprop_input([1, height, width, channels_in], k, up,
                                               strides=[1, 1, 1, 1], padding='SAME')
        values = sess.run([tf.cast(t, tf.float32) for t in (ours, reference, gradient, expected)])
    tolerance = 1e-5 if dtype == 'float32' else 3e-2
    scale = np.abs(values[3]).max()
    np.testing.assert_allclose(values[0], values[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(values[2], values[3], rtol=tolerance, atol=tolerance * scale)


# ----------------------------------------------------------------------------------------------
# The Gram matrices without transposes, and their gradient (fast_ops.use_fast_grams)
# ----------------------------------------------------------------------------------------------

import art_generation as ag  # noqa: E402


def analytic_style_gradient(a_S, a_G):
    """dJ/da_G of the course's layer style cost, in float64, derived by hand.

    With X the (n_H n_W, n_C) unrolled a_G, A = X^T, G = A A^T and J = c sum((G_S - G)^2),
    c = 1 / (4 n_C^2 (n_H n_W)^2): dJ/dG = -2c (G_S - G); for G = A A^T,
    dJ/dA = (dJ/dG + dJ/dG^T) A = -4c (G_S - G) A (both are symmetric); and dJ/dX = (dJ/dA)^T
    = -4c X (G_S - G), reshaped back to a_G's shape.
    """
    _, n_H, n_W, n_C = a_G.shape
    X = a_G.astype(np.float64).reshape(n_H * n_W, n_C)
    X_S = a_S.astype(np.float64).reshape(n_H * n_W, n_C)
    G, G_S = X.T @ X, X_S.T @ X_S
    c = 1.0 / (4 * n_C ** 2 * (n_H * n_W) ** 2)
    return (-4 * c * X @ (G_S - G)).reshape(a_G.shape)


def matmul_count(graph):
    return sum(op.type == 'MatMul' for op in graph.get_operations())


def op_types_computing(tensor):
    """The types of the ops a session runs to compute tensor (all it depends on)."""
    seen, stack = set(), [tensor.op]
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return sorted(op.type for op in seen)


def style_cost_gradient(a_S, a_G, fast):
    """(cost, dJ/da_G, Grams made fast, MatMul ops the gradient added) of the course's
    compute_layer_style_cost in a new graph, with or without fast_ops.use_fast_grams (with it,
    neither the cost nor its gradient transposes the activations)."""
    with tf.Graph().as_default() as graph, tf.Session() as sess:
        placeholder = tf.placeholder(tf.float32, a_G.shape)
        J = ag.compute_layer_style_cost(a_S, placeholder)
        marked = fast_ops.use_fast_grams(graph) if fast else None
        if fast:
            assert 'Transpose' not in op_types_computing(J)
        before = matmul_count(graph)
        (gradient,) = tf.gradients(J, [placeholder])
        added = matmul_count(graph) - before
        if fast:  # one transpose left: of dJ/dG, (n_C, n_C)
            assert op_types_computing(gradient).count('Transpose') == 1
        cost, value = sess.run([J, gradient], {placeholder: a_G})
    return cost, value, marked, added


@pytest.mark.parametrize('shape', [(1, 5, 7, 4), (1, 3, 3, 6), (1, 1, 1, 3), (1, 8, 2, 1)])
def test_style_cost_gradient_with_gram_gradients(shape):
    """The course's layer style cost with its Grams made fast: the cost equals the graph's as
    built, its gradient w.r.t. a_G TensorFlow's own of that graph and both the float64
    derivation. Tolerances: the cost's float32 Gram differences cancel to ~1e-6 relative (the
    fast Gram sums in another order); 1e-4 of the gradient's largest entry."""
    rng = np.random.default_rng(sum(shape))
    a_S = rng.normal(size=shape).astype(np.float32)
    a_G = rng.normal(size=shape).astype(np.float32)
    cost, fast, marked, fast_added = style_cost_gradient(a_S, a_G, fast=True)
    cost_tf, plain, _, plain_added = style_cost_gradient(a_S, a_G, fast=False)
    assert marked == 2  # G_S and G_G
    # The fast gradient is in use: one MatMul for dX (G_S needs none), against TensorFlow's
    # two (A's share through both operands of the MatMul).
    assert (fast_added, plain_added) == (1, 2)
    assert cost == pytest.approx(cost_tf, rel=1e-5)
    expected = analytic_style_gradient(a_S, a_G)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(plain, expected, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-4 * scale)
    # The cost itself, by hand in float64: c * sum((G_S - G)^2).
    _, n_H, n_W, n_C = shape
    X, X_S = (a.astype(np.float64).reshape(n_H * n_W, n_C) for a in (a_G, a_S))
    J = np.sum((X_S.T @ X_S - X.T @ X) ** 2) / (4 * n_C ** 2 * (n_H * n_W) ** 2)
    assert cost == pytest.approx(J, rel=1e-5)


def test_fast_grams_count_every_layer_cost():
    """Two layer costs built in one graph (as build_style_transfer does for two style layers):
    4 Grams made fast; calling again counts the same 4 and adds no op."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default() as graph:
        a_G = tf.placeholder(tf.float32, (1, 4, 5, 3))
        b_G = tf.placeholder(tf.float32, (1, 2, 3, 6))
        ag.compute_layer_style_cost(rng.normal(size=(1, 4, 5, 3)).astype(np.float32), a_G)
        ag.compute_layer_style_cost(rng.normal(size=(1, 2, 3, 6)).astype(np.float32), b_G)
        tf.matmul(tf.ones((3, 3)), tf.ones((3, 2)))  # not a Gram
        assert fast_ops.use_fast_grams(graph) == 4
        ops = len(graph.get_operations())
        assert fast_ops.use_fast_grams(graph) == 4
        assert len(graph.get_operations()) == ops
        marked = [op for op in graph.get_operations()
                  if '_gradient_op_type' in op.node_def.attr]
        assert len(marked) == 4 and all(op.type == 'MatMul' for op in marked)


def two_layer_style_gradient(fast, styles):
    """(dJ/dimage, graph) for the course's style cost of two stacked ReLU convolutions, with
    `styles` style images (as in a run, the first layer's activations get a gradient from
    each of its Grams and one from the second layer), with or without
    fast_ops.use_fast_grams and defer_gram_gradients."""
    rng = np.random.default_rng(4)
    graph = tf.Graph()
    with graph.as_default(), tf.Session() as sess:
        image = tf.constant(rng.normal(size=(1, 6, 7, 3)).astype(np.float32))
        a_G = image
        J = 0
        for channels_in, channels_out in ((3, 4), (4, 5)):
            kernel = tf.constant(rng.normal(size=(3, 3, channels_in, channels_out)), tf.float32)
            a_G = tf.nn.relu(tf.nn.conv2d(a_G, kernel, [1, 1, 1, 1], 'SAME'))
            for _ in range(styles):
                a_S = rng.normal(size=a_G.get_shape().as_list()).astype(np.float32)
                J += ag.compute_layer_style_cost(a_S, a_G)
        if fast:
            assert fast_ops.use_fast_grams(graph) == 4 * styles
        (gradient,) = tf.gradients(J, [image])
        if fast:  # the second layer is the deepest; again: nothing added
            assert fast_ops.defer_gram_gradients(graph) == styles
            assert fast_ops.defer_gram_gradients(graph) == styles
        return sess.run(gradient), graph


@pytest.mark.parametrize('styles', [1, 2])
def test_a_grams_gradient_waits_for_the_deeper_layers(styles):
    """The first layer's Gram gradients dX wait (a control input) for the gradient they are
    added to, the second layer's backward pass, not for one another (that would be a cycle),
    and the input gradient is TensorFlow's own (without the fast Grams; float32 tolerance
    1e-5 of its largest entry)."""
    fast, graph = two_layer_style_gradient(True, styles)
    plain, _ = two_layer_style_gradient(False, styles)
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
    d_unrolled = graph.get_collection(fast_ops._GRAM_INPUT_GRADIENTS)  # noqa: SLF001
    waiting = [op for op in d_unrolled if op.control_inputs]
    assert len(d_unrolled) == 2 * styles and len(waiting) == styles
    grams_reshaped = {op.outputs[0].consumers()[0] for op in d_unrolled}
    for op in waiting:
        # Each reaches an AddN through a reshape; it waits for the AddN's one input that is
        # not a Gram's, the second layer's gradient.
        [reshape] = op.outputs[0].consumers()
        [total] = reshape.outputs[0].consumers()
        assert total.type in ('AddN', 'AddV2') and len(total.inputs) == styles + 1
        [deeper] = op.control_inputs
        assert deeper in [t.op for t in total.inputs] and deeper not in grams_reshaped


def test_a_gram_nothing_uses_is_left_as_built():
    """A Gram matrix evaluated on its own (no op of the graph reads it) is not replaced."""
    with tf.Graph().as_default() as graph:
        gram = ag.gram_matrix(tf.placeholder(tf.float32, (3, 5)))
        ops = graph.get_operations()
        assert fast_ops.use_fast_grams(graph) == 0
        assert graph.get_operations() == ops
        assert gram.consumers() == []


# The Gram matrix A A^T of the 4x9 A, spelled three ways, each from one placeholder: A itself
# (the two spellings of A^T), or X = A^T, the course's (n_H n_W, n_C) unrolled activations
# (gram_matrix(transpose(X)): then it is X^T X).
GRAM_FORMS = {
    'transpose': (False, lambda a: tf.matmul(a, tf.transpose(a))),
    'transpose_b': (False, lambda a: tf.matmul(a, a, transpose_b=True)),
    'unrolled': (True, lambda x: ag.gram_matrix(tf.transpose(x))),
}


@pytest.mark.parametrize('form', sorted(GRAM_FORMS))
def test_every_spelling_of_the_gram_is_computed_without_transposes(form):
    """G = A A^T written either way, or as the course writes it from X = A^T, is computed
    without a transpose, and its gradient for a non-symmetric upstream W (J = sum(W * G)) is
    exactly (W + W^T) A (for X: its transpose), as TensorFlow's own: float64 by hand, float32
    tolerance 1e-5 of the largest entry."""
    from_unrolled, build = GRAM_FORMS[form]
    rng = np.random.default_rng(1)
    a_value = rng.normal(size=(4, 9)).astype(np.float32)
    w_value = rng.normal(size=(4, 4)).astype(np.float32)
    expected = (w_value.astype(np.float64) + w_value.T) @ a_value.astype(np.float64)
    fed = a_value.T if from_unrolled else a_value
    expected = expected.T if from_unrolled else expected
    results = {}
    for fast in (True, False):
        with tf.Graph().as_default() as graph, tf.Session() as sess:
            placeholder = tf.placeholder(tf.float32, fed.shape)
            J = tf.reduce_sum(tf.constant(w_value) * build(placeholder))
            if fast:
                assert fast_ops.use_fast_grams(graph) == 1
                assert 'Transpose' not in op_types_computing(J)
            before = matmul_count(graph)
            (gradient,) = tf.gradients(J, [placeholder])
            added = matmul_count(graph) - before
            results[fast] = sess.run(gradient, {placeholder: fed}), added
    (fast, fast_added), (plain, plain_added) = results[True], results[False]
    assert (fast_added, plain_added) == (1, 2)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(plain, expected, rtol=0, atol=1e-5 * scale)


# Products that are not a Gram matrix A A^T (A: 4x6, B: 4x6, C: 6x4, S: 4x4), with their
# gradients w.r.t. A (and the other operand) for J = sum(W * product), worked out by hand:
# for P = X Y: dX = W Y^T, dY = X^T W.
NOT_GRAMS = {
    'A B^T (transpose)': (lambda A, B, C, S: tf.matmul(A, tf.transpose(B)),
                          lambda A, B, C, S, W: {'A': W @ B, 'B': W.T @ A}),
    'A B^T (flag)': (lambda A, B, C, S: tf.matmul(A, B, transpose_b=True),
                     lambda A, B, C, S, W: {'A': W @ B, 'B': W.T @ A}),
    'A C': (lambda A, B, C, S: tf.matmul(A, C),
            lambda A, B, C, S, W: {'A': W @ C.T, 'C': A.T @ W}),
    'A^T A': (lambda A, B, C, S: tf.matmul(A, A, transpose_a=True),  # the columns' Gram
              lambda A, B, C, S, W: {'A': A @ (W + W.T)}),
    'S S': (lambda A, B, C, S: tf.matmul(S, S),
            lambda A, B, C, S, W: {'S': W @ S.T + S.T @ W}),
    'S^T^T = S S': (  # a transpose and the flag: S (S^T)^T
        lambda A, B, C, S: tf.matmul(S, tf.transpose(S), transpose_b=True),
        lambda A, B, C, S, W: {'S': W @ S.T + S.T @ W}),
    # S^T S^T = (S S)^T, so J = sum(W^T * S S): dS = W^T S^T + S^T W^T.
    'S^T S^T (flags)': (lambda A, B, C, S: tf.matmul(S, S, transpose_a=True, transpose_b=True),
                        lambda A, B, C, S, W: {'S': W.T @ S.T + S.T @ W.T}),
    'S^T S^T (transpose)': (
        lambda A, B, C, S: tf.matmul(S, tf.transpose(S), transpose_a=True),
        lambda A, B, C, S, W: {'S': W.T @ S.T + S.T @ W.T}),
}


@pytest.mark.parametrize('name', sorted(NOT_GRAMS))
def test_other_matmuls_keep_tensorflows_gradient(name):
    """A MatMul that is not A A^T is left as built (use_fast_grams counts 0) and its
    gradient is TensorFlow's: equal to a graph without the call and to the hand derivation in
    float64 (float32 tolerance 1e-5 of the largest entry)."""
    build, derivation = NOT_GRAMS[name]
    rng = np.random.default_rng(2)
    values = {'A': rng.normal(size=(4, 6)), 'B': rng.normal(size=(4, 6)),
              'C': rng.normal(size=(6, 4)), 'S': rng.normal(size=(4, 4))}
    values = {k: v.astype(np.float32) for k, v in values.items()}
    results = {}
    for fast in (True, False):
        with tf.Graph().as_default() as graph, tf.Session() as sess:
            inputs = {k: tf.placeholder(tf.float32, v.shape, name=k) for k, v in values.items()}
            product = build(*(inputs[k] for k in 'ABCS'))
            w_value = np.random.default_rng(3).normal(
                size=product.get_shape().as_list()).astype(np.float32)
            J = tf.reduce_sum(tf.constant(w_value) * product)
            if fast:
                ops = graph.get_operations()
                assert fast_ops.use_fast_grams(graph) == 0
                assert graph.get_operations() == ops
                assert '_gradient_op_type' not in product.op.node_def.attr
            expected = derivation(*(values[k].astype(np.float64) for k in 'ABCS'),
                                  w_value.astype(np.float64))
            names = sorted(expected)
            gradients = tf.gradients(J, [inputs[k] for k in names])
            results[fast] = dict(zip(names, sess.run(gradients, {inputs[k]: values[k]
                                                                 for k in values})))
    for k in names:
        scale = np.abs(expected[k]).max()
        np.testing.assert_allclose(results[True][k], expected[k], rtol=0, atol=1e-5 * scale,
                                   err_msg=k)
        np.testing.assert_allclose(results[True][k], results[False][k], rtol=0,
                                   atol=1e-6 * scale, err_msg=k)


@pytest.mark.parametrize('forward', ['winograd', 'winograd_stored'])
@pytest.mark.parametrize('height, width', [(8, 12), (9, 7)])
def test_winograd_path_matches_conv2d_both_ways(height, width, forward):
    """conv2d_same(..., 'winograd') and its hand-written gradient against tf.nn.conv2d and
    TensorFlow's gradient of it, to 5e-5 of the largest value (nst.winograd's rounding); with
    the kernels' transforms read transposed and as stored."""
    rng = np.random.default_rng(height + width)
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.constant(rng.normal(0, 10, (1, height, width, 6)).astype(np.float32))
        kernel = tf.constant(rng.normal(size=(3, 3, 6, 5)).astype(np.float32))
        d_outputs = tf.constant(rng.normal(size=(1, height, width, 5)).astype(np.float32))
        outputs = [tf.nn.conv2d(x, kernel, [1, 1, 1, 1], 'SAME'),
                   fast_ops.conv2d_same(x, kernel, None, forward, 'winograd')]
        gradients = [tf.gradients(y, x, grad_ys=d_outputs)[0] for y in outputs]
        (expected, got), (expected_gradient, got_gradient) = sess.run([outputs, gradients])
    for value, reference in ((got, expected), (got_gradient, expected_gradient)):
        np.testing.assert_allclose(value, reference, rtol=0,
                                   atol=5e-5 * np.abs(reference).max())
