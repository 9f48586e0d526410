"""The benchmark problem shared by benchmark.py and compare_optimizers.py.

The style transfer of the course at full size (VGG-19 with the real layer widths, 400x300, the
repo's images/content.jpg and images/style.jpg), built with the project's own code:
nst_utils.read_vgg_weights and art_generation.build_style_transfer. The real weights cannot be
downloaded here, so the weights are random (He-scaled) ones in the MatConvNet layout, written by
tests/vgg_fixture.py; their shapes, hence the cost of every step, are those of the real file.

The generated weight files live in a cache folder that git ignores (.cache/benchmarks by default)
and are written once, atomically (temp file, then rename):

    vgg19-random-conv.mat   conv layers only (about 80 MB): enough for the speed runs
    vgg19-random-full.mat   with fc6-fc8 (about 575 MB): the real file's size, for start-up time
"""

import os
import sys
import time

import numpy as np

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_DIR = os.path.dirname(BENCHMARKS_DIR)
for _folder in (PROJECT_DIR, os.path.join(PROJECT_DIR, 'tests')):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)

import art_generation  # noqa: E402  (cheap: TensorFlow is imported on first use)
import nst_utils  # noqa: E402
import vgg_fixture  # noqa: E402  (tests/vgg_fixture.py: only NumPy at import)

DEFAULT_CACHE = os.path.join(PROJECT_DIR, '.cache', 'benchmarks')
WEIGHT_FILES = {False: 'vgg19-random-conv.mat', True: 'vgg19-random-full.mat'}
WIDTH, HEIGHT = 400, 300  # the course's size
SEED = 1  # initial noise, so every run starts from the same image


def weights_file(cache_dir, with_fc):
    """Path of the random full-width VGG-19 file in cache_dir, written on first use.

    with_fc=True gives the real file's size (about 575 MB, fc6-fc8 included), False the conv
    layers only (about 80 MB). The conv weights are the same in both (same seed, same order).
    """
    path = os.path.join(cache_dir, WEIGHT_FILES[with_fc])
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    size = vgg_fixture.file_size_estimate(vgg_fixture.REAL_WIDTHS, with_fc=with_fc)
    print('Writing %s (about %d MB of random weights, once) ...' % (path, size // 10 ** 6),
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    nst_utils.atomic_write(path, lambda temp: vgg_fixture.write_vgg19_mat(
        temp, widths=vgg_fixture.REAL_WIDTHS, with_fc=with_fc))
    print('  done in %.0f s' % (time.perf_counter() - start), file=sys.stderr, flush=True)
    return path


def load_images(width=WIDTH, height=HEIGHT):
    """The repo's content and style images at width x height, as the CLI sizes them.

    Returns (content_image, style_image), each (1, height, width, 3) mean-subtracted.
    """
    content = nst_utils.resize_image(nst_utils.read_image(nst_utils.CONFIG.CONTENT_IMAGE),
                                     width, height)
    style = nst_utils.fit_image(nst_utils.read_image(nst_utils.CONFIG.STYLE_IMAGE), width, height)
    return (nst_utils.reshape_and_normalize_image(content),
            nst_utils.reshape_and_normalize_image(style))


def initial_image(content_image, seed=SEED):
    """The course's starting point (content blended with noise), the same for a given seed."""
    np.random.seed(seed)
    return nst_utils.generate_noise_image(content_image)


def build(sess, weights, content_image, style_image, precision='float32'):
    """art_generation.build_style_transfer with the course's defaults (alpha 10, beta 40,
    Adam 2.0, conv4_2 content, conv1_1..conv5_1 style)."""
    return art_generation.build_style_transfer(sess, weights, content_image, [style_image],
                                               precision=precision)


def evaluate_costs(sess, nst, image):
    """(J, J_content, J_style) of image in the built graph (the variable is overwritten)."""
    nst.model['input'].load(image, sess)
    return tuple(float(c) for c in sess.run([nst.J, nst.J_content, nst.J_style]))
