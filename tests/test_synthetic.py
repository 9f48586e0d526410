"""nst/synthetic.py writes MatConvNet-layout VGG-19 files with random weights: the tests of the
loader and the command line run on them, since the real file cannot be fetched here. They must
match the real file's layout (pretrained-model/README.md) in every way the loader can see.
Expected values come from that document, not from the code under test."""

import numpy as np
import scipy.io

from matconvnet import DOC_CONV_INDICES, DOC_LAYER_NAMES, DOC_MEAN_PIXEL, DOC_POOL_INDICES
from nst import synthetic


def test_generated_file_has_documented_layout(tiny_vgg):
    path, _ = tiny_vgg
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
    shapes = synthetic.kernel_shapes(synthetic.REAL_WIDTHS)
    assert list(shapes) == [n for n in DOC_LAYER_NAMES if n.startswith(('conv', 'fc'))]
    assert shapes['conv1_1'] == (3, 3, 3, 64)
    assert shapes['conv5_4'] == (3, 3, 512, 512)
    assert shapes['fc6'] == (7, 7, 512, 4096)
    assert shapes['fc7'] == (1, 1, 4096, 4096)
    assert shapes['fc8'] == (1, 1, 4096, 1000)
    # The real file is about 550 MB (MiB) of which nearly all is these float32 arrays.
    assert 540 * 2 ** 20 < synthetic.file_size_estimate(synthetic.REAL_WIDTHS) < 560 * 2 ** 20


def test_generator_is_deterministic_per_seed():
    a = synthetic.weights_by_name(synthetic.build_layers(seed=3))
    b = synthetic.weights_by_name(synthetic.build_layers(seed=3))
    c = synthetic.weights_by_name(synthetic.build_layers(seed=4))
    for name in a:
        np.testing.assert_array_equal(a[name][0], b[name][0])
        np.testing.assert_array_equal(a[name][1], b[name][1])
    assert not np.array_equal(a['conv1_1'][0], c['conv1_1'][0])
    # He scaling: the kernel's std is close to sqrt(2 / fan_in).
    big = synthetic.weights_by_name(synthetic.build_layers(widths=(64, 64, 64, 64, 64)))
    kernel = big['conv3_1'][0]
    np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / (9 * 64)), rtol=0.05)
