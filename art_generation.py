"""Art Generation with Neural Style Transfer (Gatys et al., 2015), the deeplearning.ai assignment.

A generated image G is optimised so that its VGG-19 activations keep the content of image C and
the Gram matrices (the style) of image S. Read top to bottom:

1. the costs (the graded functions: pure, no globals, no sess.run),
2. building the style-transfer graph,
3. the optimisation loop (Adam as in the course, or L-BFGS-B) with progress and Ctrl-C,
4. the command line: `python art_generation.py` runs the notebook's whole flow.

Importing this module is cheap: TensorFlow is imported when a graph is first built.
"""

import argparse
import math
import os
import signal
import sys
from typing import NamedTuple

import numpy as np

import nst_utils
from nst_utils import CONFIG, NSTError

# The course's style layers and their weights (they sum to 1).
STYLE_LAYERS = [
    ('conv1_1', 0.2),
    ('conv2_1', 0.2),
    ('conv3_1', 0.2),
    ('conv4_1', 0.2),
    ('conv5_1', 0.2)]
CONTENT_LAYER = 'conv4_2'


# ----------------------------------------------------------------------------------------------
# 1. Costs
# ----------------------------------------------------------------------------------------------

def compute_content_cost(a_C, a_G):
    """Content cost: how far G's activations are from C's at one layer.

    a_C: (1, n_H, n_W, n_C) activations of the content image (tensor or array).
    a_G: (1, n_H, n_W, n_C) tensor, activations of the generated image.
    Returns a scalar tensor: sum((a_C - a_G)^2) / (4 n_H n_W n_C).
    """
    import tensorflow.compat.v1 as tf

    m, n_H, n_W, n_C = a_G.get_shape().as_list()
    a_C = tf.cast(a_C, a_G.dtype)
    return tf.reduce_sum(tf.square(a_C - a_G)) / (4.0 * n_H * n_W * n_C)


def gram_matrix(A):
    """Gram matrix of A.

    A: (n_C, n_H * n_W) tensor, the unrolled activations, one row a channel.
    Returns (n_C, n_C): A A^T, the correlations between channels.
    """
    import tensorflow.compat.v1 as tf

    # The transpose is a matmul flag, not a materialised copy.
    return tf.matmul(A, A, transpose_b=True)


def unrolled_gram(activations):
    """Gram matrix straight from (1, n_H, n_W, n_C) activations; returns (n_C, n_C).

    Equal to gram_matrix(transpose(reshape(a, [n_H * n_W, n_C]))), as the course computes it,
    without materialising the transpose.
    """
    import tensorflow.compat.v1 as tf

    m, n_H, n_W, n_C = activations.get_shape().as_list()
    unrolled = tf.reshape(activations, [n_H * n_W, n_C])  # (1, n_H, n_W, n_C) -> (n_H*n_W, n_C)
    return tf.matmul(unrolled, unrolled, transpose_a=True)


def layer_style_cost_from_gram(GS, a_G):
    """Style cost of one layer given the style image's Gram matrix.

    GS: (n_C, n_C) Gram matrix of the style activations (tensor or array).
    a_G: (1, n_H, n_W, n_C) tensor, activations of the generated image.
    Returns a scalar tensor: sum((GS - GG)^2) / (4 n_C^2 (n_H n_W)^2).
    """
    import tensorflow.compat.v1 as tf

    m, n_H, n_W, n_C = a_G.get_shape().as_list()
    GS = tf.cast(GS, a_G.dtype)
    # The constant in floating point: as an int32 product it overflows on real layers
    # (conv1_1 at 300x400: 4 * 64^2 * 120000^2 ~ 2.4e14).
    denominator = 4.0 * n_C ** 2 * float(n_H * n_W) ** 2

    # With R = GS - A^T A, dJ/dA = -2 A (R + R^T) / denominator = -4 A R / denominator, as R is
    # symmetric (both Grams are): one matmul, with the scalars applied to the small R rather
    # than to the (n_H*n_W, n_C) result. Autodiff would add a transpose and several passes.
    @tf.custom_gradient
    def cost(unrolled):
        residual = GS - tf.matmul(unrolled, unrolled, transpose_a=True)  # (n_C, n_C)

        def gradient(d_cost):
            return tf.matmul(unrolled, residual * (-4.0 * d_cost / denominator))

        return tf.reduce_sum(tf.square(residual)) / denominator, gradient

    return cost(tf.reshape(a_G, [n_H * n_W, n_C]))  # (1, n_H, n_W, n_C) -> (n_H*n_W, n_C)


