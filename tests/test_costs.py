"""The graded cost functions of art_generation.py: the course notebook's expected outputs,
hand-computable cases, an independent float64 NumPy reference, and the style-transfer graph and
command-line runs built from them (editing a graded function changes the next run)."""
import numpy as np
import pytest

import art_generation as ag
from nst import vgg
from nst.runtime import import_tf, tf1_random_normal
from nst.weights import read_vgg_weights
from pictures import MEANS, checker_picture, parse_blocks, smooth_picture, striped_picture

tf = import_tf()


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
    """The gradient of the graded layer style cost (through gram_matrix, as TensorFlow
    differentiates it) against the analytic float64 gradient dJ/dA = 4 c A (G_G - G_S),
    c = 1 / (4 n_C^2 (n_H n_W)^2), also when the cost enters the total with a weight (the
    upstream gradient is not 1)."""
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


# --- the graph the run builds from the graded functions ----------------------------------------

def normalised(pixels):
    """(H, W, 3) uint8 -> (1, H, W, 3) float with the mean pixel removed, as the course does."""
    return pixels[None].astype(np.float64) - MEANS


def numpy_gram(a):
    """(1, n_H, n_W, n_C) -> the (n_C, n_C) Gram matrix of the unrolled activations, float64."""
    unrolled = a.astype(np.float64).reshape(-1, a.shape[3]).T
    return unrolled @ unrolled.T


def test_several_styles_weight_each_styles_cost(tiny_vgg_file):
    """With several styles the style cost is the weighted sum of each style's cost,
    sum_k w_k sum_l lambda_l J_style(S_k, G) at every style layer l, in float64 NumPy from the
    network's activations. Blending the Gram matrices instead (one cost against
    sum_k w_k G_S_k) differs from it by a constant that does not depend on G (so the gradient is
    the same): sum_l lambda_l c_l (sum_k w_k |G_S_k|^2 - |sum_k w_k G_S_k|^2)."""
    height, width = 24, 32
    content = normalised(smooth_picture(width, height))
    styles = [normalised(striped_picture(width, height)),
              normalised(checker_picture(width, height))]
    blend = [0.25, 0.75]
    generated = (content + np.random.default_rng(0).uniform(-20, 20, content.shape)).astype(
        np.float32)
    layers = [name for name, _ in ag.STYLE_LAYERS]
    with tf.Graph().as_default(), tf.Session() as sess:
        model = vgg.build_vgg_graph(read_vgg_weights(tiny_vgg_file), height, width, sess=sess)
        nst = ag.build_style_transfer(sess, model, content, styles, blend_weights=blend)
        activations = []
        for image in [content] + styles + [generated]:
            nst.set_input(sess, image)
            activations.append(sess.run({key: model[key] for key in layers + ['conv4_2']}))
        J, J_content, J_style = nst.run(sess, [nst.J, nst.J_content, nst.J_style])
    a_C, a_S, a_G = activations[0], activations[1:-1], activations[-1]

    expected_content = numpy_content_cost(a_C['conv4_2'], a_G['conv4_2'])
    expected_style = sum(w * coeff * numpy_layer_style_cost(a_S[k][name], a_G[name])
                         for k, w in enumerate(blend) for name, coeff in ag.STYLE_LAYERS)
    assert J_content == pytest.approx(expected_content, rel=1e-4)
    assert J_style == pytest.approx(expected_style, rel=1e-4)
    assert J == pytest.approx(10 * expected_content + 40 * expected_style, rel=1e-4)

    blended, constant = 0.0, 0.0
    for name, coeff in ag.STYLE_LAYERS:
        _, n_H, n_W, n_C = a_G[name].shape
        c = 1.0 / (4.0 * n_C ** 2 * (n_H * n_W) ** 2)
        grams = [numpy_gram(a[name]) for a in a_S]
        mixed = sum(w * g for w, g in zip(blend, grams))
        blended += coeff * c * np.sum((mixed - numpy_gram(a_G[name])) ** 2)
        constant += coeff * c * (sum(w * np.sum(g ** 2) for w, g in zip(blend, grams))
                                 - np.sum(mixed ** 2))
    assert constant > 0.01 * expected_style  # the two forms do differ
    assert J_style != pytest.approx(blended, rel=1e-3)
    assert J_style - blended == pytest.approx(constant, rel=1e-3)


@pytest.fixture
def course_run(capsys, tiny_vgg_file, pics, tmp_path):
    """course_run(name) -> (content cost, style cost) that `python art_generation.py` prints at
    iteration 0 of a one-iteration run on the tiny model, in this process. The learning rate is
    tiny, so those are the costs of the starting image (seed 1) to within 1e-6 of a pixel."""
    def run(name):
        capsys.readouterr()
        code = ag.main(['--model', tiny_vgg_file, '--no-download', '--no-tune', '--no-progress',
                        '--content', pics.content, '--style', pics.style, '--width', '64',
                        '--iterations', '1', '--print-every', '1', '--save-every', '0',
                        '--seed', '1', '--learning-rate', '1e-6',
                        '--output-dir', str(tmp_path / name)])
        out, err = capsys.readouterr()
        assert code == 0, err
        [(iteration, total, content_cost, style_cost)] = parse_blocks(out)
        assert iteration == 0
        assert total == pytest.approx(10 * content_cost + 40 * style_cost, rel=1e-5)
        return content_cost, style_cost
    return run


