"""Tests of nst_utils.read_vgg_weights / load_vgg_model on generated MatConvNet-layout files.

The real imagenet-vgg-verydeep-19.mat cannot be fetched here; tests/vgg_fixture.py writes files
with the layout documented in /work/shared/MATCONVNET_VGG19.md (checked by the layout tests
below). Expected values are computed independently with NumPy in float64, or taken from that
document and the course, never from the code under test.
"""

import re

import numpy as np
import pytest
import scipy.io

import nst_utils
import vgg_fixture
from nst_utils import WeightsError
from vgg_fixture import write_mat

tf = nst_utils.import_tf()

# From MATCONVNET_VGG19.md, written out here rather than taken from nst_utils or the fixture.
DOC_LAYER_NAMES = (
    ['conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1',
     'conv2_1', 'relu2_1', 'conv2_2', 'relu2_2', 'pool2']
    + ['%s3_%d' % (kind, k) for k in range(1, 5) for kind in ('conv', 'relu')] + ['pool3']
    + ['%s4_%d' % (kind, k) for k in range(1, 5) for kind in ('conv', 'relu')] + ['pool4']
    + ['%s5_%d' % (kind, k) for k in range(1, 5) for kind in ('conv', 'relu')] + ['pool5']
    + ['fc6', 'relu6', 'fc7', 'relu7', 'fc8', 'prob'])
DOC_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
DOC_POOL_INDICES = (4, 9, 18, 27, 36)
DOC_MEAN_PIXEL = (123.68, 116.779, 103.939)

CONV_NAMES = tuple(DOC_LAYER_NAMES[i] for i in DOC_CONV_INDICES)
COURSE_KEYS = ('input',) + CONV_NAMES + tuple('avgpool%d' % k for k in range(1, 6))

TINY = vgg_fixture.TINY_WIDTHS


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def tiny(tiny_vgg_file):
    """(path, {name: (W, b)}) of a tiny-width file in the documented layout (seed 0)."""
    return tiny_vgg_file, vgg_fixture.weights_by_name(vgg_fixture.build_layers(seed=0))


def assert_one_line_naming(error, path):
    message = str(error)
    assert '\n' not in message and '\r' not in message, message
    assert str(path) in message, message


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
# The generated file matches the documented layout
# ----------------------------------------------------------------------------------------------

def test_nst_utils_layer_table_matches_documentation():
    assert list(nst_utils.VGG19_LAYERS) == DOC_LAYER_NAMES
    assert nst_utils.VGG19_CONV_LAYERS == CONV_NAMES
    assert nst_utils.VGG19_POOL_LAYERS == tuple(DOC_LAYER_NAMES[i] for i in DOC_POOL_INDICES)


def test_generated_file_has_documented_layout(tiny):
    path, _ = tiny
    contents = scipy.io.loadmat(path)
    assert {'layers', 'meta'} <= set(contents) and 'normalization' not in contents
    with open(path, 'rb') as f:
        assert f.read(19) == b'MATLAB 5.0 MAT-file'
    layers = contents['layers']
    assert layers.dtype == object and layers.shape == (1, 43)
    for i in range(43):
        assert layers[0][i].shape == (1, 1) and layers[0][i].dtype.names
    names = [str(layers[0][i][0][0][0][0]) for i in range(43)]  # the course's name read
    assert names == DOC_LAYER_NAMES

    channels = 3
    for i in DOC_CONV_INDICES:
        record = layers[0][i][0][0]
        assert record.dtype.names[:3] == ('name', 'type', 'weights')
        assert set(record.dtype.names) >= {'size', 'pad', 'stride', 'precious', 'dilate', 'opts'}
        assert record['type'][0] == 'conv'
        kernel, bias = record[2][0][0], record[2][0][1]  # the course's positional reads
        assert kernel.dtype == np.float32 and bias.dtype == np.float32
        assert kernel.ndim == 4 and kernel.shape[:3] == (3, 3, channels)
        assert bias.shape == (kernel.shape[3], 1)
        assert np.all(np.isfinite(kernel)) and np.std(kernel) > 0
        channels = kernel.shape[3]
    for i in DOC_POOL_INDICES:
        record = layers[0][i][0][0]
        assert record['type'][0] == 'pool' and record['method'][0] == 'max'
        np.testing.assert_array_equal(record['pool'], [[2, 2]])
        np.testing.assert_array_equal(record['stride'], [[2, 2]])
    for i, name in enumerate(DOC_LAYER_NAMES):
        if name.startswith('relu'):
            assert layers[0][i][0][0]['type'][0] == 'relu'

    fc6, fc7, fc8 = (layers[0][i][0][0] for i in (37, 39, 41))
    shapes = []
    for record in (fc6, fc7, fc8):
        assert record['type'][0] == 'conv'
        shapes.append(record['weights'][0][0].shape)
    assert shapes[0][:3] == (7, 7, channels)
    assert shapes[1][:3] == (1, 1, shapes[0][3])
    assert shapes[2][:3] == (1, 1, shapes[1][3])
    assert layers[0][42][0][0]['type'][0] == 'softmax'

    meta = contents['meta'][0, 0]
    normalization = meta['normalization'][0, 0]
    assert set(normalization.dtype.names) == {'averageImage', 'imageSize', 'border',
                                              'keepAspect', 'interpolation', 'cropSize'}
    np.testing.assert_allclose(normalization['averageImage'].reshape(-1), DOC_MEAN_PIXEL,
                               rtol=1e-6)
    classes = meta['classes'][0, 0]
    assert classes['name'].size == classes['description'].size == shapes[2][3]


