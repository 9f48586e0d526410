"""Winograd convolution F(4x4, 3x3) from TensorFlow ops: a 3x3 stride-1 SAME convolution with
4x fewer multiplications (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
2016).

The image is cut into 6x6 tiles that overlap by 2 (a 4x4 output tile each); each tile d and each
kernel g are taken to a 6x6 "Winograd domain", U = G g G^T and V = B^T d B; there the
convolution is an element-wise product summed over the input channels, i.e. 36 matmuls of
(tiles, C_in) by (C_in, C_out); and A^T M A takes each product back to a 4x4 output tile. The
36 matmuls do 36 / (16 * 9) = 1/4 of a direct convolution's multiplications; the transforms
are small matmuls over whole feature maps (the tiles' one axis at a time: two 6x6 matmuls
instead of one 36x36, and rows and columns gathered instead of 6x6 patches extracted).

On 2 AVX2 cores (AMD EPYC, oneDNN) at 38x50x512 a forward pass and its gradient took about 78
ms against 133 ms for oneDNN's best convolution; at 300x400x64 it is no faster (the transforms
are memory bound and the matmuls' inner size small): nst.tuning measures it beside the other
paths on the run's shapes, below the input's full resolution. Its results differ from a
direct convolution's by about 1e-5 of their largest value in float32 (the transforms'
factors, up to 8 and down to 1/24, cost a few bits), so it is for float32 only.

Nothing here depends on the rest of the package.
"""

import numpy as np

from nst.runtime import import_tf

TILE = 4  # output pixels per tile side
PATCH = TILE + 2  # input pixels per tile side (the 3x3 kernel's reach)

# F(4x4, 3x3) with the interpolation points 0, 1, -1, 2, -2 and infinity.
_BT = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], dtype=np.float64)
_G = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], dtype=np.float64)
_AT = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], dtype=np.float64)

# The output tiles' 2-D transform on flattened tiles: vec(P X Q^T) = (P kron Q) vec(X), rows
# first. (The input tiles' B^T d B and the kernels' G g G^T are computed one axis at a time.)
OUTPUT_TRANSFORM = np.kron(_AT, _AT).astype(np.float32)   # (16, 36): 6x6 -> 4x4 output tile


def kernel_transform(kernel, rotate=False, transposed=True):
    """U = G g G^T of each (input, output) channel pair of a (3, 3, C_in, C_out) kernel tensor,
    laid out as conv2d_same reads it: (36, C_out, C_in), or with transposed=False as the kernel
    is stored, (36, C_in, C_out) (no transpose of the kernel; conv2d_same(transposed=False)).

    rotate=True transforms the kernel rotated by 180 degrees (its taps reversed) for the input
    gradient, the convolution of C_out back to C_in channels: laid out (36, C_in, C_out), its
    own (36, C_out, C_in) (transposed is not asked of it).
    """
    k_height, k_width, channels_in, channels_out = kernel.get_shape().as_list()
    if (k_height, k_width) != (3, 3):
        raise ValueError('Winograd F(4x4, 3x3) needs a 3x3 kernel, not %dx%d'
                         % (k_height, k_width))
    if not rotate and transposed:
        # (3, 3, C_in, C_out) -> (3, 3, C_out, C_in): 3 ms at 512x512 channels, as long as
        # the transform's larger matmul
        kernel = _op('Transpose', kernel, [0, 1, 3, 2])
        channels_in, channels_out = channels_out, channels_in
    pairs = channels_in * channels_out
    # Reversing the taps of g is reversing G's columns: (G R) g (G R)^T.
    transform = (_constant('rotated_kernel_transform', _G[:, ::-1], kernel.dtype) if rotate
                 else _constant('kernel_transform', _G, kernel.dtype))  # (6, 3)
    # One axis at a time, as the input tiles (1.4-2.3x as fast as one (36, 9) matmul from 256
    # channels on, AVX2 EPYC): G on the rows, (3 ky, 3 kx * pairs) -> (6, 3 kx * pairs); then
    # G on the columns of each of the 6 rows, (6, 3 kx, pairs) -> (6, 6, pairs) -> (36, pairs)
    rows = _op('MatMul', transform, _op('Reshape', kernel, [3, 3 * pairs]))
    transformed = _op('BatchMatMulV2', transform, _op('Reshape', rows, [PATCH, 3, pairs]))
    return _op('Reshape', transformed, [PATCH * PATCH, channels_in, channels_out])