def test_editing_gram_matrix_changes_the_cost_of_a_command_line_run(course_run, monkeypatch):
    """The run's style cost goes through art_generation.gram_matrix: a Gram matrix twice as
    large doubles G_S - G_G, so the style cost is 4 times as large; the content cost is not
    touched."""
    content_cost, style_cost = course_run('course')
    real_gram_matrix = ag.gram_matrix
    calls = []

    def doubled_gram_matrix(A):
        calls.append(A)
        return 2 * real_gram_matrix(A)

    monkeypatch.setattr(ag, 'gram_matrix', doubled_gram_matrix)
    doubled_content, doubled_style = course_run('doubled-gram')
    assert len(calls) == 2 * len(ag.STYLE_LAYERS)  # G_S and G_G of each style layer, built once
    assert doubled_style != pytest.approx(style_cost, rel=1e-3)
    assert doubled_style == pytest.approx(4 * style_cost, rel=1e-4)
    assert doubled_content == pytest.approx(content_cost, rel=1e-5)


def test_editing_compute_content_cost_changes_the_cost_of_a_command_line_run(course_run,
                                                                             monkeypatch):
    """Likewise the content cost goes through art_generation.compute_content_cost."""
    content_cost, style_cost = course_run('course')
    real_content_cost = ag.compute_content_cost
    monkeypatch.setattr(ag, 'compute_content_cost',
                        lambda a_C, a_G: 2 * real_content_cost(a_C, a_G))
    doubled_content, doubled_style = course_run('doubled-content')
    assert doubled_content == pytest.approx(2 * content_cost, rel=1e-4)
    assert doubled_style == pytest.approx(style_cost, rel=1e-5)


def test_editing_compute_style_cost_changes_the_cost_of_a_command_line_run(course_run,
                                                                           monkeypatch):
    """And the style cost goes through art_generation.compute_style_cost (which calls
    compute_layer_style_cost), once per style image, with the style layers of the run."""
    content_cost, style_cost = course_run('course')
    real_style_cost = ag.compute_style_cost
    calls = []

    def tripled_style_cost(model, STYLE_LAYERS, sess=None):
        calls.append(list(STYLE_LAYERS))
        return 3 * real_style_cost(model, STYLE_LAYERS, sess)

    monkeypatch.setattr(ag, 'compute_style_cost', tripled_style_cost)
    tripled_content, tripled_style = course_run('tripled-style')
    assert calls == [ag.STYLE_LAYERS]
    assert tripled_style == pytest.approx(3 * style_cost, rel=1e-4)
    assert tripled_content == pytest.approx(content_cost, rel=1e-5)


def test_a_command_line_run_goes_through_model_nn(tiny_vgg_file, pics, tmp_path, monkeypatch,
                                                 capsys):
    """The run's loop is art_generation.model_nn, once a stage: what an edit of it prints
    shows in a command-line run."""
    real_model_nn = ag.model_nn
    calls = []

    def edited_model_nn(sess, input_image, num_iterations=200, **options):
        calls.append(num_iterations)
        print('edited model_nn')
        return real_model_nn(sess, input_image, num_iterations, **options)

    monkeypatch.setattr(ag, 'model_nn', edited_model_nn)
    code = ag.main(['--model', tiny_vgg_file, '--no-download', '--no-tune', '--no-progress',
                    '--content', pics.content, '--style', pics.style,
                    '--width', '64', '--start-width', '32', '--scale-factor', '2',
                    '--stage-iterations', '2,1', '--save-every', '0',
                    '--output-dir', str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert calls == [2, 1]  # one loop a stage: 32 pixels wide, then 64
    assert out.count('edited model_nn') == 2


def test_the_lines_a_command_line_run_prints_are_model_nn_s(tiny_vgg_file, pics, tmp_path,
                                                            monkeypatch, capsys):
    """The body of the loop is model_nn's own: the course's four lines of each printed
    iteration go through its print (art_generation's, patched here), and reach stdout whole
    beside the progress bar."""
    printed = []

    def recording_print(*args, **kwargs):
        printed.append(' '.join(str(arg) for arg in args))
        print(*args, **kwargs)

    monkeypatch.setattr(ag, 'print', recording_print, raising=False)
    code = ag.main(['--model', tiny_vgg_file, '--no-download', '--no-tune',
                    '--content', pics.content, '--style', pics.style, '--width', '32',
                    '--iterations', '3', '--print-every', '2', '--save-every', '0',
                    '--output-dir', str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    iterations = [line for line in printed if line.startswith('Iteration')]
    assert iterations == ['Iteration 0 :', 'Iteration 2 :']
    assert len(printed) == 8 and [line.split(' = ')[0] for line in printed[1:4]] == [
        'total cost', 'content cost', 'style cost']
    for line in printed:
        assert line + '\n' in out