def test_real_widths_have_documented_shapes_and_size():
    shapes = vgg_fixture.kernel_shapes(vgg_fixture.REAL_WIDTHS)
    assert list(shapes) == [n for n in DOC_LAYER_NAMES if n.startswith(('conv', 'fc'))]
    assert shapes['conv1_1'] == (3, 3, 3, 64)
    assert shapes['conv5_4'] == (3, 3, 512, 512)
    assert shapes['fc6'] == (7, 7, 512, 4096)
    assert shapes['fc7'] == (1, 1, 4096, 4096)
    assert shapes['fc8'] == (1, 1, 4096, 1000)
    # The real file is about 550 MB (MiB) of which nearly all is these float32 arrays.
    assert 540 * 2 ** 20 < vgg_fixture.file_size_estimate(vgg_fixture.REAL_WIDTHS) < 560 * 2 ** 20


def test_generator_is_deterministic_per_seed():
    a = vgg_fixture.weights_by_name(vgg_fixture.build_layers(seed=3))
    b = vgg_fixture.weights_by_name(vgg_fixture.build_layers(seed=3))
    c = vgg_fixture.weights_by_name(vgg_fixture.build_layers(seed=4))
    for name in a:
        np.testing.assert_array_equal(a[name][0], b[name][0])
        np.testing.assert_array_equal(a[name][1], b[name][1])
    assert not np.array_equal(a['conv1_1'][0], c['conv1_1'][0])
    # He scaling: the kernel's std is close to sqrt(2 / fan_in).
    big = vgg_fixture.weights_by_name(vgg_fixture.build_layers(widths=(64, 64, 64, 64, 64)))
    kernel = big['conv3_1'][0]
    np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / (9 * 64)), rtol=0.05)


# ----------------------------------------------------------------------------------------------
# read_vgg_weights
# ----------------------------------------------------------------------------------------------

def test_read_vgg_weights_returns_stored_kernels_and_flat_biases(tiny):
    path, written = tiny
    weights = nst_utils.read_vgg_weights(path)
    assert tuple(weights) == CONV_NAMES
    for name in CONV_NAMES:
        kernel, bias = weights[name]
        assert kernel.dtype == np.float32 and bias.dtype == np.float32
        assert bias.shape == (written[name][0].shape[3],)
        np.testing.assert_array_equal(kernel, written[name][0])  # as stored: no transpose
        np.testing.assert_array_equal(bias, written[name][1].reshape(-1))


def test_fields_are_read_by_name(tmp_path, tiny):
    path = write_mat(tmp_path, layers_override=vgg_fixture.reorder_fields)
    record = scipy.io.loadmat(path)['layers'][0][0][0][0]
    # The reordering is real: field 2 is no longer the weights, so positional reads would fail.
    assert record.dtype.names[2] != 'weights' and record.dtype.names[-1] == 'name'
    expected = nst_utils.read_vgg_weights(tiny[0])
    weights = nst_utils.read_vgg_weights(path)
    for name in CONV_NAMES:
        np.testing.assert_array_equal(weights[name][0], expected[name][0])
        np.testing.assert_array_equal(weights[name][1], expected[name][1])


def test_compressed_and_fc_less_files_load_the_same(tmp_path, tiny):
    expected = nst_utils.read_vgg_weights(tiny[0])
    for options in ({'do_compression': True}, {'with_fc': False}):
        weights = nst_utils.read_vgg_weights(write_mat(tmp_path, **options))
        for name in CONV_NAMES:
            np.testing.assert_array_equal(weights[name][0], expected[name][0])
            np.testing.assert_array_equal(weights[name][1], expected[name][1])


