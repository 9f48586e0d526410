"""nst.vgg and nst_utils.load_vgg_model: the course's VGG-19 graph built from the weights of
generated MatConvNet-layout files (nst/synthetic.py): its keys and static shapes, and every
layer's values against an independent float64 NumPy computation (conv + ReLU with the kernels as
stored, SAME 2x2 average or max pooling that counts only the valid elements)."""

import re
import threading

import numpy as np
import pytest

import nst_utils
from matconvnet import COURSE_KEYS
from nst import config, vgg
from nst import synthetic
from nst import weights as nst_weights
from nst.runtime import import_tf

tf = import_tf()


TINY = synthetic.TINY_WIDTHS


def block_of(name):
    """conv3_2 -> 3, avgpool4 -> 4."""
    return int(re.search(r'(\d)(?:_\d)?$', name).group(1))


def expected_shape(key, height, width, widths):
    """Static shape of a course key: k pools before it halve (rounding up) the size k times."""
    if key == 'input':
        return (1, height, width, 3)
    block = block_of(key)
    pools = block if key.startswith('avgpool') else block - 1
    h, w = height, width
    for _ in range(pools):
        h, w = -(-h // 2), -(-w // 2)
    return (1, h, w, widths[block - 1])


def np_conv_relu(x, kernel, bias):
    """relu(SAME 2-D correlation of x (H, W, C) with kernel (kh, kw, C, O) as stored + bias),
    in float64. No kernel flip or transpose."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    kh, kw = kernel.shape[:2]
    height, width = x.shape[:2]
    padded = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((height, width, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum('hwc,co->hwo', padded[i:i + height, j:j + width], kernel[i, j])
    return np.maximum(out + np.asarray(bias, np.float64).reshape(-1), 0.0)


def np_pool(x, reduce):
    """2x2 stride-2 pooling of x (H, W, C) with TF's SAME rule for this case: the windows start
    at even indices and only the elements inside the image count (odd sizes pad at the end)."""
    height, width, channels = x.shape
    out = np.empty((-(-height // 2), -(-width // 2), channels))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            window = np.asarray(x[2 * i:2 * i + 2, 2 * j:2 * j + 2], np.float64)
            out[i, j] = reduce(window.reshape(-1, channels), axis=0)
    return out


def assert_close(actual, expected):
    """float32 TF vs float64 NumPy: rtol 1e-4, atol 1e-4 of the largest expected magnitude."""
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


def run_graph(path, image, keys, pooling='avg'):
    """Load the model for image's size, feed image into 'input', return {key: value[0]}."""
    with tf.Graph().as_default():
        graph = nst_utils.load_vgg_model(path, image.shape[1], image.shape[2], pooling=pooling)
        with tf.Session() as sess:
            sess.run(graph['input'].assign(image.astype(np.float32)))
            values = sess.run({key: graph[key] for key in keys})
    return {key: value[0] for key, value in values.items()}


def random_image(height, width, seed=1):
    """A mean-subtracted-like image (1, height, width, 3), exactly representable in float32."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-128, 128, (1, height, width, 3)).astype(np.float32)

# ----------------------------------------------------------------------------------------------
# Keys, shapes and values
# ----------------------------------------------------------------------------------------------


def test_load_vgg_model_keys_and_static_shapes(tiny_vgg):
    with tf.Graph().as_default():
        graph = nst_utils.load_vgg_model(tiny_vgg[0], 32, 48)
        assert set(graph) == set(COURSE_KEYS)
        assert isinstance(graph['input'], tf.Variable)
        assert graph['input'].dtype.base_dtype == tf.float32
        for key in COURSE_KEYS:
            assert tuple(graph[key].shape.as_list()) == expected_shape(key, 32, 48, TINY), key
        assert graph['avgpool5'].shape.as_list() == [1, 1, 2, TINY[4]]


def test_load_vgg_model_default_size_spatial_shapes(tiny_vgg):
    """The course's numbers at 300x400: conv4_2 38x50, avgpool4 19x25, avgpool5 10x13."""
    with tf.Graph().as_default():
        graph = nst_utils.load_vgg_model(tiny_vgg[0])
        assert graph['input'].shape.as_list() == [1, 300, 400, 3]
        assert graph['conv4_2'].shape.as_list() == [1, 38, 50, TINY[3]]
        assert graph['avgpool4'].shape.as_list() == [1, 19, 25, TINY[3]]
        assert graph['avgpool5'].shape.as_list() == [1, 10, 13, TINY[4]]
        for key in COURSE_KEYS:
            assert tuple(graph[key].shape.as_list()) == expected_shape(key, 300, 400, TINY), key


def test_load_vgg_model_real_widths_shapes(real_width_vgg_file):
    """Real channel widths (no fc layers, 80 MB): the course's (1, 38, 50, 512) etc."""
    with tf.Graph().as_default():
        graph = nst_utils.load_vgg_model(real_width_vgg_file)
        assert graph['conv1_1'].shape.as_list() == [1, 300, 400, 64]
        assert graph['conv4_2'].shape.as_list() == [1, 38, 50, 512]
        assert graph['avgpool4'].shape.as_list() == [1, 19, 25, 512]
        assert graph['avgpool5'].shape.as_list() == [1, 10, 13, 512]


def test_conv1_1_equals_numpy(tiny_vgg):
    path, written = tiny_vgg
    image = random_image(9, 14)
    conv1_1 = run_graph(path, image, ['conv1_1'])['conv1_1']
    kernel, bias = written['conv1_1']
    expected = np_conv_relu(image[0], kernel, bias)
    assert 0 < np.count_nonzero(expected) < expected.size  # relu is active and clips some
    assert_close(conv1_1, expected)
    # The check can tell kernel orientations apart: the swapped kernel gives other values.
    swapped = np_conv_relu(image[0], np.transpose(kernel, (1, 0, 2, 3)), bias)
    assert not np.allclose(conv1_1, swapped, rtol=1e-4, atol=1e-4 * np.max(np.abs(expected)))


def test_every_layer_is_conv_or_pool_of_the_previous(tiny_vgg):
    """Each conv key = relu(conv(previous key, its own W) + b), each avgpool = mean of the
    previous over valid elements; odd sizes at every stage (11x13 -> 6x7 -> 3x4 -> 2x2 -> 1x1)."""
    path, written = tiny_vgg
    image = random_image(11, 13, seed=2)
    order = [k for k in config.VGG19_LAYERS[:37] if not k.startswith('relu')]
    keys = [('avg' + k) if k.startswith('pool') else k for k in order]
    values = run_graph(path, image, keys)
    previous = image[0]
    for key in keys:
        if key.startswith('conv'):
            expected = np_conv_relu(previous, *written[key])
        else:
            expected = np_pool(previous, np.mean)
        assert values[key].shape == expected.shape, key
        assert np.all(np.isfinite(values[key])) and np.any(values[key] > 0), key
        assert_close(values[key], expected)
        previous = values[key]


def test_avgpool1_averages_valid_elements_and_max_pooling(tiny_vgg):
    path, _ = tiny_vgg
    image = random_image(7, 9, seed=3)
    avg = run_graph(path, image, ['conv1_2', 'avgpool1'])
    conv1_2 = avg['conv1_2']
    assert avg['avgpool1'].shape == (4, 5, TINY[0])
    expected_mean = np_pool(conv1_2, np.mean)
    assert_close(avg['avgpool1'], expected_mean)
    # Along the bottom row / right column only the valid elements count, not zero padding.
    zero_padded = np.pad(conv1_2, ((0, 1), (0, 1), (0, 0))).reshape(4, 2, 5, 2, -1).mean((1, 3))
    assert not np.allclose(avg['avgpool1'][-1], zero_padded[-1], rtol=1e-3)

    maxed = run_graph(path, image, ['conv1_2', 'avgpool1'], pooling='max')
    np.testing.assert_allclose(maxed['conv1_2'], conv1_2, rtol=1e-6, atol=1e-6)
    expected_max = np_pool(maxed['conv1_2'], np.max)
    assert_close(maxed['avgpool1'], expected_max)
    assert not np.allclose(expected_max, expected_mean, rtol=1e-3)


def test_invalid_pooling_is_rejected(tiny_vgg):
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match='pooling'):
            nst_utils.load_vgg_model(tiny_vgg[0], 8, 8, pooling='median')