def compute_layer_style_cost(a_S, a_G):
    """Style cost of one layer.

    a_S: (1, n_H, n_W, n_C) activations of the style image (tensor or array).
    a_G: (1, n_H, n_W, n_C) tensor, activations of the generated image.
    Returns a scalar tensor: sum((G_S - G_G)^2) / (4 n_C^2 (n_H n_W)^2), with G the Gram
    matrices of the (n_C, n_H n_W) unrolled activations.
    """
    import tensorflow.compat.v1 as tf

    a_S = tf.cast(a_S, a_G.dtype)
    return layer_style_cost_from_gram(unrolled_gram(a_S), a_G)


def style_cost_from_grams(model, style_grams, style_layers):
    """Weighted sum of the layer style costs.

    model: the VGG dict; style_grams: {layer: (n_C, n_C) Gram of the style at that layer};
    style_layers: [(layer, coefficient), ...]. Returns a scalar tensor.
    """
    J_style = 0
    for layer_name, coeff in style_layers:
        J_style += coeff * layer_style_cost_from_gram(style_grams[layer_name], model[layer_name])
    return J_style


def compute_style_cost(model, STYLE_LAYERS, sess=None):
    """The course's overall style cost over several layers.

    The style image must be the model's current input: its activations at every layer are
    evaluated once, in one session run (sess, or the default session).
    """
    import tensorflow.compat.v1 as tf

    sess = sess or tf.get_default_session()
    grams = sess.run({name: unrolled_gram(model[name]) for name, _ in STYLE_LAYERS})
    return style_cost_from_grams(model, grams, STYLE_LAYERS)


def total_cost(J_content, J_style, alpha=10, beta=40):
    """J = alpha * J_content + beta * J_style."""
    return alpha * J_content + beta * J_style


def total_variation_cost(image):
    """Squared total variation: the sum of squared differences between neighbouring pixels.

    image: (1, n_H, n_W, 3) tensor. A small weight of it smooths high-frequency noise
    (Mahendran and Vedaldi, 2015, with beta = 2).
    """
    import tensorflow.compat.v1 as tf

    down = image[:, 1:, :, :] - image[:, :-1, :, :]   # (1, n_H - 1, n_W, 3)
    right = image[:, :, 1:, :] - image[:, :, :-1, :]  # (1, n_H, n_W - 1, 3)
    return tf.reduce_sum(tf.square(down)) + tf.reduce_sum(tf.square(right))


# ----------------------------------------------------------------------------------------------
# 2. The style-transfer graph
# ----------------------------------------------------------------------------------------------

class StyleTransfer(NamedTuple):
    """What the optimisation loop needs of a built graph."""
    model: dict
    J: object             # scalar tensors ...
    J_content: object
    J_style: object
    train_step: object    # the Adam update op
    stepped_input: object  # the input read after train_step: fetching it runs one step
    gradient: object      # dJ/d(input), for L-BFGS
    input_feed: object    # placeholder (1, H, W, 3) ...
    assign_input: object  # ... and the op that assigns it to model['input']
    initializer: object   # initialises the input and Adam's moments

    def set_input(self, sess, image):
        """Make image (1, H, W, 3) the model's input."""
        sess.run(self.assign_input, {self.input_feed: image})


def read_weights(path, content_layer=CONTENT_LAYER, style_layers=STYLE_LAYERS):
    """The VGG weights a run with these layers needs, and no more (nst_utils.layers_needed):
    conv1_1 ... conv5_1 for the course's layers."""
    needed = nst_utils.layers_needed([content_layer] + [name for name, _ in style_layers])
    return nst_utils.read_vgg_weights(path, layers=needed)