def test_read_only_some_layers(tiny):
    weights = nst_utils.read_vgg_weights(tiny[0], layers=('conv2_1', 'conv4_3'))
    assert set(weights) == {'conv2_1', 'conv4_3'}
    np.testing.assert_array_equal(weights['conv4_3'][0], tiny[1]['conv4_3'][0])


# ----------------------------------------------------------------------------------------------
# load_vgg_model: keys, shapes, values
# ----------------------------------------------------------------------------------------------

def test_load_vgg_model_keys_and_static_shapes(tiny):
    with tf.Graph().as_default():
        graph = nst_utils.load_vgg_model(tiny[0], 32, 48)
        assert set(graph) == set(COURSE_KEYS)
        assert isinstance(graph['input'], tf.Variable)
        assert graph['input'].dtype.base_dtype == tf.float32
        for key in COURSE_KEYS:
            assert tuple(graph[key].shape.as_list()) == expected_shape(key, 32, 48, TINY), key
        assert graph['avgpool5'].shape.as_list() == [1, 1, 2, TINY[4]]


def test_load_vgg_model_default_size_spatial_shapes(tiny):
    """The course's numbers at 300x400: conv4_2 38x50, avgpool4 19x25, avgpool5 10x13."""
    with tf.Graph().as_default():
        graph = nst_utils.load_vgg_model(tiny[0])
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


def test_conv1_1_equals_numpy(tiny):
    path, written = tiny
    image = random_image(9, 14)
    conv1_1 = run_graph(path, image, ['conv1_1'])['conv1_1']
    kernel, bias = written['conv1_1']
    expected = np_conv_relu(image[0], kernel, bias)
    assert 0 < np.count_nonzero(expected) < expected.size  # relu is active and clips some
    assert_close(conv1_1, expected)
    # The check can tell kernel orientations apart: the swapped kernel gives other values.
    swapped = np_conv_relu(image[0], np.transpose(kernel, (1, 0, 2, 3)), bias)
    assert not np.allclose(conv1_1, swapped, rtol=1e-4, atol=1e-4 * np.max(np.abs(expected)))


def test_every_layer_is_conv_or_pool_of_the_previous(tiny):
    """Each conv key = relu(conv(previous key, its own W) + b), each avgpool = mean of the
    previous over valid elements; odd sizes at every stage (11x13 -> 6x7 -> 3x4 -> 2x2 -> 1x1)."""
    path, written = tiny
    image = random_image(11, 13, seed=2)
    order = [k for k in nst_utils.VGG19_LAYERS[:37] if not k.startswith('relu')]
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


def test_avgpool1_averages_valid_elements_and_max_pooling(tiny):
    path, _ = tiny
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


def test_invalid_pooling_is_rejected(tiny):
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match='pooling'):
            nst_utils.load_vgg_model(tiny[0], 8, 8, pooling='median')


# ----------------------------------------------------------------------------------------------
# Errors: one-line WeightsError naming the file
# ----------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = str(tmp_path / 'nowhere' / 'imagenet-vgg-verydeep-19.mat')
    with pytest.raises(WeightsError, match='not found') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)
    with tf.Graph().as_default(), pytest.raises(WeightsError, match='not found'):
        nst_utils.load_vgg_model(path, 8, 8)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(WeightsError, match='is a directory') as info:
        nst_utils.read_vgg_weights(str(tmp_path))
    assert_one_line_naming(info.value, tmp_path)


def test_renamed_layer(tmp_path):
    path = write_mat(tmp_path, layers_override=lambda ls: vgg_fixture.rename_layer(
        ls, 'conv3_2', 'conv3_x'))
    with pytest.raises(WeightsError, match=r"layer 12 should be 'conv3_2' but it holds "
                                           r"'conv3_x'") as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_removed_layer_names_where_the_expected_one_is(tmp_path):
    path = write_mat(tmp_path, layers_override=lambda ls: vgg_fixture.remove_layer(ls, 'relu2_1'))
    assert scipy.io.loadmat(path)['layers'].shape == (1, 42)
    with pytest.raises(WeightsError, match=r"layer 7 should be 'conv2_2' but it holds "
                                           r"'relu2_2' \('conv2_2' is at index 6\)") as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_index_hint_counts_non_struct_cells(tmp_path):
    def edit(layers):
        layers = list(layers)
        layers[1] = np.zeros((1, 1))  # relu1_1 replaced by a plain number
        layers[2], layers[3] = layers[3], layers[2]  # conv1_2 now at file index 3
        return layers
    path = write_mat(tmp_path, layers_override=edit)
    with pytest.raises(WeightsError, match=r"'conv1_2' is at index 3\)"):
        nst_utils.read_vgg_weights(path)


