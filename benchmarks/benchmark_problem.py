"""The benchmark problem shared by benchmark.py and compare_optimizers.py.

The style transfer of the course at full size (VGG-19 with the real layer widths, 400x300, the
repo's images/content.jpg and images/style.jpg), built with the project's own code:
nst.weights.read_vgg_weights, nst.vgg and art_generation.build_style_transfer (the graded
cost functions). The real weights cannot be
downloaded here, so the weights are random (He-scaled) ones in the MatConvNet layout, written by
nst/synthetic.py; their shapes, hence the cost of every step, are those of the real file.

The generated weight files live in a cache folder that git ignores (.cache/benchmarks by default)
and are written once, atomically (temp file, then rename):

    vgg19-random-conv.mat   conv layers only (about 80 MB): enough for the speed runs
    vgg19-random-full.mat   with fc6-fc8 (about 575 MB): the real file's size, for start-up time
"""

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(BENCHMARKS_DIR)
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

import art_generation  # noqa: E402  (cheap: TensorFlow is imported on first use)
import nst_utils  # noqa: E402
from nst import cli, config, optimize, runtime, stages, synthetic, vgg, weights  # noqa: E402
from nst.files import atomic_write  # noqa: E402
from nst.images import read_image  # noqa: E402

DEFAULT_CACHE = os.path.join(PROJECT_DIR, '.cache', 'benchmarks')
WEIGHT_FILES = {False: 'vgg19-random-conv.mat', True: 'vgg19-random-full.mat'}
WIDTH = 400  # the course's size: 400x300 with the repo's 4:3 content image
SEED = 1  # initial noise, so every run starts from the same image


def run_size(text):
    """'400x300' -> (400, 300); argparse's type for the benchmarks' --size."""
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a size such as 400x300' % text) from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError('%r: both sides must be at least 1' % text)
    return width, height


