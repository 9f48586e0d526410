"""nst.winograd against an independent float64 NumPy convolution: the F(4x4, 3x3) transforms,
the forward convolution for map sizes that are and are not multiples of the tile, and the
input gradient through the rotated kernel's transform (against TensorFlow's own gradient).

Tolerance: a Winograd convolution in float32 differs from the exact result by about 1e-5 of
its largest value (the transforms' factors run from 1/24 to 8); 5e-5 of it is allowed."""

import numpy as np
import pytest

from nst import winograd
from nst.runtime import import_tf

tf = import_tf()
TOLERANCE = 5e-5


def conv2d_same_float64(x, kernel):
    """(1, H, W, C_in) x (3, 3, C_in, C_out) -> (1, H, W, C_out), stride 1, zero padded."""
    _, height, width, _ = x.shape
    padded = np.pad(x.astype(np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)])
    out = np.zeros((1, height, width, kernel.shape[3]))
    for ky in range(3):
        for kx in range(3):
            out += padded[:, ky:ky + height, kx:kx + width, :] @ kernel[ky, kx].astype(np.float64)
    return out


def assert_close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * np.abs(expected).max())


def test_kernel_transform_is_g_g_gt_per_channel_pair():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        plain, rotated, stored = sess.run([
            winograd.kernel_transform(tf.constant(kernel)),
            winograd.kernel_transform(tf.constant(kernel), rotate=True),
            winograd.kernel_transform(tf.constant(kernel), transposed=False)])
    # Each laid out (36, its convolution's C_out, C_in): the gradient's runs from 3 to 2; or,
    # as stored, (36, C_in, C_out).
    assert plain.shape == (36, 3, 2)
    assert rotated.shape == (36, 2, 3)
    assert stored.shape == (36, 2, 3)
    for i in range(2):
        for o in range(3):
            g = kernel[:, :, i, o].astype(np.float64)
            np.testing.assert_allclose(plain[:, o, i], (winograd._G @ g @ winograd._G.T).ravel(),
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(stored[:, i, o], (winograd._G @ g @ winograd._G.T).ravel(),
                                       rtol=1e-6, atol=1e-6)
            flipped = g[::-1, ::-1]
            np.testing.assert_allclose(rotated[:, i, o],
                                       (winograd._G @ flipped @ winograd._G.T).ravel(),
                                       rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('transposed', [True, False])
@pytest.mark.parametrize('height, width, channels_in, channels_out',
                         [(8, 12, 3, 5), (1, 1, 2, 2), (5, 7, 4, 3), (19, 25, 16, 8),
                          (10, 6, 7, 1)])
def test_convolution_matches_the_direct_sum(height, width, channels_in, channels_out,
                                            transposed):
    """Either layout of the kernels' transforms (read transposed, or as stored)."""
    rng = np.random.default_rng(height * 100 + width)
    x = rng.normal(0, 10, (1, height, width, channels_in)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, channels_in, channels_out)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        transformed = winograd.kernel_transform(tf.constant(kernel), transposed=transposed)
        got = sess.run(winograd.conv2d_same(tf.constant(x), transformed, transposed))
    assert got.shape == (1, height, width, channels_out)
    assert_close(got, conv2d_same_float64(x, kernel))


@pytest.mark.parametrize('height, width', [(8, 8), (7, 10)])
def test_rotated_kernel_convolution_is_the_input_gradient(height, width):
    """conv2d_same(dy, kernel_transform(g, rotate=True)) is the gradient of conv2d(x, g) with
    respect to x for an upstream gradient dy (TensorFlow's own)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1, height, width, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 6)).astype(np.float32)
    d_y = rng.normal(size=(1, height, width, 6)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        kernel_t = tf.constant(kernel)
        x_t = tf.constant(x)
        expected, = tf.gradients(tf.nn.conv2d(x_t, kernel_t, [1, 1, 1, 1], 'SAME'), x_t,
                                 grad_ys=tf.constant(d_y))
        got = winograd.conv2d_same(tf.constant(d_y),
                                   winograd.kernel_transform(kernel_t, rotate=True))
        expected, got = sess.run([expected, got])
    assert got.shape == x.shape
    assert_close(got, expected)


def test_only_3x3_kernels():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match='3x3'):
            winograd.kernel_transform(tf.zeros([5, 5, 2, 2]))


def test_layers_of_one_shape_share_their_constants():
    """A second convolution of the same shapes (a block's next layer, or a layer's gradient)
    adds no constant to the graph: its shapes, paddings and transforms are the first one's.
    Each constant costs start-up time to build and to optimise away again."""
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [1, 10, 14, 8])
        kernel = tf.placeholder(tf.float32, [3, 3, 8, 8])

        def constants():
            return sum(op.type == 'Const' for op in graph.get_operations())

        y = winograd.conv2d_same(x, winograd.kernel_transform(kernel))
        first = constants()
        winograd.conv2d_same(y, winograd.kernel_transform(kernel))
        assert constants() == first
    with tf.Graph().as_default() as graph:  # a new graph gets its own (another's would raise)
        winograd.conv2d_same(tf.placeholder(tf.float32, [1, 10, 14, 8]),
                             winograd.kernel_transform(tf.placeholder(tf.float32, [3, 3, 8, 8])))
        assert constants() == first
