"""nst.weights: reading and checking the conv weights of MatConvNet's
imagenet-vgg-verydeep-19.mat (read_vgg_weights, check_vgg_weights, layers_needed), on files
nst/synthetic.py generates in the layout pretrained-model/README.md documents. Every problem is a
one-line WeightsError naming the file. Expected values are the arrays written, or taken from that
document, never from the code under test."""

import re

import numpy as np
import pytest
import scipy.io

import nst_utils
from matconvnet import CONV_NAMES, DOC_LAYER_NAMES, DOC_POOL_INDICES
from nst import config
from nst import synthetic
from nst import weights as nst_weights
from nst.errors import WeightsError
from nst.runtime import import_tf
from nst.synthetic import write_mat

tf = import_tf()


TINY = synthetic.TINY_WIDTHS


def assert_one_line_naming(error, path):
    message = str(error)
    assert '\n' not in message and '\r' not in message, message
    assert str(path) in message, message

# ----------------------------------------------------------------------------------------------
# The layer table and read_vgg_weights
# ----------------------------------------------------------------------------------------------


def test_layer_table_matches_documentation():
    assert list(config.VGG19_LAYERS) == DOC_LAYER_NAMES
    assert config.VGG19_CONV_LAYERS == CONV_NAMES
    assert config.VGG19_POOL_LAYERS == tuple(DOC_LAYER_NAMES[i] for i in DOC_POOL_INDICES)


def test_read_vgg_weights_returns_stored_kernels_and_flat_biases(tiny_vgg):
    path, written = tiny_vgg
    weights = nst_weights.read_vgg_weights(path)
    assert tuple(weights) == CONV_NAMES
    for name in CONV_NAMES:
        kernel, bias = weights[name]
        assert kernel.dtype == np.float32 and bias.dtype == np.float32
        assert bias.shape == (written[name][0].shape[3],)
        np.testing.assert_array_equal(kernel, written[name][0])  # as stored: no transpose
        np.testing.assert_array_equal(bias, written[name][1].reshape(-1))


def test_fields_are_read_by_name(tmp_path, tiny_vgg):
    path = write_mat(tmp_path, layers_override=synthetic.reorder_fields)
    record = scipy.io.loadmat(path)['layers'][0][0][0][0]
    # The reordering is real: field 2 is no longer the weights, so positional reads would fail.
    assert record.dtype.names[2] != 'weights' and record.dtype.names[-1] == 'name'
    expected = nst_weights.read_vgg_weights(tiny_vgg[0])
    weights = nst_weights.read_vgg_weights(path)
    for name in CONV_NAMES:
        np.testing.assert_array_equal(weights[name][0], expected[name][0])
        np.testing.assert_array_equal(weights[name][1], expected[name][1])


def test_compressed_and_fc_less_files_load_the_same(tmp_path, tiny_vgg):
    expected = nst_weights.read_vgg_weights(tiny_vgg[0])
    for options in ({'do_compression': True}, {'with_fc': False}):
        weights = nst_weights.read_vgg_weights(write_mat(tmp_path, **options))
        for name in CONV_NAMES:
            np.testing.assert_array_equal(weights[name][0], expected[name][0])
            np.testing.assert_array_equal(weights[name][1], expected[name][1])


def test_read_only_some_layers(tiny_vgg):
    weights = nst_weights.read_vgg_weights(tiny_vgg[0], layers=('conv2_1', 'conv4_3'))
    assert set(weights) == {'conv2_1', 'conv4_3'}
    np.testing.assert_array_equal(weights['conv4_3'][0], tiny_vgg[1]['conv4_3'][0])

# ----------------------------------------------------------------------------------------------
# Errors: one-line WeightsError naming the file
# ----------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / 'nowhere' / 'imagenet-vgg-verydeep-19.mat')
    with pytest.raises(WeightsError, match='not found') as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)
    with tf.Graph().as_default(), pytest.raises(WeightsError, match='not found'):
        nst_utils.load_vgg_model(path, 8, 8)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(WeightsError, match='is a directory') as info:
        nst_weights.read_vgg_weights(str(tmp_path))
    assert_one_line_naming(info.value, tmp_path)