def conv2d_same(x, transformed, transposed=True):
    """conv2d(x, g, stride 1, SAME) given U = kernel_transform(g).

    x: (1, H, W, C_in) float32. transformed: (36, C_out, C_in) (kernel_transform(g), or
    kernel_transform(g, rotate=True) of a kernel g of C_out -> C_in channels, for its input
    gradient), or with transposed=False (36, C_in, C_out) (kernel_transform(g,
    transposed=False)). Returns (1, H, W, C_out).

    transposed: the 36 matmuls read U transposed, (tiles, C_in) @ (C_in, C_out) from U's
    (C_out, C_in). Which layout is faster depends on the CPU, so nst.tuning measures both for
    the forward pass (fast_ops' 'winograd' and 'winograd_stored'): on 2 AVX2 cores (Zen 3
    EPYC) oneDNN's batched matmul ran 20-25 % faster transposed at 512 output channels and
    under 1,000 tiles, as fast elsewhere, and with the kernel's transpose that takes a conv4
    forward pass took 5-20 % less (conv5 on the smallest maps 7-14 % more); on 2 AVX-512 cores
    (Zen 4 EPYC) every layer of a 400x300 run was 1-3 ms faster as stored, 21 ms a step
    (benchmarks/winograd_layout.py times the matmuls both ways on any CPU). The input
    gradient's U is transposed as computed.
    """
    _, height, width, channels_in = x.get_shape().as_list()
    channels_out = transformed.get_shape().as_list()[1 if transposed else 2]
    rows, cols = -(-height // TILE), -(-width // TILE)  # tiles down and across
    tiles = rows * cols
    # SAME pads one pixel before; the last tiles may reach past the far edge, padded too.
    # (1, H, W, C_in) -> (H', W', C_in), H' = 4 rows + 2, W' = 4 cols + 2
    padding = [[0, 0], [1, TILE * rows + 1 - height], [1, TILE * cols + 1 - width], [0, 0]]
    padded = _op('Reshape', _op('Pad', x, padding),
                 [TILE * rows + 2, TILE * cols + 2, channels_in])
    # V = B^T d B of every 6x6 tile d, one axis at a time (a third of the Kronecker form's
    # arithmetic): row i of the tiles in tile row r is the image's row 4r + i, gathered as
    # (6, rows, W', C_in), then B^T on the first axis: (6, rows * W' * C_in).
    transform = _constant('input_transform', _BT, x.dtype)  # B^T (6, 6)
    v = _op('GatherV2', padded, _tile_indices(rows), 0)
    v = _op('MatMul', transform,
            _op('Reshape', v, [PATCH, rows * (TILE * cols + 2) * channels_in]))
    # The same across: (6 rows, W', C_in) -> (6 rows, 6, cols, C_in)
    v = _op('GatherV2', _op('Reshape', v, [PATCH * rows, TILE * cols + 2, channels_in]),
            _tile_indices(cols), 1)
    # (6, rows, 6, cols * C_in) -> (6, 6, rows, cols * C_in) -> (6, 6, tiles * C_in), then B^T
    # on the second axis (one (6, 6) @ (6, tiles * C_in) matmul for each of the first)
    v = _op('Transpose', _op('Reshape', v, [PATCH, rows, PATCH, cols * channels_in]), [0, 2, 1, 3])
    v = _op('BatchMatMulV2', transform, _op('Reshape', v, [PATCH, PATCH, tiles * channels_in]))
    v = _op('Reshape', v, [PATCH * PATCH, tiles, channels_in])
    # The 36 products, each summed over C_in: (36, tiles, C_in) @ (36, C_out, C_in)^T, or
    # @ (36, C_in, C_out) as stored
    m = _op('BatchMatMulV2', v, transformed, adj_y=transposed)  # (36, tiles, C_out)
    # A^T M A: (36, tiles * C_out) -> (16, tiles * C_out) -> (4, 4, rows, cols, C_out)
    y = _op('MatMul', _constant('output_transform', OUTPUT_TRANSFORM, x.dtype),
            _op('Reshape', m, [PATCH * PATCH, tiles * channels_out]))
    y = _op('Reshape', y, [TILE, TILE, rows, cols, channels_out])
    # -> (rows, 4, cols, 4, C_out) -> (1, 4 rows, 4 cols, C_out), cut to (1, H, W, C_out)
    y = _op('Reshape', _op('Transpose', y, [2, 0, 3, 1, 4]),
            [1, TILE * rows, TILE * cols, channels_out])
    if (TILE * rows, TILE * cols) != (height, width):
        y = _op('Slice', y, [0, 0, 0, 0], [1, height, width, channels_out])
    return y


def _op(op_type, *inputs, **flags):
    """One op_type op of inputs in the default graph: tensors (or variables' values) as they
    are, shapes, permutations and axes as the graph's shared int32 constants (_int32), flags as
    its boolean attributes (adj_y=True); its types are inferred from its inputs. Returns its
    output.

    TensorFlow's functions (tf.reshape ...) take 0.45-0.6 ms of Python for each op they add
    to a graph, most of it checking their arguments; Graph.create_op 0.3 ms and the method
    behind it 0.2 ms. Building the Winograd layers of a 400x300 run both ways (22 calls of
    conv2d_same and as many kernel transforms, some 530 ops) took 300-425 ms through the
    functions, about 230 through create_op and 135-195 through the method (six runs each,
    AVX2 EPYC), against a later run's start-up of 2.5-2.8 s. The method is private, but it is
    TensorFlow's own way to it (its constants are made through it), in the release that
    requirements.txt pins.
    """
    tf = import_tf()
    inputs = [_int32(value) if isinstance(value, (list, int)) else tf.convert_to_tensor(value)
              for value in inputs]
    attrs = {name: tf.AttrValue(b=flag) for name, flag in flags.items()}
    graph = tf.get_default_graph()
    op = graph._create_op_internal(op_type, inputs, attrs=attrs or None)  # noqa: SLF001
    return op.outputs[0]


def _tile_indices(count):
    """(6, count) int32 constant: [i, t] = 4 t + i, the padded image's row (or column) i of
    tile t (one per graph and count)."""
    indices = np.arange(PATCH)[:, None] + TILE * np.arange(count)[None, :]
    return _constant('tile_indices_%d' % count, indices, 'int32')


def _int32(values):
    """The default graph's one int32 constant of values (a shape, a permutation, an axis, a
    padding), named by them. The layers of a block share their shapes, and a layer's gradient
    many of its forward pass's: at 400x300 the training graph's constants went from 675 of its
    1,759 ops to 307 (each cost TensorFlow's Python about 0.3 ms to build, and the graph
    optimisers, since turned off, their time to merge the copies)."""
    array = np.asarray(values, np.int32)
    name = 'ints_%s_%s' % ('x'.join(map(str, array.shape)), '_'.join(map(str, array.flat)))
    return _constant(name, array, 'int32')


def _constant(name, matrix, dtype):
    """The default graph's one constant of this name (a transform matrix, tile indices, a
    shape) in dtype, made on first use.

    Every layer and every gradient shares it: a constant each would add a few dozen ops to
    build, optimise and deduplicate at every start-up. It is made outside any name scope or
    control dependency (a layer's transform waits for its input; the constant needs not).
    """
    tf = import_tf()
    name = '%s_%s' % (name, tf.as_dtype(dtype).name)
    graph = tf.get_default_graph()
    try:
        return graph.get_tensor_by_name('winograd/%s:0' % name)
    except KeyError:
        with tf.control_dependencies(None), tf.name_scope('winograd/'):
            return tf.constant(np.require(matrix, requirements='C'), dtype, name=name)