def test_graph_stops_where_the_weights_stop(tiny_vgg):
    """Reading only the layers a cost needs (layers_needed) builds the graph up to there."""
    path = tiny_vgg[0]
    needed = nst_weights.layers_needed(['conv4_2', 'conv1_1', 'conv5_1'])
    assert needed == config.VGG19_CONV_LAYERS[:13]  # conv1_1 ... conv5_1
    assert nst_weights.layers_needed(['avgpool2']) == config.VGG19_CONV_LAYERS[:4]
    weights = nst_weights.read_vgg_weights(str(path), layers=needed)
    with tf.Graph().as_default():
        model = vgg.build_vgg_graph(weights, 16, 24)
    assert set(model) == {'input', 'avgpool1', 'avgpool2', 'avgpool3', 'avgpool4'} | set(needed)


@pytest.mark.parametrize('precision', ['float32', 'bfloat16'])
def test_column_major_kernels_load_as_row_major_ones(precision):
    """The MAT reader's kernels are column-major; they are fed transposed (a row-major view)
    and transposed back in the session: the variables hold the same values either way."""
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    loaded = []
    for stored in (np.ascontiguousarray(kernel), np.asfortranarray(kernel)):
        with tf.Graph().as_default(), tf.Session() as sess:
            model = vgg.build_vgg_graph({'conv1_1': (stored, bias)}, 5, 6, sess=sess,
                                        precision=precision)
            variables = {v.op.name: v for v in tf.get_collection(vgg.VGG_WEIGHTS_COLLECTION)}
            loaded.append(sess.run([tf.cast(variables['conv1_1/W'], tf.float32),
                                    tf.cast(variables['conv1_1/b'], tf.float32)]))
            assert set(model) == {'input', 'conv1_1'}
    dtype = tf.bfloat16.as_numpy_dtype if precision == 'bfloat16' else np.float32
    for got in loaded:
        np.testing.assert_array_equal(got[0], kernel.astype(dtype).astype(np.float32))
        np.testing.assert_array_equal(got[1], bias.astype(dtype).astype(np.float32))