def test_renamed_layer(tmp_path):
    path = write_mat(tmp_path, layers_override=lambda ls: synthetic.rename_layer(
        ls, 'conv3_2', 'conv3_x'))
    with pytest.raises(WeightsError, match=r"layer 12 should be 'conv3_2' but it holds "
                                           r"'conv3_x'") as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_removed_layer_names_where_the_expected_one_is(tmp_path):
    path = write_mat(tmp_path, layers_override=lambda ls: synthetic.remove_layer(ls, 'relu2_1'))
    assert scipy.io.loadmat(path)['layers'].shape == (1, 42)
    with pytest.raises(WeightsError, match=r"layer 7 should be 'conv2_2' but it holds "
                                           r"'relu2_2' \('conv2_2' is at index 6\)") as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_index_hint_counts_non_struct_cells(tmp_path):
    def edit(layers):
        layers = list(layers)
        layers[1] = np.zeros((1, 1))  # relu1_1 replaced by a plain number
        layers[2], layers[3] = layers[3], layers[2]  # conv1_2 now at file index 3
        return layers
    path = write_mat(tmp_path, layers_override=edit)
    with pytest.raises(WeightsError, match=r"'conv1_2' is at index 3\)"):
        nst_weights.read_vgg_weights(path)


@pytest.mark.parametrize('shape', [(5, 5, 4, 8), (3, 3, 4), (1, 1, 4, 8)])
def test_kernel_of_wrong_shape(tmp_path, shape):
    path = write_mat(tmp_path, layers_override=lambda ls: synthetic.replace_kernel(
        ls, 'conv2_1', shape=shape))
    with pytest.raises(WeightsError, match=r'layer conv2_1: kernel has shape %s'
                                           % re.escape(str(shape))) as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_bias_count_mismatch(tmp_path):
    bias = np.zeros((7, 1), np.float32)
    path = write_mat(tmp_path, layers_override=lambda ls: synthetic.replace_kernel(
        ls, 'conv3_3', shape=(3, 3, 8, 8), bias=bias))
    with pytest.raises(WeightsError, match=r'layer conv3_3: 7 biases for 8 output') as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_integer_kernel(tmp_path):
    kernel = np.ones((3, 3, 3, TINY[0]), np.int32)
    path = write_mat(tmp_path, layers_override=lambda ls: synthetic.replace_kernel(
        ls, 'conv1_1', kernel=kernel))
    with pytest.raises(WeightsError, match=r'layer conv1_1: weights are int32') as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_kernel_with_wrong_input_channels_is_caught_by_the_loader_naming_the_file(tmp_path):
    path = write_mat(tmp_path, layers_override=lambda ls: synthetic.replace_kernel(
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
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_layers_not_a_cell(tmp_path):
    path = str(tmp_path / 'vgg.mat')
    scipy.io.savemat(path, {'layers': np.zeros((2, 3))})
    with pytest.raises(WeightsError, match=r'"layers" is not a 1xN cell') as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_old_matconvnet_layout(tmp_path):
    path = write_mat(tmp_path, layout='old')
    contents = scipy.io.loadmat(path)
    assert 'normalization' in contents and 'meta' not in contents
    assert 'filters' in contents['layers'][0][0].dtype.names
    with pytest.raises(WeightsError, match=r'old MatConvNet release of VGG-19 \(top-level '
                                           r'"normalization"\)') as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_filters_field_without_top_level_normalization(tmp_path):
    path = write_mat(tmp_path, layers_override=lambda ls: synthetic.rename_field(
        ls, 'conv1_1', 'weights', 'filters'))
    with pytest.raises(WeightsError, match=r'layer conv1_1 has "filters" instead of "weights"'
                                           r'.*old MatConvNet') as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


@pytest.mark.parametrize('compressed', [False, True])
@pytest.mark.parametrize('fraction', [0.02, 0.3, 0.6, 0.9])
def test_truncated_file(tmp_path, compressed, fraction):
    path = write_mat(tmp_path, do_compression=compressed)
    synthetic.truncate_file(path, fraction)
    with pytest.raises(WeightsError, match=r'cannot be read .*truncated or damaged') as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


def test_html_page_saved_as_mat(tmp_path):
    path = str(tmp_path / 'imagenet-vgg-verydeep-19.mat')
    synthetic.write_html_page(path)
    with pytest.raises(WeightsError, match=r'an HTML page; expected MatConvNet') as info:
        nst_weights.read_vgg_weights(path)
    assert_one_line_naming(info.value, path)


@pytest.mark.parametrize('content, what', [(b'', 'empty'),
                                           (b'\x89HDF\r\n\x1a\n' + bytes(200),
                                            'not a MATLAB v5 .mat file')])
def test_empty_or_foreign_file(tmp_path, content, what):
    path = tmp_path / 'vgg.mat'
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=re.escape(what)) as info:
        nst_weights.read_vgg_weights(str(path))
    assert_one_line_naming(info.value, path)