def weights_file(cache_dir, with_fc):
    """Path of the random full-width VGG-19 file in cache_dir, written on first use.

    with_fc=True gives the real file's size (about 575 MB, fc6-fc8 included), False the conv
    layers only (about 80 MB). The conv weights are the same in both (same seed, same order).
    """
    path = os.path.join(cache_dir, WEIGHT_FILES[with_fc])
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    size = synthetic.file_size_estimate(synthetic.REAL_WIDTHS, with_fc=with_fc)
    print('Writing %s (about %d MB of random weights, once) ...' % (path, size // 10 ** 6),
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    atomic_write(path, lambda temp: synthetic.write_vgg19_mat(
        temp, widths=synthetic.REAL_WIDTHS, with_fc=with_fc))
    print('  done in %.0f s' % (time.perf_counter() - start), file=sys.stderr, flush=True)
    return path


def load_images(width=WIDTH):
    """The repo's content and style images as `art_generation.py --width width` sizes them
    (nst.cli.size_inputs: the height follows the content's aspect ratio).

    Returns (content_image, style_image), each (1, height, width, 3) mean-subtracted.
    """
    content = read_image(config.CONTENT_IMAGE)
    style = read_image(config.STYLE_IMAGE)
    content, [style], _ = cli.size_inputs(argparse.Namespace(width=width), content,
                                                      [style], None)
    return (nst_utils.reshape_and_normalize_image(content),
            nst_utils.reshape_and_normalize_image(style))


def image_height(width=WIDTH):
    """The height of the problem at this width (300 at 400), as load_images gives it."""
    return stages.stage_height(read_image(config.CONTENT_IMAGE).shape, width)


def onednn_text(enabled, isa_limit):
    """TensorFlow's oneDNN as the machine lines name it: 'on', 'OFF', or 'on, capped at AVX2 by
    ONEDNN_MAX_CPU_ISA' (an older CPU imitated on a newer one: not the machine it runs on)."""
    if not enabled:
        return 'OFF'
    return 'on, capped at %s by ONEDNN_MAX_CPU_ISA' % isa_limit if isa_limit else 'on'


def print_table(rows):
    """rows: tuples of cells, the first the header; printed in aligned columns."""
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    for row in rows:
        print('  ' + '  '.join('%-*s' % (w, cell) for w, cell in zip(widths, row)).rstrip())


def write_json(path, data):
    """Write data to path as indented JSON, atomically."""
    def write(temp):
        with open(temp, 'w') as f:
            json.dump(data, f, indent=2)
            f.write('\n')
    atomic_write(path, write)


def initial_image(content_image, seed=SEED):
    """The course's starting point (content blended with noise), the same for a given seed."""
    np.random.seed(seed)
    return nst_utils.generate_noise_image(content_image)


def read_weights(path):
    """The conv weights the course's layers need (conv1_1 ... conv5_1), as the CLI reads them."""
    layers = [art_generation.CONTENT_LAYER] + [name for name, _ in art_generation.STYLE_LAYERS]
    return weights.read_vgg_weights(path, weights.layers_needed(layers))


def build(sess, vgg_weights, content_image, style_image, precision='float32', tune=True):
    """The VGG graph (with the fast paths measured for this machine, as the CLI does unless
    --no-tune) and art_generation.build_style_transfer with the course's defaults (alpha 10,
    beta 40, Adam 2.0, conv4_2 content, conv1_1..conv5_1 style)."""
    _, height, width, _ = content_image.shape
    paths = None
    if tune:
        from nst import tuning
        paths = tuning.choose_paths(vgg_weights, height, width, precision)
    model = vgg.build_vgg_graph(vgg_weights, height, width, precision=precision, sess=sess,
                                paths=paths)
    return art_generation.build_style_transfer(sess, model, content_image, [style_image])


@contextlib.contextmanager
def warm_session(width=WIDTH, tune=True, cache_dir=DEFAULT_CACHE, steps=3):
    """A session holding the problem (build, from the conv-only weight file), initialised at the
    course's starting image, after `steps` Adam steps (oneDNN creates its kernels and
    TensorFlow optimises the graph on the first ones). Yields (sess, nst, weights)."""
    tf = runtime.import_tf()
    weights = read_weights(weights_file(cache_dir, with_fc=False))
    content_image, style_image = load_images(width)
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        nst = build(sess, weights, content_image, style_image, tune=tune)
        sess.run(nst.initializer, nst.feeds)
        nst.set_input(sess, initial_image(content_image))
        for _ in range(steps):
            nst.run(sess, nst.train_step)
        yield sess, nst, weights


def conv_shapes(model, vgg_weights):
    """[(name, [H, W] of the output map, [kh, kw, in, out] kernel), ...] of the built graph's
    convolutions, in order (plain lists: the worker processes report them as JSON)."""
    return [(name, model[name].get_shape().as_list()[1:3], list(vgg_weights[name][0].shape))
            for name in config.VGG19_CONV_LAYERS if name in model]


def work_per_iteration(conv_shapes):
    """FLOPs of one iteration, layer by layer, from the shapes of the built graph.

    conv_shapes: [(name, (H, W) of the output map, (kh, kw, in, out) kernel), ...] in order;
    the graph holds the convolutions up to the deepest layer the cost reads (conv5_1 for the
    course), as art_generation.read_weights reads no more. A SAME stride-1 convolution has its
    output map's size at its input, so it does H W kh kw in out multiply-adds; the gradient with
    respect to its input (backward-data) does as many. Every conv runs forward, and the gradient
    goes back through all of them to the image (conv1_1's backward-data included; no gradient
    for the weights). Returns [(name, (H, W), kernel, FLOPs of each direction), ...].
    """
    return [(name, (height, width), tuple(kernel), 2 * height * width * int(np.prod(kernel)))
            for name, (height, width), kernel in conv_shapes]


def evaluate_costs(sess, nst, image):
    """(J, J_content, J_style) of image in the built graph (the variable is overwritten)."""
    nst.set_input(sess, image)
    return tuple(float(c) for c in nst.run(sess, [nst.J, nst.J_content, nst.J_style]))


class IterationRecorder(optimize.StopRequest):
    """A stop request for nst.optimize.optimise that records when each iteration ends.

    optimise() checks `stop.requested` at the end of every iteration (that is how Ctrl-C stops
    there), when the input variable holds the new iterate, and once more after its loop. Each
    check records the optimisation time so far (from optimise entering the request, right
    before its loop) and, if a variable is given, a copy of its value (the clock is paused
    during the copy). The request becomes true once `iterations` iterations are recorded and
    `seconds` have passed, so the loop itself is what is timed, whatever it runs per iteration.
    Ctrl-C works as usual.
    """

    def __init__(self, iterations, seconds=0.0, sess=None, variable=None):
        self.iterations, self.seconds = iterations, seconds
        self.sess, self.variable = sess, variable
        self.entered = None  # time.perf_counter() when the loop began
        self.records = []    # [(seconds since the loop began, image or None), ...]
        self._paused = 0.0
        super().__init__()

    def __enter__(self):
        self.entered = time.perf_counter()
        self._paused = 0.0
        return super().__enter__()

    @property
    def requested(self):
        now = time.perf_counter()
        elapsed = now - self.entered - self._paused
        image = self.sess.run(self.variable) if self.variable is not None else None
        self.records.append((elapsed, image))
        self._paused += time.perf_counter() - now
        done = len(self.records) >= self.iterations and elapsed >= self.seconds
        return self._interrupted or done

    @requested.setter
    def requested(self, value):  # StopRequest sets it: False, then True on Ctrl-C
        self._interrupted = value

    def finish(self, result):
        """Keep the records of the iterations of optimise's RunResult (drop the check after the
        loop). Raises KeyboardInterrupt after a Ctrl-C."""
        if self._interrupted:  # result.interrupted is also true when a budget stopped the run
            raise KeyboardInterrupt
        if len(self.records) not in (result.iterations, result.iterations + 1):
            raise RuntimeError('optimise checked its stop request %d times in %d iterations; '
                               'this recorder expects one check per iteration'
                               % (len(self.records), result.iterations))
        del self.records[result.iterations:]


def run_recorded(sess, nst, x0, iterations, seconds=0.0, optimizer='adam', keep_images=False):
    """nst.optimize.optimise from x0 (no printing, saving or progress bar) until `iterations`
    iterations are done and `seconds` have passed. Returns (recorder, RunResult): the
    recorder's `records` are [(seconds since the loop began, image or None), ...] after each
    iteration, and `entered` the time.perf_counter() when the loop began."""
    recorder = IterationRecorder(iterations, seconds, sess,
                                 nst.model['input'] if keep_images else None)
    cap = iterations if not seconds else iterations + 10 ** 6  # the recorder stops the run
    result = optimize.optimise(sess, nst, x0, cap, optimizer=optimizer, progress=False,
                               stop=recorder)
    recorder.finish(result)
    return recorder, result