@pytest.mark.parametrize('shape', [(5, 5, 4, 8), (3, 3, 4), (1, 1, 4, 8)])
def test_kernel_of_wrong_shape(tmp_path, shape):
    path = write_mat(tmp_path, layers_override=lambda ls: vgg_fixture.replace_kernel(
        ls, 'conv2_1', shape=shape))
    with pytest.raises(WeightsError, match=r'layer conv2_1: kernel has shape %s'
                                           % re.escape(str(shape))) as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_bias_count_mismatch(tmp_path):
    bias = np.zeros((7, 1), np.float32)
    path = write_mat(tmp_path, layers_override=lambda ls: vgg_fixture.replace_kernel(
        ls, 'conv3_3', shape=(3, 3, 8, 8), bias=bias))
    with pytest.raises(WeightsError, match=r'layer conv3_3: 7 biases for 8 output') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_integer_kernel(tmp_path):
    kernel = np.ones((3, 3, 3, TINY[0]), np.int32)
    path = write_mat(tmp_path, layers_override=lambda ls: vgg_fixture.replace_kernel(
        ls, 'conv1_1', kernel=kernel))
    with pytest.raises(WeightsError, match=r'layer conv1_1: weights are int32') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_kernel_with_wrong_input_channels_is_caught_by_the_loader_naming_the_file(tmp_path):
    path = write_mat(tmp_path, layers_override=lambda ls: vgg_fixture.replace_kernel(
        ls, 'conv2_1', shape=(3, 3, TINY[0] + 1, TINY[1])))
    with tf.Graph().as_default():
        with pytest.raises(WeightsError, match=r'layer conv2_1: kernel has shape \(3, 3, 5, 8\), '
                                               r'expected 4 input channels') as info:
            nst_utils.load_vgg_model(path, 8, 8)
    assert '\n' not in str(info.value)
    assert_one_line_naming(info.value, path)


def test_no_layers_variable(tmp_path):
    path = write_mat(tmp_path, omit_layers=True)
    assert 'meta' in scipy.io.loadmat(path)
    with pytest.raises(WeightsError, match=r'has no "layers" variable') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_layers_not_a_cell(tmp_path):
    path = str(tmp_path / 'vgg.mat')
    scipy.io.savemat(path, {'layers': np.zeros((2, 3))})
    with pytest.raises(WeightsError, match=r'"layers" is not a 1xN cell') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_old_matconvnet_layout(tmp_path):
    path = write_mat(tmp_path, layout='old')
    contents = scipy.io.loadmat(path)
    assert 'normalization' in contents and 'meta' not in contents
    assert 'filters' in contents['layers'][0][0].dtype.names
    with pytest.raises(WeightsError, match=r'old MatConvNet release of VGG-19 \(top-level '
                                           r'"normalization"\)') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_filters_field_without_top_level_normalization(tmp_path):
    path = write_mat(tmp_path, layers_override=lambda ls: vgg_fixture.rename_field(
        ls, 'conv1_1', 'weights', 'filters'))
    with pytest.raises(WeightsError, match=r'layer conv1_1 has "filters" instead of "weights"'
                                           r'.*old MatConvNet') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


@pytest.mark.parametrize('compressed', [False, True])
@pytest.mark.parametrize('fraction', [0.02, 0.3, 0.6, 0.9])
def test_truncated_file(tmp_path, compressed, fraction):
    path = write_mat(tmp_path, do_compression=compressed)
    vgg_fixture.truncate_file(path, fraction)
    with pytest.raises(WeightsError, match=r'cannot be read .*truncated or damaged') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_html_page_saved_as_mat(tmp_path):
    path = str(tmp_path / 'imagenet-vgg-verydeep-19.mat')
    vgg_fixture.write_html_page(path)
    with pytest.raises(WeightsError, match=r'an HTML page; expected MatConvNet') as info:
        nst_utils.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


@pytest.mark.parametrize('content, what', [(b'', 'empty'),
                                           (b'\x89HDF\r\n\x1a\n' + bytes(200),
                                            'not a MATLAB v5 .mat file')])
def test_empty_or_foreign_file(tmp_path, content, what):
    path = tmp_path / 'vgg.mat'
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=re.escape(what)) as info:
        nst_utils.read_vgg_weights(str(path))
    assert_one_line_naming(info.value, path)