def build_style_transfer(sess, weights, content_image, style_images, *, blend_weights=None,
                         content_layer=CONTENT_LAYER, style_layers=STYLE_LAYERS, alpha=10,
                         beta=40, tv_weight=0.0, learning_rate=2.0, pooling='avg',
                         precision='float32'):
    """Build the VGG graph and the costs of the course's flow in sess.graph.

    content_image, style_images[k]: (1, H, W, 3) mean-subtracted, all of one size.
    blend_weights: one per style, summing to 1 (default: equal). Blending the styles' Gram
    matrices is the same, up to a constant, as weighting each style's cost, and cheaper.
    """
    tf = nst_utils.import_tf()

    _, height, width, _ = content_image.shape
    model = nst_utils.build_vgg_graph(weights, height, width, pooling, precision, sess=sess)
    if blend_weights is None:
        blend_weights = [1.0 / len(style_images)] * len(style_images)

    # One assign op fed through a placeholder: the graph does not change once it has run.
    input_feed = tf.placeholder(tf.float32, model['input'].shape, name='input_feed')
    assign_input = model['input'].assign(input_feed)

    # Content: the activations of C at the content layer are a constant of the cost.
    sess.run(assign_input, {input_feed: content_image})
    a_C = sess.run(model[content_layer])
    J_content = compute_content_cost(a_C, model[content_layer])

    # Style: the (blended) Gram matrices of S at each layer, one session run per style.
    gram_tensors = {name: unrolled_gram(model[name]) for name, _ in style_layers}
    style_grams = {name: 0.0 for name in gram_tensors}
    for style_image, weight in zip(style_images, blend_weights):
        sess.run(assign_input, {input_feed: style_image})
        for name, gram in sess.run(gram_tensors).items():
            style_grams[name] = style_grams[name] + weight * gram
    J_style = style_cost_from_grams(model, style_grams, style_layers)

    J = total_cost(J_content, J_style, alpha=alpha, beta=beta)
    if tv_weight:
        J = J + tv_weight * total_variation_cost(model['input'])
    optimizer = tf.train.AdamOptimizer(learning_rate)
    # minimize() in two halves, so that L-BFGS can use the same gradient tensor.
    [(gradient, _)] = optimizer.compute_gradients(J, var_list=[model['input']])
    train_step = optimizer.apply_gradients([(gradient, model['input'])])
    with tf.control_dependencies([train_step]):
        stepped_input = tf.identity(model['input'])
    # A list of the initializers, not tf.global_variables_initializer(): its group op would
    # mark input/Assign, which the session has already seen, and TF warns of such changes.
    initializer = [variable.initializer for variable in tf.global_variables()]
    nst = StyleTransfer(model, J, J_content, J_style, train_step, stepped_input, gradient,
                        input_feed, assign_input, initializer)
    # model_nn(sess, input_image) finds the graph here, as the notebook finds its globals.
    tf.add_to_collection('style_transfer', nst)
    return nst


# ----------------------------------------------------------------------------------------------
# 3. Optimisation
# ----------------------------------------------------------------------------------------------

def session_config():
    """The session settings of a style-transfer run.

    One op at a time (inter-op threads 1), each on all cores: the graph is a chain of large
    convolutions, and two running side by side only compete for the same cores (measured 4 %
    faster per iteration at 400x300 on 2 cores than TensorFlow's default).
    """
    tf = nst_utils.import_tf()
    return tf.ConfigProto(inter_op_parallelism_threads=1)


class RunResult(NamedTuple):
    image: np.ndarray       # (1, H, W, 3) the latest finite image, mean-subtracted
    history: list           # [(iteration, total, content, style), ...]
    interrupted: bool       # stopped by Ctrl-C
    diverged: bool          # stopped on a non-finite cost
    iterations: int         # iterations completed