class FailingSession:
    """A session of the default graph whose runs fail, as a real one's can (out of memory)."""

    def __init__(self):
        self.graph = tf.get_default_graph()

    def run(self, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, 'out of memory loading the weights')


def test_the_weights_load_while_the_layers_are_built_and_finish_raises_its_error(tiny_vgg):
    """The weights' session run starts when the builder is made, in a thread of its own;
    finish waits for it and raises what stopped it, in the builder's thread. The variables
    and the layers' ops keep the course's names (conv1_1/W, conv1_1/...)."""
    weights = nst_weights.read_vgg_weights(tiny_vgg[0], layers=config.VGG19_CONV_LAYERS[:2])
    with tf.Graph().as_default(), tf.Session() as sess:
        model = vgg.build_vgg_graph(weights, 6, 8, sess=sess)
        names = {v.op.name for v in tf.get_collection(vgg.VGG_WEIGHTS_COLLECTION)}
        assert {'conv1_1/W', 'conv1_1/b', 'conv1_2/W', 'conv1_2/b'} <= names
        assert model['conv1_2'].name.startswith('conv1_2/')
        assert not any(t.name == 'nst-load-weights' for t in threading.enumerate())
        # Loaded: a layer evaluates without any initialiser run here.
        image = np.ones((1, 6, 8, 3), np.float32)
        assert np.isfinite(sess.run(model['conv1_2'], {model['input']: image})).all()
    with tf.Graph().as_default():
        with pytest.raises(tf.errors.ResourceExhaustedError, match='loading the weights'):
            vgg.build_vgg_graph(weights, 6, 8, sess=FailingSession())