def test_graph_stops_where_the_weights_stop(tiny):
    """Reading only the layers a cost needs (layers_needed) builds the graph up to there."""
    path = tiny[0]
    needed = nst_utils.layers_needed(['conv4_2', 'conv1_1', 'conv5_1'])
    assert needed == nst_utils.VGG19_CONV_LAYERS[:13]  # conv1_1 ... conv5_1
    assert nst_utils.layers_needed(['avgpool2']) == nst_utils.VGG19_CONV_LAYERS[:4]
    weights = nst_utils.read_vgg_weights(str(path), layers=needed)
    with tf.Graph().as_default():
        model = nst_utils.build_vgg_graph(weights, 16, 24)
    assert set(model) == {'input', 'avgpool1', 'avgpool2', 'avgpool3', 'avgpool4'} | set(needed)


@pytest.mark.parametrize('with_session', [True, False], ids=['variables', 'constants'])
def test_transposed_convolution_matches_conv2d(tiny, monkeypatch, with_session):
    """Wide layers run their forward pass as a transposed convolution of the rotated kernel
    (nst_utils._conv2d_same), with a hand-written gradient. With the threshold at one channel
    every layer takes that path (conv1_1's narrow-input gradient is switched off for it):
    outputs and input gradients must equal tf.nn.conv2d's."""
    weights = nst_utils.read_vgg_weights(tiny[0])
    rng = np.random.default_rng(5)
    image = rng.normal(0, 50, (1, 11, 13, 3)).astype(np.float32)
    probes = {name: rng.normal(size=(1,) + shape).astype(np.float32)
              for name, shape in [('conv1_2', (11, 13, 4)), ('conv3_4', (3, 4, 8)),
                                  ('conv5_4', (1, 1, 16))]}

    def outputs_and_gradient(threshold):
        monkeypatch.setattr(nst_utils, 'TRANSPOSED_CONV_MIN_CHANNELS', threshold)
        monkeypatch.setattr(nst_utils, 'NARROW_CONV_MAX_CHANNELS', min(threshold - 1, 4))
        with tf.Graph().as_default(), tf.Session() as sess:
            model = nst_utils.build_vgg_graph(weights, 11, 13, sess=sess if with_session else None)
            ops = {op.type for op in tf.get_default_graph().get_operations()}
            # A scalar that depends on shallow and deep layers, for the input gradient.
            J = tf.add_n([tf.reduce_sum(model[name] * probe) for name, probe in probes.items()])
            gradient = tf.gradients(J, model['input'])[0]
            sess.run(model['input'].initializer)
            model['input'].load(image, sess)
            layers = sess.run({name: model[name] for name in nst_utils.VGG19_CONV_LAYERS})
            return layers, sess.run(gradient), ops

    transposed, transposed_gradient, ops = outputs_and_gradient(1)
    plain, plain_gradient, plain_ops = outputs_and_gradient(10 ** 6)
    assert 'Conv2D' not in ops and 'Conv2DBackpropInput' in ops
    assert 'Conv2D' in plain_ops
    for name in nst_utils.VGG19_CONV_LAYERS:
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
        pooled = nst_utils._avg_pool_2x2(x)
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
        ours = nst_utils._avg_pool_2x2(x)
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
    assert channels_in <= nst_utils.NARROW_CONV_MAX_CHANNELS
    rng = np.random.default_rng(height * 100 + width * 10 + channels_in)
    image = rng.normal(size=(1, height, width, channels_in)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, channels_in, channels_out)).astype(np.float32)
    upstream = rng.normal(size=(1, height, width, channels_out)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        x, k, up = (tf.cast(tf.constant(v), dtype) for v in (image, kernel, upstream))
        ours = nst_utils._conv2d_same(x, k)
        gradient = tf.gradients(tf.reduce_sum(ours * up), x)[0]
        reference = tf.nn.conv2d(x, k, strides=[1, 1, 1, 1], padding='SAME')
        expected = tf.nn.conv2d_backprop_input([1, height, width, channels_in], k, up,
                                               strides=[1, 1, 1, 1], padding='SAME')
        values = sess.run([tf.cast(t, tf.float32) for t in (ours, reference, gradient, expected)])
    tolerance = 1e-5 if dtype == 'float32' else 3e-2
    scale = np.abs(values[3]).max()
    np.testing.assert_allclose(values[0], values[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(values[2], values[3], rtol=tolerance, atol=tolerance * scale)