class StopRequest:
    """Turns Ctrl-C (SIGINT) into a request to stop at the end of the current iteration."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def optimise(sess, nst, input_image, num_iterations, *, optimizer='adam', output_dir=None,
             save_every=20, print_every=20, progress=True, postprocess=None, stop=None):
    """Minimise nst.J from input_image; print and save as the course does.

    Every print_every iterations prints the course's `Iteration i :` block; every save_every
    iterations saves output_dir/i.png; at the end saves output_dir/generated_image.jpg.
    postprocess maps (H, W, 3) uint8 pixels before saving (colour preservation).
    Returns a RunResult. A non-finite cost stops the run and keeps the last finite image.
    """
    output_dir = output_dir or CONFIG.OUTPUT_DIR
    os.makedirs(output_dir, exist_ok=True)
    stop = stop or StopRequest()
    state = _LoopState(sess, nst, output_dir, save_every, print_every, postprocess,
                       num_iterations, progress)
    sess.run(nst.initializer)
    nst.set_input(sess, input_image)
    state.last_image = np.asarray(input_image, dtype=np.float32)
    with stop:
        try:
            if optimizer == 'adam':
                _run_adam(state, stop)
            elif optimizer == 'lbfgs':
                _run_lbfgs(state, stop)
            else:
                raise ValueError('optimizer must be adam or lbfgs, not %r' % (optimizer,))
        finally:
            state.bar.close()
    state.save(os.path.join(output_dir, 'generated_image.jpg'), state.last_image)
    return RunResult(state.last_image, state.history, stop.requested, state.diverged,
                     state.completed)


class _LoopState:
    """Bookkeeping shared by both optimisers: costs, printing, saving, the progress bar."""

    def __init__(self, sess, nst, output_dir, save_every, print_every, postprocess,
                 num_iterations, progress):
        from tqdm import tqdm

        self.sess, self.nst, self.output_dir = sess, nst, output_dir
        self.save_every, self.print_every, self.postprocess = save_every, print_every, postprocess
        self.history = []
        self.completed = 0
        self.diverged = False
        self.last_image = None
        self.previous_image = None  # the last image before last_image
        self.bar = tqdm(total=num_iterations, unit='it', disable=not progress, file=sys.stderr,
                        dynamic_ncols=True, bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt} '
                        '[{elapsed}<{remaining}, {rate_fmt}{postfix}]')

    def costs(self):
        return self.sess.run([self.nst.J, self.nst.J_content, self.nst.J_style])

    def after_iteration(self, i, image, costs):
        """Record iteration i whose result is image; costs are (J, J_content, J_style)
        of some recent image, used for the history and the progress bar."""
        if not all(math.isfinite(c) for c in costs) or not np.all(np.isfinite(image)):
            self.diverged = True
            self._keep_last_finite()
            return False
        self.previous_image = self.last_image
        self.last_image = image
        self.completed = i + 1
        self.history.append((i,) + tuple(float(c) for c in costs))
        self.bar.set_postfix_str('J=%.3g content=%.3g style=%.3g' % tuple(costs), refresh=False)
        self.bar.update(1)
        if self.print_every and i % self.print_every == 0:
            # The course's lines, with the costs of the image after iteration i.
            Jt, Jc, Js = self.costs()
            self.bar.write('Iteration ' + str(i) + ' :\ntotal cost = ' + str(Jt)
                           + '\ncontent cost = ' + str(Jc) + '\nstyle cost = ' + str(Js),
                           file=sys.stdout)
            sys.stdout.flush()  # visible at once when piped (block-buffered), as print in Jupyter
        if self.save_every and i % self.save_every == 0:
            self.save(os.path.join(self.output_dir, str(i) + '.png'), image)
        return True

    def _keep_last_finite(self):
        """On divergence, make last_image the last image whose cost is finite.

        The non-finite costs may be those of last_image itself (Adam fetches the costs of the
        image before its step), so its cost is evaluated; if it is not finite, the image before
        it (whose costs were finite) is kept instead.
        """
        if self.last_image is None or self.previous_image is None:
            return
        self.nst.set_input(self.sess, self.last_image)
        if not all(math.isfinite(c) for c in self.costs()):
            self.last_image = self.previous_image
            self.completed -= 1

    def save(self, path, image):
        pixels = nst_utils.to_pixels(image)
        if self.postprocess is not None:
            pixels = self.postprocess(pixels)
        nst_utils.save_pixels(path, pixels)


def _run_adam(state, stop):
    nst, sess = state.nst, state.sess
    # One session run per iteration: the step, the image after it, and the costs of the image
    # before it (free: the step computes them anyway).
    fetches = [nst.stepped_input, nst.J, nst.J_content, nst.J_style]
    for i in range(state.bar.total):
        image, Jt, Jc, Js = sess.run(fetches)
        if not state.after_iteration(i, image, (Jt, Jc, Js)) or stop.requested:
            break


def _run_lbfgs(state, stop):
    """L-BFGS-B through scipy on the session's cost and gradient.

    The box constraints keep every pixel in the valid range [0, 255] (minus the mean), so the
    result needs no clipping.
    """
    import scipy.optimize

    nst, sess = state.nst, state.sess
    variable = nst.model['input']
    shape = variable.get_shape().as_list()
    means = np.broadcast_to(CONFIG.MEANS, shape)
    bounds = scipy.optimize.Bounds((0.0 - means).ravel(), (255.0 - means).ravel())
    latest = {}

    def cost_and_gradient(x):
        nst.set_input(sess, x.reshape(shape).astype(np.float32))
        J, Jc, Js, grad = sess.run([nst.J, nst.J_content, nst.J_style, nst.gradient])
        latest['costs'] = (J, Jc, Js)
        return float(J), grad.ravel().astype(np.float64)

    def callback(intermediate_result):
        i = state.completed
        image = intermediate_result.x.reshape(shape).astype(np.float32)
        nst.set_input(sess, image)
        if not state.after_iteration(i, image, latest['costs']) or stop.requested:
            raise StopIteration
        if state.completed >= state.bar.total:
            raise StopIteration

    x0 = np.clip(sess.run(variable), bounds.lb.reshape(shape), bounds.ub.reshape(shape))
    scipy.optimize.minimize(cost_and_gradient, x0.ravel().astype(np.float64), jac=True,
                            method='L-BFGS-B', bounds=bounds, callback=callback,
                            options={'maxiter': state.bar.total, 'maxfun': 4 * state.bar.total})


def model_nn(sess, input_image, num_iterations=200, nst=None, output_dir=None):
    """The course's training loop: Adam steps on the input, prints and saves every 20.

    nst: the graph from build_style_transfer (default: the last one built in sess.graph).
    Returns the generated image, (1, H, W, 3) mean-subtracted.
    """
    if nst is None:
        built = sess.graph.get_collection('style_transfer')
        if not built:
            raise ValueError('model_nn: no style-transfer graph in this session; '
                             'call build_style_transfer first')
        nst = built[-1]
    result = optimise(sess, nst, input_image, num_iterations, output_dir=output_dir,
                      progress=False)
    return result.image


# ----------------------------------------------------------------------------------------------
# 4. Command line
# ----------------------------------------------------------------------------------------------

EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class UsageError(NSTError):
    """Bad options or input: exit code 2."""


def _number(kind, minimum=None, strictly=False, name=None):
    """An argparse type: a finite number of kind (int or float) above a minimum."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not %s' % (
                text, 'a whole number' if kind is int else 'a number')) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError('%r is not finite' % text)
        if kind is float and abs(value) > _FLOAT32_MAX:  # the graph computes in float32
            raise argparse.ArgumentTypeError('%r is too large (float32 holds up to %.4g)'
                                             % (text, _FLOAT32_MAX))
        if minimum is not None and (value <= minimum if strictly else value < minimum):
            raise argparse.ArgumentTypeError('%r must be %s %s' % (
                text, 'greater than' if strictly else 'at least', minimum))
        return value
    parse.__name__ = name or kind.__name__
    return parse


