"""The course's VGG-19 graph (tf.compat.v1) built layer by layer from read weights.

nst_utils.load_vgg_model writes the graph out as the course's layer table, one VGGBuilder call
a layer; build_vgg_graph builds the same graph from in-memory weights in a loop over the table.
"""

import threading

import numpy as np

from nst import fast_ops
from nst.config import COLOR_CHANNELS, IMAGE_HEIGHT, IMAGE_WIDTH, VGG19_LAYERS
from nst.runtime import import_tf
from nst.weights import check_vgg_weights

VGG_WEIGHTS_COLLECTION = 'vgg_weights'


class VGGBuilder:
    """Builds the course's VGG graph one layer at a time in the default tf.compat.v1 graph.

    weights: {name: (W, b)} from nst.weights.read_vgg_weights (conv1_1 up to some layer).
    pooling: 'avg' as the course, or 'max', the network's own (same keys, avgpool1 ...).
    precision='bfloat16' runs the convolutions and pools in bfloat16; the tensors handed out are
    still float32, so the costs built on them stay in float32.
    paths: a fast_ops.Paths (nst.tuning chooses one per machine); None: the defaults.

    With a session (sess, or the default session of this graph, as in the notebook) the weights
    are variables loaded into it once (finish), kept out of GLOBAL_VARIABLES so that
    global_variables_initializer() leaves them alone. Constants, as the course uses without a
    session, would be copied into every executor the session builds: a style-transfer run
    builds three (content, style, training), which costs about 80 MB each at full width.
    Every layer's weights are made when the builder is, and the session run that loads them
    starts then, in a thread of its own: it copies the weights into TensorFlow's memory (80 MB
    at full width, about 0.1 s) while Python builds the layers, and finish waits for it.
    A layer whose weights were not read gives None, and so does every layer after it.
    """

    def __init__(self, weights, image_height=None, image_width=None, pooling='avg',
                 precision='float32', sess=None, paths=None):
        tf = self.tf = import_tf()
        if pooling not in ('avg', 'max'):
            raise ValueError("pooling must be 'avg' or 'max', not %r" % (pooling,))
        if precision not in ('float32', 'bfloat16'):
            raise ValueError("precision must be 'float32' or 'bfloat16', not %r" % (precision,))
        check_vgg_weights(weights)
        self.weights = weights
        self.height = image_height or IMAGE_HEIGHT
        self.width = image_width or IMAGE_WIDTH
        self.pooling = pooling
        self.paths = paths or fast_ops.Paths()
        self.dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32
        if sess is None:
            sess = tf.get_default_session()
        self.sess = sess if sess is not None and sess.graph is tf.get_default_graph() else None
        self._to_load = {}   # placeholder of an initial value -> array, fed in one session run
        self._loaded = []    # variables initialised from _to_load, or computed from it
        self._computed = {}  # tensor handed out -> the same in the compute dtype
        # conv layer -> (its name scope, kernel, bias, rotated kernel or None, its path), the
        # weights as the graph reads them, made now so that they load while the layers are built
        self._layer_weights = {name: self._make_weights(name, kernel, bias)
                               for name, (kernel, bias) in weights.items()}
        self._loading = None
        if self._to_load:
            self._loading = _SessionRun(self.sess, [v.initializer for v in self._loaded],
                                        self._to_load)

    def input(self):
        """The generated image: a (1, height, width, 3) float32 tf.Variable."""
        tf = self.tf
        image = tf.Variable(np.zeros((1, self.height, self.width, COLOR_CHANNELS)),
                            dtype='float32', name='input')
        self._computed[image] = tf.cast(image, self.dtype)
        return image

    def conv2d_relu(self, previous, name):
        """relu(conv2d(previous, W, stride 1, SAME) + b) with the named layer's weights."""
        if previous is None or name not in self.weights:
            return None
        tf = self.tf
        scope, kernel, bias, rotated, (forward, input_gradient) = self._layer_weights[name]
        with tf.name_scope(scope):
            conv = fast_ops.conv2d_same(self._computed[previous], kernel, rotated, forward,
                                        input_gradient)
            # bias_add, not +: its gradient is one op (an add's, for the bias nobody trains,
            # builds five and costs the Python 2-3 ms a layer), and it ran 8 against 10-11 ms
            # a step at 400x300 (AVX2 EPYC). oneDNN's graph pass fuses conv1_1 with it.
            return self._hand_out(tf.nn.relu(tf.nn.bias_add(conv, bias)))

    def pool(self, previous, name):
        """2x2 stride-2 SAME pooling (average as the course, or max)."""
        if previous is None:
            return None
        x = self._computed[previous]
        if self.pooling == 'avg':
            return self._hand_out(fast_ops.avg_pool_2x2(x, name, self.paths.pool_gradient))
        return self._hand_out(fast_ops.max_pool_2x2(x, name))

    def finish(self, graph):
        """Wait for the weights to be loaded into the session (raising what stopped the run);
        return graph without the layers not built."""
        if self._loading is not None:
            self._loading.wait()
            self._loading = None
            self._to_load = {}
        return {key: tensor for key, tensor in graph.items() if tensor is not None}

    def _make_weights(self, name, kernel, bias):
        """(name scope, kernel, bias, rotated kernel or None, (forward, input_gradient)) of a
        conv layer, as the graph reads them: variables to load into the session, or constants
        without one; and the path its convolution takes."""
        tf = self.tf
        path = self.paths.conv_path(name, kernel.shape[2])  # (forward, input_gradient)
        with tf.name_scope(name) as scope:
            kernel, bias = self._weight(kernel, 'W'), self._weight(bias, 'b')
            rotated = None
            if path[0] == 'transposed' and self.sess is not None:
                # Stored, rotated in the session from the fed kernel (no second copy in NumPy,
                # and loaded in the same run); with constants, TensorFlow's default session
                # settings fold the rotation.
                rotated = tf.Variable(fast_ops.rotate_kernel(kernel.initial_value),
                                      trainable=False, collections=[VGG_WEIGHTS_COLLECTION],
                                      name='W_rotated')
                self._loaded.append(rotated)
        return scope, kernel, bias, rotated, path

    def _weight(self, value, name):
        tf = self.tf
        value = value.astype(self.dtype.as_numpy_dtype, copy=False)
        if self.sess is None:
            return tf.constant(value, name=name)
        # The MAT reader's kernels are column-major (MATLAB's order); fed as they are,
        # TensorFlow copies them element by element. Their transpose is a row-major view: fed
        # as it is and transposed back in the session, the weights of a run load in 0.12-0.13
        # instead of 0.21-0.30 s (80 MB at full width, AVX2 EPYC).
        column_major = value.flags.f_contiguous and not value.flags.c_contiguous
        fed = value.T if column_major else value  # (C_out, C_in, kh, kw): a view, no copy
        initial = tf.placeholder(self.dtype, fed.shape, name=name + '_feed')
        variable = tf.Variable(tf.transpose(initial) if column_major else initial,
                               trainable=False, collections=[VGG_WEIGHTS_COLLECTION], name=name)
        self._to_load[initial] = fed
        self._loaded.append(variable)
        return variable

    def _hand_out(self, tensor):
        # The costs read float32; the cast runs only for the layers a cost uses.
        tf = self.tf
        exposed = tensor if tensor.dtype == tf.float32 else tf.cast(tensor, tf.float32)
        self._computed[exposed] = tensor
        return exposed


