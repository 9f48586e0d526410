"""Read and check the conv weights of MatConvNet's imagenet-vgg-verydeep-19.mat.

The layout is documented in pretrained-model/README.md.
"""

import os
import stat

import numpy as np

from nst.config import VGG19_CONV_LAYERS, VGG19_LAYERS, VGG_URL
from nst.errors import MatFormatError, MatNotCellError, WeightsError, one_line
from nst.matfile import mat_file_truncated, mat_variable_names, read_mat_cells


def read_vgg_weights(path, layers=VGG19_CONV_LAYERS):
    """Read the conv kernels and biases of MatConvNet's imagenet-vgg-verydeep-19.mat.

    Returns {name: (W, b)} with W float32 (3, 3, in, out) as stored (no transpose, as in the
    course) and b float32 (out,). Only the layer structs up to the deepest of `layers` are read
    (for all 16 conv layers: conv1_1 ... conv5_4, about 80 MB); the fully connected layers after
    them never are. Fields are read by name, so their order in the struct does not matter.
    Raises WeightsError with a one-line message when the file is not that file.
    """
    if not os.path.exists(path):
        raise WeightsError('%s: weights file not found' % path)
    if os.path.isdir(path):
        raise WeightsError('%s: is a directory, not a weights file' % path)
    if stat.S_ISFIFO(os.stat(path).st_mode):  # reading it would wait for a writer
        raise WeightsError('%s: is a named pipe, not a weights file' % path)
    with open(path, 'rb') as f:
        head = f.read(128)
    if not head.startswith(b'MATLAB 5.0 MAT-file'):
        what = 'an HTML page' if head.lstrip()[:1] == b'<' else (
            'empty' if not head else 'not a MATLAB v5 .mat file')
        raise WeightsError('%s: %s; expected MatConvNet imagenet-vgg-verydeep-19.mat '
                           '(delete it and download %s)' % (path, what, VGG_URL))
    damaged = ('%s: cannot be read (%%s); the file may be truncated or damaged, delete it and '
               'download %s again' % (path, VGG_URL))
    try:
        # The tags of the top-level variables give their sizes: a cut-off download shows here
        # even though the layers we read come first.
        if mat_file_truncated(path):
            raise MatFormatError('the file is shorter than its contents say')
        names = mat_variable_names(path)
        if 'normalization' in names:
            raise WeightsError('%s: is the old MatConvNet release of VGG-19 (top-level '
                               '"normalization"), whose layout differs; download the current '
                               'file from %s' % (path, VGG_URL))
        if 'layers' not in names:
            raise WeightsError('%s: has no "layers" variable; not a MatConvNet model file'
                               % path)
        deepest = max((VGG19_LAYERS.index(name) for name in layers), default=-1)
        cells = read_mat_cells(path, 'layers', count=deepest + 1)
    except MatNotCellError:
        raise WeightsError('%s: "layers" is not a 1xN cell array of layer structs'
                           % path) from None
    except MatFormatError as error:
        raise WeightsError(damaged % one_line(error)) from None

    records = [cell if isinstance(cell, dict) else None for cell in cells]
    names_in_file = [_field_text(record, 'name') for record in records]
    weights = {}
    for name in layers:
        index = VGG19_LAYERS.index(name)
        record = records[index] if index < len(records) else None
        found = names_in_file[index] if index < len(names_in_file) else None
        if found != name:
            where = ('it holds %r' % found) if found else 'there is no layer struct there'
            hint = (' (%r is at index %d)' % (name, names_in_file.index(name))
                    if name in names_in_file else '')
            raise WeightsError('%s: layer %d should be %r but %s%s; not the MatConvNet VGG-19 file'
                               % (path, index, name, where, hint))
        weights[name] = _conv_weights(path, name, record)
    if tuple(layers) == VGG19_CONV_LAYERS[:len(layers)]:  # a graph can be built on them
        try:
            check_vgg_weights(weights)
        except WeightsError as error:
            raise WeightsError('%s: %s' % (path, error)) from None
    return weights


def _field_text(record, field):
    """The text of a struct field (a layer's name or type), or None."""
    value = record.get(field) if record is not None else None
    return value if isinstance(value, str) else None


def _conv_weights(path, name, record):
    if 'weights' not in record:
        if 'filters' in record:
            raise WeightsError('%s: layer %s has "filters" instead of "weights": the old '
                               'MatConvNet release of VGG-19; download the current file from %s'
                               % (path, name, VGG_URL))
        raise WeightsError('%s: layer %s has no "weights" field' % (path, name))
    pair = record['weights']
    if not (isinstance(pair, np.ndarray) and pair.dtype == object and pair.size == 2):
        raise WeightsError('%s: layer %s: "weights" is not a {W, b} cell' % (path, name))
    kernel, bias = pair.reshape(-1, order='F')
    kernel = np.asarray(kernel)
    bias = np.asarray(bias)
    if kernel.dtype.kind != 'f' or bias.dtype.kind != 'f':
        raise WeightsError('%s: layer %s: weights are %s and %s, expected float32'
                           % (path, name, kernel.dtype, bias.dtype))
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise WeightsError('%s: layer %s: kernel has shape %s, expected (3, 3, in, out)'
                           % (path, name, kernel.shape))
    if bias.size != kernel.shape[3]:
        raise WeightsError('%s: layer %s: %d biases for %d output channels'
                           % (path, name, bias.size, kernel.shape[3]))
    return kernel.astype(np.float32, copy=False), bias.reshape(-1).astype(np.float32, copy=False)


def check_vgg_weights(weights):
    """Check that the conv layers are conv1_1 ... up to some layer, in order, and that
    consecutive ones fit together (input channels = previous outputs)."""
    expected = VGG19_CONV_LAYERS[:len(weights)]
    if set(weights) != set(expected):
        raise WeightsError('the weights hold %s; expected the first layers in order, %s'
                           % (', '.join(sorted(weights)), ', '.join(expected)))
    channels = 3
    for name in expected:
        kernel = weights[name][0]
        if kernel.shape[2] != channels:
            raise WeightsError('layer %s: kernel has shape %s, expected %d input channels'
                               % (name, kernel.shape, channels))
        channels = kernel.shape[3]


def layers_needed(layer_names):
    """The conv layers whose weights the given layers of the dict depend on.

    layer_names: keys of the VGG dict (conv3_1, avgpool2, ...). Returns a prefix of
    VGG19_CONV_LAYERS. Reading only those skips conv5_2 ... conv5_4 (28 MB) for the course's
    layers.
    """
    deepest = max(VGG19_LAYERS.index(name[3:] if name.startswith('avgpool') else name)
                  for name in layer_names)
    return tuple(name for name in VGG19_CONV_LAYERS if VGG19_LAYERS.index(name) <= deepest)