positive_int = _number(int, 0, strictly=True, name='positive whole number')
non_negative_int = _number(int, 0, name='whole number')
positive_float = _number(float, 0.0, strictly=True, name='positive number')
non_negative_float = _number(float, 0.0, name='non-negative number')


def parse_style_layers(text):
    """'conv1_1:0.2,conv2_1:0.2' -> [('conv1_1', 0.2), ('conv2_1', 0.2)]."""
    layers = []
    for item in text.split(','):
        name, sep, weight = item.strip().partition(':')
        if name not in _LAYER_KEYS:
            raise argparse.ArgumentTypeError('unknown layer %r (one of %s)'
                                             % (name, ', '.join(_LAYER_KEYS)))
        try:
            value = float(weight) if sep else None
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError('%r needs a weight: layer:weight with a '
                                             'non-negative number' % item.strip())
        layers.append((name, value))
    if not any(weight > 0 for _, weight in layers):
        raise argparse.ArgumentTypeError('no style layer has a positive weight')
    return layers


def parse_layer(text):
    if text not in _LAYER_KEYS:
        raise argparse.ArgumentTypeError('unknown layer %r (one of %s)'
                                         % (text, ', '.join(_LAYER_KEYS)))
    return text


_LAYER_KEYS = nst_utils.VGG19_CONV_LAYERS + tuple('avg' + p for p in nst_utils.VGG19_POOL_LAYERS)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line on stderr and exit code 2 (argparse would print the usage first)."""
        self.exit(EXIT_USAGE, '%s: error: %s (see --help)\n' % (self.prog, message))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: a help text that already says its default (in words,
    e.g. 'default: equal') is not followed by a second, raw '(default: None)'."""

    def _get_help_string(self, action):
        if '(default:' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    parser = _Parser(
        prog='art_generation.py',
        description='Neural style transfer (Gatys et al.) with VGG-19, as in the deeplearning.ai '
                    'assignment. With no options: the course run on the default images.',
        formatter_class=_HelpFormatter)
    images = parser.add_argument_group('images')
    images.add_argument('--content', default=CONFIG.CONTENT_IMAGE, metavar='PATH',
                        help='content photo')
    images.add_argument('--style', nargs='+', default=[CONFIG.STYLE_IMAGE], metavar='PATH',
                        help='one or more style images, scaled and centre-cropped to the '
                             'size of the result')
    images.add_argument('--style-blend-weights', nargs='+', type=non_negative_float,
                        metavar='W', help='one weight per style image, normalised to sum to 1 '
                        '(default: equal). The result is pulled toward the weighted average '
                        "of the styles' Gram matrices, the same as weighting each style's cost")
    images.add_argument('--initial', metavar='PATH',
                        help='start from this image (resized to the result) instead of noise '
                             'blended with the content')
    images.add_argument('--width', type=positive_int, default=CONFIG.IMAGE_WIDTH,
                        help='width of the result in pixels; the height follows the content '
                             "image's aspect ratio")
    images.add_argument('--output-dir', default=CONFIG.OUTPUT_DIR, metavar='DIR',
                        help='where i.png, generated_image.jpg, costs.png and summary.png go')

    model = parser.add_argument_group('model')
    model.add_argument('--model', default=CONFIG.VGG_MODEL, metavar='PATH',
                       help='MatConvNet imagenet-vgg-verydeep-19.mat (downloaded if missing, '
                            'from the environment variable NST_VGG_URL if set, else %s; '
                            'checked by SHA-256 either way)' % nst_utils.VGG_URL.replace('%', '%%'))
    model.add_argument('--no-download', action='store_true',
                       help='stop with a message instead of downloading missing weights')
    model.add_argument('--content-layer', type=parse_layer, default=CONTENT_LAYER,
                       help='layer whose activations carry the content')
    model.add_argument('--style-layers', type=parse_style_layers, default=STYLE_LAYERS,
                       metavar='LAYER:W,...',
                       help='style layers and their weights, e.g. conv1_1:0.2,conv2_1:0.2 '
                            '(default: conv1_1 ... conv5_1 at 0.2 each)')
    model.add_argument('--pooling', choices=('avg', 'max'), default='avg',
                       help='pooling between the conv blocks (the course uses average)')
    model.add_argument('--precision', choices=('float32', 'bfloat16'), default='float32',
                       help='bfloat16: convolutions in bfloat16, Gram matrices and costs in '
                            'float32 (needs a CPU with AVX512_BF16 or AMX; else float32)')

    cost = parser.add_argument_group('cost and optimisation')
    cost.add_argument('--alpha', type=non_negative_float, default=10.0,
                      help='weight of the content cost')
    cost.add_argument('--beta', type=non_negative_float, default=40.0,
                      help='weight of the style cost')
    cost.add_argument('--tv-weight', type=non_negative_float, default=0.0,
                      help='weight of the total-variation smoothing cost')
    cost.add_argument('--optimizer', choices=('adam', 'lbfgs'), default='adam',
                      help='adam as in the course, or L-BFGS-B (scipy) with the pixel range as '
                           'box constraints')
    cost.add_argument('--iterations', type=positive_int, default=200,
                      help='optimisation iterations')
    cost.add_argument('--learning-rate', type=positive_float, default=2.0,
                      help="Adam's learning rate")
    cost.add_argument('--noise-ratio', type=_number(float, 0.0, name='number from 0 to 1'),
                      default=CONFIG.NOISE_RATIO,
                      help='share of uniform(-20, 20) noise in the initial image')
    cost.add_argument('--seed', type=non_negative_int,
                      help='seed of the initial noise (default: a different run each time)')
    cost.add_argument('--preserve-colors', action='store_true',
                      help="keep the content's colours: only the luminance is styled (YCbCr)")

    report = parser.add_argument_group('progress')
    report.add_argument('--save-every', type=non_negative_int, default=20, metavar='N',
                        help='save output-dir/i.png every N iterations (0: never)')
    report.add_argument('--print-every', type=non_negative_int, default=20, metavar='N',
                        help="print the course's cost lines every N iterations (0: never)")
    report.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def check_options(options):
    """Checks that need more than one option, or the file system. Raises UsageError."""
    if options.noise_ratio > 1:
        raise UsageError('--noise-ratio: %r must be from 0 to 1' % options.noise_ratio)
    weights = options.style_blend_weights
    if weights is not None:
        if len(weights) != len(options.style):
            raise UsageError('--style-blend-weights: %d weights for %d style images'
                             % (len(weights), len(options.style)))
        if sum(weights) <= 0:
            raise UsageError('--style-blend-weights: the weights sum to 0')
    if os.path.exists(options.output_dir) and not os.path.isdir(options.output_dir):
        raise UsageError('--output-dir: %s is a file, not a folder' % options.output_dir)
    try:
        os.makedirs(options.output_dir, exist_ok=True)
    except OSError as error:
        raise UsageError('--output-dir: cannot create %s (%s)'
                         % (options.output_dir, error.strerror)) from None
    if not os.access(options.output_dir, os.W_OK | os.X_OK):
        raise UsageError('--output-dir: %s is not writable' % options.output_dir)