class _SessionRun:
    """sess.run(fetches, feed_dict) in a thread of its own, started at once; wait() joins it
    and raises what the run raised. TensorFlow releases the GIL while it runs, and op creation
    in the meantime is safe (the graph locks itself while a run reads it)."""

    def __init__(self, sess, fetches, feed_dict):
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(sess, fetches, feed_dict),
                                        name='nst-load-weights')
        self._thread.start()

    def _run(self, sess, fetches, feed_dict):
        try:
            sess.run(fetches, feed_dict=feed_dict)
        except BaseException as error:  # re-raised in the builder's thread by wait()
            self._error = error

    def wait(self):
        self._thread.join()
        if self._error is not None:
            raise self._error


def build_vgg_graph(weights, image_height=None, image_width=None, pooling='avg',
                    precision='float32', sess=None, paths=None):
    """The course's VGG dict from in-memory weights (see VGGBuilder): 'input', conv1_1 ...
    conv5_4 and avgpool1 ... avgpool5, as far as the weights go."""
    net = VGGBuilder(weights, image_height, image_width, pooling, precision, sess, paths)
    graph = {'input': net.input()}
    previous = graph['input']
    for name in VGG19_LAYERS[:37]:
        if name.startswith('conv'):
            previous = graph[name] = net.conv2d_relu(previous, name)
        elif name.startswith('pool'):
            previous = graph['avg' + name] = net.pool(previous, 'avg' + name)
    return net.finish(graph)
