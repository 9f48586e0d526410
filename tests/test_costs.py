"""The graded cost functions: the course notebook's expected outputs, hand-computable cases and
an independent float64 NumPy reference."""
import numpy as np
import pytest

import art_generation as ag
import nst_utils

tf = nst_utils.import_tf()


def tf1_random_normal(shape, mean, stddev):
    """tf.random_normal drawing what TF1 drew in the course's cells.

    With a graph-level seed and no op seed, TF1 used the graph's op count at the moment the op
    was created as its op seed (graph._last_id); tf.random_normal first creates the constants
    for shape, mean and stddev, so in a fresh graph the first call got op seed 3 and the second
    (after 6 ops) op seed 9. TF 2.x counts differently, so we create those constants ourselves
    and pass the op count explicitly.
    """
    graph = tf.get_default_graph()
    shape_t = tf.constant(shape, dtype=tf.int32)
    mean_t = tf.constant(mean, dtype=tf.float32)
    stddev_t = tf.constant(stddev, dtype=tf.float32)
    op_seed = len(graph.get_operations())
    return tf.random_normal(shape_t, mean_t, stddev_t, seed=op_seed)


def run(tensor):
    with tf.Session() as sess:
        return sess.run(tensor)


# --- the notebook's graded cells ----------------------------------------------------------------

def test_tf1_seed_helper_derives_the_op_count():
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        first = tf1_random_normal([1, 4, 4, 3], 1, 4)
        second = tf1_random_normal([1, 4, 4, 3], 1, 4)
        seeds = [op.get_attr('seed2') for op in tf.get_default_graph().get_operations()
                 if op.type == 'RandomStandardNormal']
        assert seeds == [3, 9]


def test_course_content_cost():
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        a_C = tf1_random_normal([1, 4, 4, 3], mean=1, stddev=4)
        a_G = tf1_random_normal([1, 4, 4, 3], mean=1, stddev=4)
        J_content = ag.compute_content_cost(a_C, a_G)
        assert run(J_content) == pytest.approx(6.76559, abs=5e-6)


def test_course_gram_matrix():
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        A = tf1_random_normal([3, 2 * 1], mean=1, stddev=4)
        GA = run(ag.gram_matrix(A))
    expected = [[6.42230511, -4.42912197, -2.09668207],
                [-4.42912197, 19.46583748, 19.56387138],
                [-2.09668207, 19.56387138, 20.6864624]]
    np.testing.assert_allclose(GA, expected, rtol=0, atol=1e-5)


def test_course_layer_style_cost():
    with tf.Graph().as_default():
        tf.set_random_seed(1)
        a_S = tf1_random_normal([1, 4, 4, 3], mean=1, stddev=4)
        a_G = tf1_random_normal([1, 4, 4, 3], mean=1, stddev=4)
        J_style_layer = ag.compute_layer_style_cost(a_S, a_G)
        assert run(J_style_layer) == pytest.approx(9.19028, abs=5e-5)


def test_course_total_cost():
    np.random.seed(3)
    J_content = np.random.randn()
    J_style = np.random.randn()
    J = ag.total_cost(J_content, J_style)
    assert J == pytest.approx(35.34667875478276, rel=1e-15)


# --- hand-computable cases ----------------------------------------------------------------------

def test_content_cost_by_hand():
    # 12 differences of 1, over 4 * 2 * 2 * 3 = 48.
    with tf.Graph().as_default():
        J = ag.compute_content_cost(np.zeros((1, 2, 2, 3), np.float32),
                                    tf.ones([1, 2, 2, 3]))
        assert run(J) == pytest.approx(0.25, rel=1e-7)


def test_gram_matrix_by_hand():
    with tf.Graph().as_default():
        G = run(ag.gram_matrix(tf.constant([[1.0, 2.0], [3.0, 4.0]])))
    np.testing.assert_array_equal(G, [[5.0, 11.0], [11.0, 25.0]])


def test_layer_style_cost_by_hand():
    # a_S = [1, 2] in one channel over 2 pixels: G_S = [[5]]; a_G = 0: G_G = [[0]].
    # 25 / (4 * 1^2 * 2^2) = 1.5625.
    with tf.Graph().as_default():
        a_S = np.array([1.0, 2.0], np.float32).reshape(1, 1, 2, 1)
        J = ag.compute_layer_style_cost(a_S, tf.zeros([1, 1, 2, 1]))
        assert run(J) == pytest.approx(1.5625, rel=1e-7)


def test_total_cost_weights():
    assert ag.total_cost(1.0, 2.0) == 90.0
    assert ag.total_cost(1.0, 2.0, alpha=3, beta=0.5) == 4.0


def test_total_variation_by_hand():
    image = np.zeros((1, 2, 3, 3), np.float32)
    image[0, 1, 2, 0] = 2.0  # one pixel differs by 2 from its upper and left neighbours
    with tf.Graph().as_default():
        assert run(ag.total_variation_cost(tf.constant(image))) == pytest.approx(8.0)