def load_inputs(options):
    """Read and size the images: the content sets the size, the styles are fitted to it.

    Returns (content, styles, initial) as (H, W, 3) uint8 arrays (initial may be None).
    """
    return size_inputs(options, *read_inputs(options))


def read_inputs(options):
    """Decode the images as they are (any error before a download or a resize).

    Returns (content, styles, initial) as (h, w, 3) uint8 arrays (initial may be None).
    """
    content = nst_utils.read_image(options.content)
    styles = [nst_utils.read_image(path) for path in options.style]
    initial = nst_utils.read_image(options.initial) if options.initial else None
    return content, styles, initial


def result_height(content, width):
    """The height of the result: width times the content's aspect ratio, at least 1."""
    return max(1, round(width * content.shape[0] / content.shape[1]))


def size_inputs(options, content, styles, initial):
    """Resize the content (and initial) to the result and fit the styles to it."""
    height = result_height(content, options.width)
    content = nst_utils.resize_image(content, options.width, height)
    styles = [nst_utils.fit_image(style, options.width, height) for style in styles]
    if initial is not None:
        initial = nst_utils.resize_image(initial, options.width, height)
    return content, styles, initial


def check_memory(options, height, weights):
    """Refuse, before anything is allocated, a run whose estimated peak memory is more than
    the memory available (nst_utils.estimate_run_memory, nst_utils.available_memory)."""
    needed = nst_utils.estimate_run_memory(height, options.width, nst_utils.vgg_widths(weights),
                                           styles=len(options.style),
                                           optimizer=options.optimizer)
    available = nst_utils.available_memory()
    if available is not None and needed > available:
        raise UsageError('--width %d: a %dx%d result needs about %s of memory (estimated from '
                         'the layer shapes) but %s is available; try a smaller --width'
                         % (options.width, options.width, height, nst_utils.format_bytes(needed),
                            nst_utils.format_bytes(available)))


