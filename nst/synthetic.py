"""Generate MatConvNet-layout VGG-19 .mat files for tests and benchmarks.

The real imagenet-vgg-verydeep-19.mat cannot be fetched on our machines, so the loader is tested
on files written here. They follow pretrained-model/README.md in every way a loader can see:

- MATLAB v5 file (scipy.io.savemat) with the top-level variables ``layers`` then ``meta``.
- ``layers`` is a 1x43 cell of 1x1 structs in the real order (conv1_1 ... pool5, fc6, relu6, fc7,
  relu7, fc8, prob); loadmat gives an object array of shape (1, 43) whose elements are (1, 1)
  struct arrays.
- Struct fields, in the real order:
    conv (also fc6/fc7/fc8, whose type is 'conv'): name, type, weights, size, pad, stride,
                                                   precious, dilate, opts
    relu:    name, type, leak, precious
    pool:    name, type, method ('max'), pool, stride, pad, precious, opts
    softmax: name, type, precious
  ``weights`` is a 1x2 cell {W, b}: W float32 (kh, kw, in, out), b float32 (out, 1). So the
  course's positional reads ``layers[0][i][0][0][2][0][0]`` (W), ``[2][0][1]`` (b) and
  ``[0][0]`` (name) work.
- ``meta.normalization`` {averageImage (3, 1) = the mean pixel, imageSize, border, keepAspect,
  interpolation, cropSize} and ``meta.classes`` {name, description} (one per fc8 output).

Channel widths: TINY_WIDTHS / TINY_FC_WIDTHS (the default, for fast tests) or REAL_WIDTHS /
REAL_FC_WIDTHS (the real shapes; the file is then about 575 MB with the fc layers, 80 MB without).
Weights are float32 normal with He scaling (std sqrt(2 / fan_in)) so activations stay finite
through the 16 conv layers; biases are small normal values. Everything is deterministic per seed.
``write_mat(folder, name='vgg.mat', **options)`` writes folder/name and returns the path.

Broken variants, for error tests:

- ``layout='old'``: the older MatConvNet release (top-level ``layers``, ``classes`` and
  ``normalization`` variables, conv fields ``filters``/``biases`` instead of ``weights``).
- ``omit_layers=True``: no ``layers`` variable (only ``meta``).
- ``layers_override``: a callable ``edit(layers) -> layers`` applied to the list of 1x1 struct
  arrays before writing (or a list used as is). Helpers that return edited copies:
  ``rename_layer``, ``remove_layer``, ``replace_kernel``, ``replace_field``, ``reorder_fields``,
  ``rename_field``. Example::

      write_vgg19_mat(p, layers_override=lambda ls: rename_layer(ls, 'conv3_2', 'conv3_x'))

- ``truncate_file(path, fraction)`` and ``write_html_page(path)`` damage/replace a file.

Importing this module only imports NumPy; SciPy is imported when a file is written.
"""

import os

import numpy as np

from nst.config import VGG19_LAYERS

# The 43 layers of the real file, in file order (tests/test_synthetic.py checks the files
# written against the documented table, tests/matconvnet.py, not against this one).
LAYER_NAMES = VGG19_LAYERS
# Number of conv layers in each of the five blocks.
BLOCK_DEPTHS = (2, 2, 4, 4, 4)

REAL_WIDTHS = (64, 128, 256, 512, 512)
REAL_FC_WIDTHS = (4096, 4096, 1000)
TINY_WIDTHS = (4, 8, 8, 16, 16)
TINY_FC_WIDTHS = (12, 12, 10)

MEAN_PIXEL = (123.68, 116.779, 103.939)

CONV_FIELDS = ('name', 'type', 'weights', 'size', 'pad', 'stride', 'precious', 'dilate', 'opts')
RELU_FIELDS = ('name', 'type', 'leak', 'precious')
POOL_FIELDS = ('name', 'type', 'method', 'pool', 'stride', 'pad', 'precious', 'opts')
SOFTMAX_FIELDS = ('name', 'type', 'precious')
OLD_CONV_FIELDS = ('name', 'type', 'filters', 'biases', 'pad', 'stride')
OLD_RELU_FIELDS = ('name', 'type')
OLD_POOL_FIELDS = ('name', 'type', 'method', 'pool', 'stride', 'pad')


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------