# --- an independent float64 NumPy reference ---------------------------------------------------

def numpy_content_cost(a_C, a_G):
    _, n_H, n_W, n_C = a_G.shape
    return np.sum((a_C.astype(np.float64) - a_G) ** 2) / (4 * n_H * n_W * n_C)


def numpy_layer_style_cost(a_S, a_G):
    _, n_H, n_W, n_C = a_G.shape
    S = a_S.astype(np.float64).reshape(n_H * n_W, n_C).T  # (n_C, n_H*n_W)
    G = a_G.astype(np.float64).reshape(n_H * n_W, n_C).T
    return np.sum((S @ S.T - G @ G.T) ** 2) / (4.0 * n_C ** 2 * (n_H * n_W) ** 2)


SHAPES = [(1, 1, 1, 1), (1, 3, 5, 2), (1, 7, 4, 16), (1, 38, 50, 512), (1, 300, 400, 64)]


@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s[1:])))
def test_costs_match_numpy_float64(shape):
    rng = np.random.default_rng(sum(shape))
    # Non-negative, like activations after a ReLU.
    a_X = np.maximum(rng.normal(1.0, 2.0, shape), 0).astype(np.float32)
    a_G = np.maximum(rng.normal(0.5, 2.0, shape), 0).astype(np.float32)
    with tf.Graph().as_default():
        a_G_t = tf.constant(a_G)
        with tf.Session() as sess:
            J_content, J_style = sess.run([ag.compute_content_cost(a_X, a_G_t),
                                           ag.compute_layer_style_cost(a_X, a_G_t)])
    # float32 sums of up to 7.7 million terms against float64: 1e-4 relative is ample.
    assert J_content == pytest.approx(numpy_content_cost(a_X, a_G), rel=1e-4)
    assert J_style == pytest.approx(numpy_layer_style_cost(a_X, a_G), rel=1e-4)
    assert np.isfinite(J_style) and J_style > 0


def test_style_cost_evaluates_style_activations_once():
    """compute_style_cost fixes the style's activations at the input of the moment it is
    called; later inputs change only the generated side."""
    rng = np.random.default_rng(0)
    S = rng.normal(size=(1, 4, 5, 3)).astype(np.float32)
    G = rng.normal(size=(1, 4, 5, 3)).astype(np.float32)
    layers = {'double': lambda x: 2 * x, 'relu': lambda x: np.maximum(x, 0)}
    style_layers = [('double', 0.25), ('relu', 0.75)]
    with tf.Graph().as_default():
        x = tf.Variable(np.zeros((1, 4, 5, 3), np.float32))
        model = {'input': x, 'double': 2 * x, 'relu': tf.nn.relu(x)}
        with tf.Session() as sess:
            sess.run(x.initializer)
            x.load(S, sess)
            J_style = ag.compute_style_cost(model, style_layers, sess)
            x.load(G, sess)
            value = sess.run(J_style)
    expected = sum(c * numpy_layer_style_cost(layers[n](S), layers[n](G)) for n, c in style_layers)
    assert value == pytest.approx(expected, rel=1e-5)


def test_cost_functions_do_not_touch_a_session():
    """The graded functions are pure: they build tensors and run nothing."""
    with tf.Graph().as_default() as graph:
        a = tf.ones([1, 2, 2, 3])
        ag.compute_content_cost(np.zeros((1, 2, 2, 3), np.float32), a)
        ag.compute_layer_style_cost(np.zeros((1, 2, 2, 3), np.float32), a)
        assert tf.get_default_session() is None
        assert graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES) == []


@pytest.mark.parametrize('shape, weight', [((1, 3, 5, 2), 1.0), ((1, 38, 50, 64), 1.0),
                                           ((1, 4, 6, 3), 0.2)],
                         ids=['3x5x2', '38x50x64', '4x6x3-weighted'])
def test_style_cost_gradient_matches_numpy(shape, weight):
    """The layer style cost has a hand-written gradient (one matmul); check it against the
    analytic float64 gradient dJ/dA = 4 c A (G_G - G_S), c = 1 / (4 n_C^2 (n_H n_W)^2), also
    when the cost enters the total with a weight (the upstream gradient is not 1)."""
    rng = np.random.default_rng(7)
    a_S = rng.normal(size=shape).astype(np.float32)
    a_G = rng.normal(size=shape).astype(np.float32)
    _, n_H, n_W, n_C = shape
    S = a_S.astype(np.float64).reshape(n_H * n_W, n_C)
    A = a_G.astype(np.float64).reshape(n_H * n_W, n_C)
    c = 1.0 / (4.0 * n_C ** 2 * (n_H * n_W) ** 2)
    expected = (weight * 4 * c * A @ (A.T @ A - S.T @ S)).reshape(shape)
    with tf.Graph().as_default():
        a_G_t = tf.constant(a_G)
        gradient = tf.gradients(weight * ag.compute_layer_style_cost(a_S, a_G_t), a_G_t)[0]
        actual = run(gradient)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
