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