def kernel_shapes(widths=None, fc_widths=None, with_fc=True):
    """{layer name: W shape} for every conv (and fc, if with_fc) layer, in file order."""
    widths = tuple(widths or TINY_WIDTHS)
    fc_widths = tuple(fc_widths or (REAL_FC_WIDTHS if widths == REAL_WIDTHS else TINY_FC_WIDTHS))
    if len(widths) != 5 or len(fc_widths) != 3:
        raise ValueError('widths needs 5 entries and fc_widths 3')
    shapes = {}
    channels = 3
    for block, (depth, width) in enumerate(zip(BLOCK_DEPTHS, widths), start=1):
        for k in range(1, depth + 1):
            shapes['conv%d_%d' % (block, k)] = (3, 3, channels, width)
            channels = width
    if with_fc:
        f6, f7, f8 = fc_widths
        shapes['fc6'] = (7, 7, channels, f6)
        shapes['fc7'] = (1, 1, f6, f7)
        shapes['fc8'] = (1, 1, f7, f8)
    return shapes


def file_size_estimate(widths=None, fc_widths=None, with_fc=True):
    """Bytes of float32 weights and biases (the bulk of the file)."""
    total = 0
    for shape in kernel_shapes(widths, fc_widths, with_fc).values():
        total += 4 * (int(np.prod(shape)) + shape[3])
    return total


# ----------------------------------------------------------------------------------------------
# Structs and cells
# ----------------------------------------------------------------------------------------------

def make_struct(fields):
    """A (1, 1) struct array (savemat writes it as a MATLAB struct) with fields in dict order."""
    struct = np.empty((1, 1), dtype=[(name, object) for name in fields])
    for name, value in fields.items():
        struct[name][0, 0] = value
    return struct