def ensure_weights(options):
    """The weights file, downloaded on first use unless --no-download."""
    path = options.model
    if os.path.exists(path):
        return path
    url = os.environ.get('NST_VGG_URL') or nst_utils.VGG_URL  # a mirror; the SHA-256 still holds
    if options.no_download:
        raise UsageError('%s: weights file not found (--no-download); download %s '
                         '(SHA-256 %s) to that path' % (path, url, nst_utils.VGG_SHA256))
    print('Downloading the VGG-19 weights (about 510 MiB) from %s to %s'
          % (url, path), file=sys.stderr)
    try:
        return nst_utils.download_vgg_model(path, url=url, progress=not options.no_progress)
    except nst_utils.DownloadError as error:
        message = ('%s: weights file not found and %s; download %s (SHA-256 %s) to that path'
                   % (path, error, url, nst_utils.VGG_SHA256))
        if error.offline:  # no network: like --no-download, the file is simply missing (exit 2)
            raise UsageError(message) from None
        raise nst_utils.DownloadError(message) from None  # a failure at run time (exit 1)


def save_plots(output_dir, history, content, styles, result):
    """costs.png (costs against iteration, log scale) and summary.png (inputs and result)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if history:
        iterations, total, content_cost, style_cost = zip(*history)
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for values, label in ((total, 'total cost J'), (content_cost, 'content cost'),
                              (style_cost, 'style cost')):
            positive = [(i, v) for i, v in zip(iterations, values) if v > 0]
            if positive:
                axes.plot(*zip(*positive), label=label)
        axes.set_yscale('log')
        axes.set_xlabel('iteration')
        axes.set_ylabel('cost')
        axes.legend()
        axes.grid(True, which='both', alpha=0.3)
        _save_figure(figure, os.path.join(output_dir, 'costs.png'))

    panels = [('content', content)] + [
        ('style' if len(styles) == 1 else 'style %d' % (k + 1), s) for k, s in enumerate(styles)
    ] + [('result', result)]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0))
    for ax, (title, pixels) in zip(np.atleast_1d(axes), panels):
        ax.imshow(pixels)
        ax.set_title(title)
        ax.axis('off')
    _save_figure(figure, os.path.join(output_dir, 'summary.png'))


def _save_figure(figure, path):
    import matplotlib.pyplot as plt
    try:
        nst_utils.atomic_write(path, lambda temp: figure.savefig(temp, format='png', dpi=100,
                                                                 bbox_inches='tight'))
    finally:
        plt.close(figure)


def run(options):
    """The whole flow for parsed options. Returns the exit code."""
    check_options(options)
    content, styles, initial = read_inputs(options)
    weights_path = ensure_weights(options)
    weights = read_weights(weights_path, options.content_layer, options.style_layers)
    check_memory(options, result_height(content, options.width), weights)
    content, styles, initial = size_inputs(options, content, styles, initial)

    precision = options.precision
    support = nst_utils.bfloat16_support() if precision == 'bfloat16' else None
    if precision == 'bfloat16' and support is None:
        print('--precision bfloat16: this CPU has no AVX512_BF16 or AMX-BF16; using float32',
              file=sys.stderr)
        precision = 'float32'
    elif support == 'avx512':
        # Ours (a 2-core Xeon) does half as many bfloat16 as float32 operations per cycle
        # (VDPBF16PS against FMA, benchmarks/bf16_peak.c): 1.02 s against 0.55 s per
        # iteration (benchmarks/benchmark.py). Run as asked, but say so.
        print('--precision bfloat16: this CPU has AVX512_BF16 but no AMX; TensorFlow\'s '
              'bfloat16 convolutions may be slower than float32 here', file=sys.stderr)

    tf = nst_utils.import_tf()
    if options.seed is not None:
        np.random.seed(options.seed)
        tf.set_random_seed(options.seed)
    content_image = nst_utils.reshape_and_normalize_image(content)
    style_images = [nst_utils.reshape_and_normalize_image(s) for s in styles]
    if initial is not None:
        input_image = nst_utils.reshape_and_normalize_image(initial).astype(np.float32)
    else:
        input_image = nst_utils.generate_noise_image(content_image, options.noise_ratio)
    blend = options.style_blend_weights
    if blend is not None:
        blend = [w / sum(blend) for w in blend]
    postprocess = ((lambda pixels: nst_utils.transfer_luminance(pixels, content))
                   if options.preserve_colors else None)

    with tf.Graph().as_default(), tf.Session(config=session_config()) as sess:
        nst = build_style_transfer(
            sess, weights, content_image, style_images, blend_weights=blend,
            content_layer=options.content_layer, style_layers=options.style_layers,
            alpha=options.alpha, beta=options.beta, tv_weight=options.tv_weight,
            learning_rate=options.learning_rate, pooling=options.pooling, precision=precision)
        del weights  # the graph holds its own copy
        result = optimise(sess, nst, input_image, options.iterations,
                          optimizer=options.optimizer, output_dir=options.output_dir,
                          save_every=options.save_every, print_every=options.print_every,
                          progress=not options.no_progress, postprocess=postprocess)

    final_path = os.path.join(options.output_dir, 'generated_image.jpg')
    result_pixels = nst_utils.to_pixels(result.image)
    if postprocess is not None:
        result_pixels = postprocess(result_pixels)
    save_plots(options.output_dir, result.history, content, styles, result_pixels)
    if result.diverged:
        if not result.history:
            print('error: the cost is not finite from the first iteration (a damaged weights '
                  'file %s, or --alpha, --beta or --tv-weight too large?); the starting image '
                  'is in %s' % (weights_path, final_path), file=sys.stderr)
        else:
            print('error: the cost became non-finite after %d iterations; the last image with '
                  'a finite cost is in %s (try a lower --learning-rate)'
                  % (result.iterations, final_path), file=sys.stderr)
        return EXIT_FAILURE
    if result.interrupted:
        print('Interrupted after %d iterations; the latest image is in %s'
              % (result.iterations, final_path), file=sys.stderr)
        return EXIT_INTERRUPTED
    print('Saved %s' % final_path)
    return 0


def main(argv=None):
    options = build_parser().parse_args(argv)
    try:
        return run(options)
    except NSTError as error:
        code = EXIT_FAILURE if isinstance(error, nst_utils.DownloadError) else EXIT_USAGE
        print('error: %s' % error, file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print('Interrupted before the first iteration; nothing was saved', file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print('error: out of memory; try a smaller --width', file=sys.stderr)
        return EXIT_FAILURE


if __name__ == '__main__':
    sys.exit(main())