def make_cell(items, shape=None):
    """A MATLAB cell (object array), by default of shape (1, len(items))."""
    items = list(items)
    cell = np.empty(shape or (1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell.flat[i] = item
    return cell


def _row(*values):
    return np.array([values], dtype=np.float64)


def _logical(value):
    return np.array([[bool(value)]])


def struct_fields(struct):
    """The fields of a (1, 1) struct array as an ordered dict."""
    return {name: struct[name][0, 0] for name in struct.dtype.names}


def _conv_layer(name, kernel, bias, pad, layout):
    kh, kw, cin, cout = kernel.shape
    if layout == 'old':
        return make_struct({
            'name': name, 'type': 'conv', 'filters': kernel, 'biases': bias.reshape(1, -1),
            'pad': _row(pad, pad, pad, pad), 'stride': _row(1, 1),
        })
    return make_struct({
        'name': name,
        'type': 'conv',
        'weights': make_cell([kernel, bias]),
        'size': _row(kh, kw, cin, cout),
        'pad': _row(pad, pad, pad, pad),
        'stride': _row(1, 1),
        'precious': _logical(False),
        'dilate': _row(1, 1),
        'opts': make_cell([], shape=(0, 0)),
    })


def _relu_layer(name, layout):
    if layout == 'old':
        return make_struct({'name': name, 'type': 'relu'})
    return make_struct({'name': name, 'type': 'relu', 'leak': _row(0),
                        'precious': _logical(False)})


def _pool_layer(name, layout):
    fields = {'name': name, 'type': 'pool', 'method': 'max', 'pool': _row(2, 2),
              'stride': _row(2, 2), 'pad': _row(0, 0, 0, 0)}
    if layout != 'old':
        fields['precious'] = _logical(False)
        fields['opts'] = make_cell([], shape=(0, 0))
    return make_struct(fields)


def _softmax_layer(name, layout):
    if layout == 'old':
        return make_struct({'name': name, 'type': 'softmax'})
    return make_struct({'name': name, 'type': 'softmax', 'precious': _logical(False)})


def random_kernel(rng, shape):
    """float32 normal with He scaling (std sqrt(2 / fan_in)), built without a float64 copy."""
    kernel = rng.standard_normal(shape, dtype=np.float32)
    kernel *= np.float32(np.sqrt(2.0 / (shape[0] * shape[1] * shape[2])))
    return kernel


def random_bias(rng, count):
    """float32 (count, 1), small normal values (std 0.05)."""
    bias = rng.standard_normal((count, 1), dtype=np.float32)
    bias *= np.float32(0.05)
    return bias


def build_layers(widths=None, seed=0, with_fc=True, fc_widths=None, layout='current'):
    """The list of 43 (or 37 without fc) (1, 1) layer structs, in file order.

    layout: 'current' (the documented release) or 'old' (filters/biases fields).
    """
    if layout not in ('current', 'old'):
        raise ValueError("layout must be 'current' or 'old', not %r" % (layout,))
    shapes = kernel_shapes(widths, fc_widths, with_fc)
    rng = np.random.default_rng(seed)
    names = LAYER_NAMES if with_fc else LAYER_NAMES[:37]
    layers = []
    for name in names:
        if name in shapes:
            shape = shapes[name]
            kernel = random_kernel(rng, shape)
            bias = random_bias(rng, shape[3])
            layers.append(_conv_layer(name, kernel, bias, 1 if shape[0] == 3 else 0, layout))
        elif name.startswith('relu'):
            layers.append(_relu_layer(name, layout))
        elif name.startswith('pool'):
            layers.append(_pool_layer(name, layout))
        else:
            layers.append(_softmax_layer(name, layout))
    return layers


def make_meta(num_classes):
    """The 'meta' struct: normalization and classes."""
    normalization = make_struct({
        'averageImage': np.array(MEAN_PIXEL, dtype=np.float32).reshape(3, 1),
        'imageSize': _row(224, 224, 3),
        'border': _row(32, 32),
        'keepAspect': _logical(True),
        'interpolation': 'bilinear',
        'cropSize': _row(0.875, 0.875),
    })
    classes = make_struct({
        'name': make_cell(['n%08d' % i for i in range(num_classes)]),
        'description': make_cell(['synthetic class %d' % i for i in range(num_classes)]),
    })
    return make_struct({'normalization': normalization, 'classes': classes})


def _old_top_level(num_classes):
    """The old release's extra top-level variables: normalization and classes."""
    normalization = make_struct({
        'averageImage': np.broadcast_to(np.array(MEAN_PIXEL, dtype=np.float32),
                                        (8, 8, 3)).copy(),
        'keepAspect': _logical(True),
        'border': _row(32, 32),
        'imageSize': _row(224, 224, 3),
        'interpolation': 'bilinear',
    })
    classes = make_struct({
        'name': make_cell(['n%08d' % i for i in range(num_classes)]),
        'description': make_cell(['synthetic class %d' % i for i in range(num_classes)]),
    })
    return {'classes': classes, 'normalization': normalization}


# ----------------------------------------------------------------------------------------------
# Editing helpers (each returns a new list; the structs it changes are copies)
# ----------------------------------------------------------------------------------------------

def layer_names(layers):
    return [str(np.asarray(struct['name'][0, 0]).reshape(-1)[0]) for struct in layers]


def layer_index(layers, name):
    return layer_names(layers).index(name)


def rename_layer(layers, old, new):
    """Rename the layer called old (its position stays)."""
    return replace_field(layers, old, 'name', new)


def remove_layer(layers, name):
    """Drop a layer: the cell gets one element shorter and later layers move up by one."""
    index = layer_index(layers, name)
    return list(layers[:index]) + list(layers[index + 1:])


def replace_field(layers, name, field, value):
    """Set one field of the named layer (the field is added at the end if missing)."""
    index = layer_index(layers, name)
    fields = struct_fields(layers[index])
    fields[field] = value
    edited = list(layers)
    edited[index] = make_struct(fields)
    return edited


def replace_kernel(layers, name, kernel=None, shape=None, bias=None, seed=1):
    """Give the named conv layer another kernel: the array given, or a random one of shape.

    The bias is kept unless given (so a changed output count also gives a bias mismatch).
    """
    if kernel is None:
        kernel = random_kernel(np.random.default_rng(seed), shape)
    index = layer_index(layers, name)
    _, old_bias = struct_fields(layers[index])['weights'].reshape(-1)
    return replace_field(layers, name, 'weights',
                         make_cell([kernel, old_bias if bias is None else bias]))


def reorder_fields(layers, order=None, names=None):
    """Reorder the struct fields of the named layers (all if names is None).

    order: a function (list of field names) -> reordered list; reversed by default.
    """
    order = order or (lambda fields: list(reversed(fields)))
    edited = []
    for struct in layers:
        fields = struct_fields(struct)
        if names is None or layer_names([struct])[0] in names:
            fields = {f: fields[f] for f in order(list(fields))}
        edited.append(make_struct(fields))
    return edited


def rename_field(layers, name, old, new):
    """Rename a struct field of the named layer, keeping its position."""
    index = layer_index(layers, name)
    fields = struct_fields(layers[index])
    edited = list(layers)
    edited[index] = make_struct({(new if f == old else f): v for f, v in fields.items()})
    return edited


def weights_by_name(layers):
    """{name: (W, b)} of the conv/fc layers as written (b as stored, (out, 1)).

    Reads fields by name; understands both 'weights' and the old 'filters'/'biases'.
    """
    result = {}
    for struct in layers:
        fields = struct_fields(struct)
        name = str(np.asarray(fields['name']).reshape(-1)[0])
        if 'weights' in fields and np.asarray(fields['weights']).size == 2:
            kernel, bias = fields['weights'].reshape(-1)
            result[name] = (kernel, bias)
        elif 'filters' in fields:
            result[name] = (fields['filters'], fields['biases'])
    return result


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------

def write_vgg19_mat(path, widths=None, seed=0, with_fc=True, fc_widths=None,
                    do_compression=False, layers_override=None, layout='current',
                    omit_layers=False):
    """Write a MatConvNet-layout VGG-19 file at path; return the list of layer structs written.

    widths: the 5 conv block widths (TINY_WIDTHS by default, REAL_WIDTHS for the real shapes).
    fc_widths: fc6/fc7/fc8 output widths (REAL_FC_WIDTHS with REAL_WIDTHS, else TINY_FC_WIDTHS).
    with_fc: False writes only the 37 conv/relu/pool layers (not the real layout: 1x37 cell).
    do_compression: passed to scipy.io.savemat (the real file is not compressed).
    layers_override: a callable edit(layers) -> layers (see the editing helpers), or a list.
    layout: 'current' (documented) or 'old' (old release: top-level normalization and classes,
            conv fields filters/biases).
    omit_layers: leave out the 'layers' variable.
    Use weights_by_name(returned list) for the arrays written (they stay in memory until the
    list is dropped: about 575 MB for the real widths).
    """
    import scipy.io

    layers = build_layers(widths, seed, with_fc, fc_widths, layout)
    if layers_override is not None:
        layers = list(layers_override(layers) if callable(layers_override) else layers_override)
    num_classes = kernel_shapes(widths, fc_widths, True)['fc8'][3]
    contents = {}
    if not omit_layers:
        contents['layers'] = make_cell(layers)
    if layout == 'old':
        contents.update(_old_top_level(num_classes))
    else:
        contents['meta'] = make_meta(num_classes)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    scipy.io.savemat(path, contents, do_compression=do_compression, oned_as='column')
    return layers


def write_mat(folder, name='vgg.mat', **options):
    """write_vgg19_mat(folder / name, **options); return that path as a str."""
    path = str(folder / name)
    write_vgg19_mat(path, **options)
    return path


def truncate_file(path, fraction=0.5):
    """Cut the file at path to that fraction of its size (rounded down)."""
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.truncate(int(size * fraction))


def write_html_page(path):
    """What a failed download may leave: an HTML error page with the .mat name."""
    with open(path, 'w') as f:
        f.write('<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n'
                '<body><h1>Not Found</h1><p>The requested URL was not found.</p></body></html>\n')
