"""The command line of art_generation.py: options, their checks, the inputs of a run, the
weights on first use, and errors turned into one line and an exit code.

art_generation.main reads like the notebook's cells; everything about options and files that a
notebook does not need is here.
"""

import argparse
import contextlib
import math
import os
import re
import signal
import sys
from typing import NamedTuple

import numpy as np

from nst import checkpoint, config, download, errors, memory, runtime, stages, tiles
from nst.config import VGG19_KEYS
from nst.errors import (EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE,
                        CheckpointError, DownloadError, NSTError, UsageError, one_line)
from nst.images import (fit_image, read_image, resize_image, save_pixels, to_pixels,
                        transfer_luminance)
from nst.weights import layers_needed, read_vgg_weights

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _number(kind, minimum=None, strictly=False, name=None, maximum=None):
    """An argparse type: a finite number of kind (int or float) above a minimum (and at most
    a maximum)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError('%r is not %s' % (
                text, 'a whole number' if kind is int else 'a number')) from None
        try:
            finite = math.isfinite(value)
        except OverflowError:  # a whole number of hundreds of digits
            raise argparse.ArgumentTypeError('%r is too large' % text) from None
        if not finite:
            raise argparse.ArgumentTypeError('%r is not finite' % text)
        if kind is float and abs(value) > _FLOAT32_MAX:  # the graph computes in float32
            raise argparse.ArgumentTypeError('%r is too large (float32 holds up to %.4g)'
                                             % (text, _FLOAT32_MAX))
        if minimum is not None and (value <= minimum if strictly else value < minimum):
            raise argparse.ArgumentTypeError('%r must be %s %s' % (
                text, 'greater than' if strictly else 'at least', minimum))
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError('%r must be at most %s' % (text, maximum))
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
        name, sep, weight = item.partition(':')
        name = name.strip()
        if name not in VGG19_KEYS:
            raise argparse.ArgumentTypeError('unknown layer %r (one of %s)'
                                             % (name, ', '.join(VGG19_KEYS)))
        try:
            value = float(weight) if sep else None
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError('%r needs a weight: layer:weight with a '
                                             'non-negative number' % item.strip())
        if name in dict(layers):  # the course's sum would count it twice
            raise argparse.ArgumentTypeError('%s is given twice' % name)
        layers.append((name, value))
    if not any(weight > 0 for _, weight in layers):
        raise argparse.ArgumentTypeError('no style layer has a positive weight')
    return layers


def parse_counts(text):
    """'200,100,50' -> [200, 100, 50], each a positive whole number."""
    counts = []
    for item in text.split(','):
        try:
            count = int(item.strip())
        except ValueError:
            count = 0
        if count <= 0:
            raise argparse.ArgumentTypeError('%r is not a list of positive whole numbers '
                                             '(N,N,...)' % text)
        counts.append(count)
    return counts


def parse_memory(text):
    """--max-memory: '6G' -> bytes (nst.tiles.parse_memory_size)."""
    try:
        return tiles.parse_memory_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_layer(text):
    if text not in VGG19_KEYS:
        raise argparse.ArgumentTypeError('unknown layer %r (one of %s)'
                                         % (text, ', '.join(VGG19_KEYS)))
    return text




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


def build_parser(content_layer, style_layers):
    """The command line's options; content_layer and style_layers are the defaults (the
    course's, handed in by art_generation.main)."""
    parser = _Parser(
        prog='art_generation.py',
        description='Neural style transfer (Gatys et al.) with VGG-19, as in the deeplearning.ai '
                    'assignment. With no options: the course run on the default images.',
        formatter_class=_HelpFormatter)
    images = parser.add_argument_group('images')
    images.add_argument('--content', default=config.CONTENT_IMAGE, metavar='PATH',
                        help='content photo')
    images.add_argument('--style', nargs='+', default=[config.STYLE_IMAGE], metavar='PATH',
                        help='one or more style images, scaled and centre-cropped to the '
                             'size of the result')
    images.add_argument('--style-blend-weights', nargs='+', type=non_negative_float,
                        metavar='W', help="one weight per style image, normalised to sum to 1 "
                        "(default: equal): each style's cost is weighted by it, which pulls the "
                        "result toward the weighted average of the styles' Gram matrices")
    images.add_argument('--initial', metavar='PATH',
                        help='start from this image (resized to the result) instead of noise '
                             'blended with the content')
    images.add_argument('--width', type=positive_int, default=config.IMAGE_WIDTH,
                        help='width of the result in pixels; the height follows the content '
                             "image's aspect ratio")
    images.add_argument('--output-dir', default=config.OUTPUT_DIR, metavar='DIR',
                        help='where i.png, generated_image.jpg, costs.png and summary.png go')

    model = parser.add_argument_group('model')
    model.add_argument('--model', default=config.VGG_MODEL, metavar='PATH',
                       help='MatConvNet imagenet-vgg-verydeep-19.mat (downloaded if missing, '
                            'from the environment variable NST_VGG_URL if set, else %s; '
                            'checked by SHA-256 either way)' % config.VGG_URL.replace('%', '%%'))
    model.add_argument('--no-download', action='store_true',
                       help='stop with a message instead of downloading missing weights')
    model.add_argument('--content-layer', type=parse_layer, default=content_layer,
                       help='layer whose activations carry the content')
    model.add_argument('--style-layers', type=parse_style_layers, default=style_layers,
                       metavar='LAYER:W,...',
                       help='style layers and their weights, e.g. conv1_1:0.2,conv2_1:0.2 '
                            '(default: conv1_1 ... conv5_1 at 0.2 each)')
    model.add_argument('--pooling', choices=('avg', 'max'), default='avg',
                       help='pooling between the conv blocks (the course uses average)')
    model.add_argument('--precision', choices=('float32', 'bfloat16', 'auto'),
                       default='float32',
                       help='bfloat16: convolutions in bfloat16, Gram matrices and costs in '
                            'float32 (needs a CPU with AVX512_BF16 or AMX, and oneDNN not '
                            'capped below it; else float32); '
                            "auto: bfloat16 only where this CPU's measured bfloat16 matmul is "
                            'at least 1.2x as fast as float32')
    model.add_argument('--no-tune', action='store_true',
                       help='do not measure the fastest way to run each layer on this CPU '
                            '(done once, a few seconds, cached in ~/.cache/nst-style-transfer); '
                            'use the built-in choices, which include no Winograd convolutions '
                            '(their results differ from a direct convolution\'s by about 1e-5 '
                            'of the largest value) (also: environment variable NST_TUNE=0)')

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
                      default=config.NOISE_RATIO,
                      help='share of uniform(-20, 20) noise in the initial image')
    cost.add_argument('--seed', type=_number(int, 0, name='seed', maximum=2 ** 32 - 1),
                      help='seed of the initial noise (default: a different run each time)')
    cost.add_argument('--preserve-colors', action='store_true',
                      help="keep the content's colours: only the luminance is styled (YCbCr)")

    large = parser.add_argument_group(
        'large pictures', 'A --width above --start-width runs in stages: from --start-width, '
        'times --scale-factor each, up to --width; each stage starts from the last one\'s '
        'result, upsampled.')
    large.add_argument('--start-width', type=positive_int, metavar='W',
                       help='width of the first stage (default: %d, or --width if smaller)'
                            % stages.DEFAULT_START_WIDTH)
    large.add_argument('--scale-factor', type=_number(float, 1.0, strictly=True,
                                                      name='number above 1'),
                       default=stages.DEFAULT_SCALE_FACTOR, metavar='F',
                       help='width ratio of consecutive stages (default: sqrt(2) = 1.414, '
                            'twice the pixels at each stage)')
    large.add_argument('--stage-iterations', type=parse_counts, metavar='N,N,...',
                       help='iterations of each stage (default: --iterations at the first, '
                            'half as many at each next one, at least a tenth)')
    large.add_argument('--style-scale', type=positive_float, default=1.0, metavar='F',
                       help='size of the style relative to each stage: F times the size at '
                            'which it covers the stage (for a style of the content\'s aspect, '
                            'its long side is F times the stage\'s); 1: fitted to the stage')
    large.add_argument('--max-memory', type=parse_memory, metavar='SIZE',
                       help='the most memory the run may use, e.g. 6G (K, M, G, T: powers of '
                            '1024); a stage that would need more is optimised in overlapping '
                            'tiles that fit (Adam only) (default: the memory available now)')
    large.add_argument('--resume', metavar='DIR',
                       help="continue the run whose output folder is DIR from its latest "
                            'checkpoint (written every --save-every iterations and on Ctrl-C); '
                            'options not given are the checkpoint\'s, and only --output-dir, '
                            '--model, --max-memory, --no-tune, --no-download, --save-every, '
                            '--print-every and --no-progress may change. L-BFGS starts its '
                            'history afresh')
    large.add_argument('--average', type=_number(float, 0.0, name='number from 0 to 1'),
                       default=0.0, metavar='D',
                       help='keep an exponential moving average of the iterates with decay D '
                            '(e.g. 0.9) and use it as the result (0: off)')

    report = parser.add_argument_group('progress')
    report.add_argument('--save-every', type=non_negative_int, default=20, metavar='N',
                        help='save output-dir/i.png and a checkpoint to resume from (see '
                             '--resume) every N iterations (0: never)')
    report.add_argument('--print-every', type=non_negative_int, default=20, metavar='N',
                        help="print the course's cost lines every N iterations (0: never)")
    report.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def check_options(options):
    """Checks that need more than one option, or the file system. Raises UsageError."""
    if options.noise_ratio > 1:
        raise UsageError('--noise-ratio: %r must be from 0 to 1' % options.noise_ratio)
    if options.average >= 1:
        raise UsageError('--average: %r must be below 1 (the decay of the average)'
                         % options.average)
    if options.start_width is not None and options.start_width > options.width:
        raise UsageError('--start-width: %d is above --width %d'
                         % (options.start_width, options.width))
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


def read_inputs(options):
    """Decode the images as they are (any error before a download or a resize).

    Returns (content, styles, initial) as (h, w, 3) uint8 arrays (initial may be None).
    """
    content = read_image(options.content)
    styles = [read_image(path) for path in options.style]
    initial = read_image(options.initial) if options.initial else None
    return content, styles, initial


def size_inputs(options, content, styles, initial):
    """Resize the content (and initial) to the result and fit the styles to it (a
    single-stage run's images)."""
    height = stages.stage_height(content.shape, options.width)
    content = resize_image(content, options.width, height)
    styles = [fit_image(style, options.width, height) for style in styles]
    if initial is not None:
        initial = resize_image(initial, options.width, height)
    return content, styles, initial




def memory_budget(options):
    """The bytes a run may use: --max-memory, else the memory available now (None where that
    cannot be told: no limit)."""
    return options.max_memory or memory.available_memory()


def plan_tiles(options, plan, weights, budget):
    """The tiles of each stage: [nst.tiles.Tiling, ...], a single tile for a stage that fits
    the budget (memory_budget) whole.

    Refuses, before anything is allocated, a run whose stage does not fit even in the smallest
    tiles, and L-BFGS on a stage that needs tiles.
    """
    widths = memory.vgg_widths(weights)
    styles = len(options.style)

    def stage_memory(stage):
        def estimate(tile_height, tile_width, count):
            if count == 1:
                return memory.estimate_run_memory(stage.height, stage.width, widths, styles,
                                                  options.optimizer)
            return memory.estimate_tiled_memory(stage.height, stage.width, tile_height,
                                                tile_width, count, widths, styles,
                                                options.content_layer)
        return estimate

    tilings = []
    for stage in reversed(plan):  # the largest first: the one an error names
        if budget is None:  # the memory available cannot be told: no limit
            tilings.append(tiles.single_tile(stage.height, stage.width))
            continue
        tiling = tiles.plan_tiling(stage.height, stage.width, budget, stage_memory(stage))
        if tiling is None:
            side = min(tiles.MIN_TILE, stage.height), min(tiles.MIN_TILE, stage.width)
            count = -(-stage.height // side[0]) * -(-stage.width // side[1])
            smallest = min(stage_memory(stage)(stage.height, stage.width, 1),
                           stage_memory(stage)(*side, count))
            raise UsageError(
                '%s: a %dx%d result needs about %s of memory even in tiles (estimated from '
                'the layer shapes) but %s %s; try a smaller --width'
                % ('--max-memory' if options.max_memory else '--width %d' % options.width,
                   stage.width, stage.height, memory.format_bytes(smallest),
                   memory.format_bytes(budget),
                   'is the budget' if options.max_memory else 'is available'))
        if tiling.count > 1 and options.optimizer != 'adam':
            raise UsageError('--optimizer %s: the %dx%d stage needs %d tiles to fit in %s, and '
                             'tiles need --optimizer adam' % (
                                 options.optimizer, stage.width, stage.height, tiling.count,
                                 memory.format_bytes(budget)))
        tilings.append(tiling)
    return tilings[::-1]


# Bytes a pixel of a scaled style takes while it is made: Pillow's RGB image (4 bytes) and
# NumPy's copy (3) before the stage's part of it is cropped, and room for the rest (a 64000x
# 48000 style peaked at 9.7 bytes a pixel with the process's own 0.65 GB, AVX2 EPYC).
_SCALED_STYLE_BYTES_PER_PIXEL = 12


def check_style_scale(options, plan, styles, budget):
    """Refuse a --style-scale whose scaled style (made whole, then cropped to the stage: see
    nst.stages.style_at) would not fit the memory budget (memory_budget) at the largest
    stage."""
    if options.style_scale <= 1.0 or budget is None:
        return
    stage = plan[-1]
    for path, style in zip(options.style, styles):
        width, height = stages.scaled_style_size(style.shape, stage.width, stage.height,
                                                 options.style_scale)
        needed = width * height * _SCALED_STYLE_BYTES_PER_PIXEL
        if needed > budget:
            size = ('%dx%d pixels (about %s)' % (width, height, memory.format_bytes(needed))
                    if needed < 2 ** 60 else '%.2g pixels' % (width * height))
            raise UsageError('--style-scale %g: the style %s would be scaled to %s for the %dx%d '
                             'result, more than %s %s'
                             % (options.style_scale, path, size, stage.width, stage.height,
                                memory.format_bytes(budget),
                                'the budget' if options.max_memory else 'available'))


def ensure_weights(options):
    """The weights file, downloaded on first use unless --no-download."""
    path = options.model
    if os.path.exists(path):
        return path
    url = os.environ.get('NST_VGG_URL') or config.VGG_URL  # a mirror; the SHA-256 still holds
    _check_url(url)
    if options.no_download:
        raise UsageError('%s: weights file not found (--no-download); download %s '
                         '(SHA-256 %s) to that path' % (path, url, config.VGG_SHA256))
    print('Downloading the VGG-19 weights (about 510 MiB) from %s to %s'
          % (url, path), file=sys.stderr)
    try:
        return download.download_vgg_model(path, url=url, progress=not options.no_progress)
    except DownloadError as error:
        message = ('%s: weights file not found and %s; download %s (SHA-256 %s) to that path'
                   % (path, error, url, config.VGG_SHA256))
        if error.offline:  # no network: like --no-download, the file is simply missing (exit 2)
            raise UsageError(message) from None
        raise DownloadError(message) from None  # a failure at run time (exit 1)


def resolve_precision(options):
    """The precision to run in: --precision, with bfloat16 only where this CPU has it and
    'auto' measured (nst.tuning); says on stderr what it chose when that is not what was asked.
    """
    precision = options.precision
    if precision == 'auto':
        from nst import tuning
        enabled = _tuning_switch(options)
        precision = tuning.choose_precision(enabled=enabled, log=_note)
        if runtime.bfloat16_support() is None:
            why = runtime.no_bfloat16_reason()
        elif not tuning.tuning_enabled(enabled):
            why = 'not measured: --no-tune or NST_TUNE=0'
        else:
            why = 'the faster of the two matmuls on this CPU, as measured'
        _note('--precision auto: %s (%s)' % (precision, why))
        return precision
    support = runtime.bfloat16_support() if precision == 'bfloat16' else None
    if precision == 'bfloat16' and support is None:
        _note('--precision bfloat16: %s; using float32' % runtime.no_bfloat16_reason())
        return 'float32'
    if support == 'avx512':
        _note_slow_bfloat16(options)
    return precision


def _note_slow_bfloat16(options):
    """On a CPU with AVX512_BF16 but no AMX, say when bfloat16 may be the slower precision.

    Such CPUs differ: our AVX-512 Xeon does half as many bfloat16 as float32 operations per
    cycle (VDPBF16PS against FMA, benchmarks/bf16_peak.c), a Zen 4 EPYC twice as many. So the
    matmuls are measured (once, as for --precision auto) and the run goes on as asked either
    way; without a measurement (--no-tune) the note says it may be slower.
    """
    from nst import tuning
    enabled = _tuning_switch(options)
    if not tuning.tuning_enabled(enabled):
        _note('--precision bfloat16: bfloat16 runs on AVX512_BF16 here, without AMX; it may be '
              'slower than float32 (not measured: --no-tune or NST_TUNE=0)')
        return
    tuning.choose_precision(enabled=enabled)  # measures once, as for --precision auto
    speedup = tuning.bfloat16_speedup()
    if speedup is None or speedup < 1.0:
        measured = ('ran at %.2fx the float32 speed' % speedup if speedup
                    else 'could not be timed')
        _note('--precision bfloat16: bfloat16 matmuls %s on this CPU (measured): bfloat16 '
              'may be slower than float32 here (--precision auto takes float32)' % measured)


def _tuning_switch(options):
    """The enabled argument of nst.tuning's functions: off with --no-tune, else NST_TUNE's."""
    return False if options.no_tune else None


def _check_url(url):
    """A mirror in NST_VGG_URL that cannot be an address to download from: UsageError."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
        detail = ''
    except ValueError as error:
        parts, detail = None, ' (%s)' % one_line(error)
    if parts is not None and parts.hostname:
        try:
            parts.hostname.encode('idna')  # a label empty or over 63 characters cannot be asked
        except UnicodeError as error:
            parts, detail = None, ' (%s)' % one_line(error)
    if (parts is None or parts.scheme not in ('http', 'https') or not parts.hostname
            or any(c.isspace() or not c.isprintable() for c in url)):
        raise UsageError('NST_VGG_URL: %r is not an http:// or https:// address with a host%s'
                         % (url, detail))


def _note(line):
    """Print one line on stderr: a newline inside (a path's, say) is shown as \\n."""
    print(line.replace('\r', '\\r').replace('\n', '\\n'), file=sys.stderr)


class Inputs(NamedTuple):
    """What a run starts from, checked."""
    weights_path: str
    layers: tuple          # the keys of the model the costs use
    precision: str         # float32 or bfloat16, as resolve_precision decided
    content: np.ndarray    # (h, w, 3) uint8, as read
    styles: list           # [(h, w, 3) uint8], as read
    initial: object        # (h, w, 3) uint8 as read, or None: start from noise
    blend_weights: list    # one per style, summing to 1
    stages: list           # [nst.stages.Stage]: one for a single-scale run
    tilings: list          # [nst.tiles.Tiling] of each stage: one tile where it fits whole


def check_environment():
    """The environment variables that would otherwise stop a run later, and worse: NST_TUNE
    (any other value was taken as on), and TF_NUM_INTRAOP_THREADS (TensorFlow aborts the process
    at the first session on a negative count; it ignores what is not a 32-bit integer, and our
    sessions set the inter-op count themselves). Raises UsageError."""
    from nst import tuning
    value = os.environ.get('NST_TUNE')
    if value is not None and value.strip().lower() not in tuning.TUNE_OFF + tuning.TUNE_ON + ('',):
        raise UsageError('NST_TUNE: %r is not one of %s (or empty)'
                         % (value, ', '.join(tuning.TUNE_OFF + tuning.TUNE_ON)))
    value = os.environ.get('TF_NUM_INTRAOP_THREADS', '')
    if re.fullmatch(r'\s*-[0-9]+\s*', value, re.ASCII) and int(value) >= -2 ** 31:
        raise UsageError('TF_NUM_INTRAOP_THREADS: %r is not a number of threads (0 for '
                         'TensorFlow\'s choice)' % value)


def prepare_inputs(options):
    """Check the options, read the images, find (or download) the weights, check the memory:
    all that can fail with a one-line error, before any graph is built."""
    check_environment()
    check_options(options)
    content, styles, initial = read_inputs(options)
    try:
        plan = stages.plan(content.shape, options.width, options.iterations,
                           options.start_width, options.scale_factor, options.stage_iterations)
    except ValueError as error:
        option = ('--stage-iterations' if options.stage_iterations
                  and 'iteration counts' in str(error) else '--scale-factor')
        raise UsageError('%s: %s' % (option, error)) from None
    budget = memory_budget(options)
    check_style_scale(options, plan, styles, budget)
    weights_path = ensure_weights(options)
    layers = (options.content_layer,) + tuple(name for name, _ in options.style_layers)
    weights = read_vgg_weights(weights_path, layers_needed(layers))  # fails here if damaged
    tilings = plan_tiles(options, plan, weights, budget)
    del weights
    precision = resolve_precision(options)
    if options.seed is not None:
        np.random.seed(options.seed)
    blend = options.style_blend_weights or [1.0] * len(styles)
    return Inputs(weights_path, layers, precision, content, styles, initial,
                  [w / sum(blend) for w in blend], plan, tilings)


def stage_images(options, inputs, stage):
    """(content, styles, initial) sized for a stage, (H, W, 3) uint8: the content (and the
    initial image) resized, the styles sized by --style-scale (nst.stages.style_at)."""
    size = stage.width, stage.height
    content = resize_image(inputs.content, *size)
    styles = [stages.style_at(style, *size, options.style_scale) for style in inputs.styles]
    initial = None if inputs.initial is None else resize_image(inputs.initial, *size)
    return content, styles, initial


def colour_preserving(content):
    """A save_image(path, image) that keeps the content's colours: only the luminance of image
    is kept (--preserve-colors)."""
    def save(path, image):
        save_pixels(path, transfer_luminance(to_pixels(image), content))
    return save


class RunRecord:
    """The stages a run has done (their results and cost histories), what it resumed from,
    and its checkpoints."""

    def __init__(self, inputs, options, resumed=None):
        self.inputs, self.options, self.resumed = inputs, options, resumed
        self.results = []  # [(stage, RunResult)] of this process
        self.stage_finished = False  # the last stage ran all its iterations (or converged)
        self.result_options = checkpoint.result_options(options)
        if resumed is not None:
            check_resumed(options, inputs.stages, resumed)

    # What to run -------------------------------------------------------------------------

    def stages_to_run(self):
        """The stages left: all, or from the checkpoint's (the next one if it was done)."""
        if self.resumed is None:
            return list(self.inputs.stages)
        first = self.resumed.stage
        if self.resumed.iteration >= self.inputs.stages[first].iterations:
            first += 1
        return list(self.inputs.stages[first:])

    def resumes(self, stage):
        """Whether stage goes on from the checkpoint, mid-way."""
        return (self.resumed is not None and not self.results
                and stage.index == self.resumed.stage
                and self.resumed.iteration < stage.iterations)

    def remaining(self, stage):
        return stage.iterations - (self.resumed.iteration if self.resumes(stage) else 0)

    def continuation(self, stage):
        """What stage's optimisation goes on from: Adam's state and the average, or nothing."""
        from nst.optimize import Continuation
        if not self.resumes(stage):
            return Continuation()
        return Continuation(self.resumed.adam, self.resumed.average)

    def seam_generator(self, stage):
        """The random generator placing a tiled stage's seams: the checkpoint's, resumed;
        else seeded by --seed and the stage (the same seed, the same seams)."""
        if self.resumes(stage) and self.resumed.rng_state.get('bit_generator') == 'PCG64':
            generator = np.random.default_rng()
            checkpoint.set_rng_state(generator, self.resumed.rng_state)
            return generator
        if self.options.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.options.seed, stage.index])

    # What was done -----------------------------------------------------------------------

    def add(self, stage, result):
        """Record a stage's result; a stage that ran to its end gets a checkpoint (resuming
        from it starts the next stage). L-BFGS may end a stage early, where the gradient
        vanishes: its checkpoint says the iterations run (resuming from it goes on with the
        stage, which ends again at once)."""
        done_before = self.resumed.iteration if self.resumes(stage) else 0
        self.results.append((stage, result))
        # Its image is the stage's result, though a Ctrl-C may have come after its last
        # iteration (while the image was saved).
        self.stage_finished = not result.diverged and (
            not result.interrupted or done_before + result.iterations >= stage.iterations)
        if not (result.interrupted or result.diverged):
            from nst.optimize import LoopSnapshot
            self._save_checkpoint(stage, done_before + result.iterations, self.iterations,
                                  LoopSnapshot(result.iterations, result.image, None, None,
                                               None, []))

    @property
    def history(self):
        earlier = ([tuple(row) for row in self.resumed.history.tolist()]
                   if self.resumed is not None else [])
        return earlier + [entry for _, result in self.results for entry in result.history]

    @property
    def iterations(self):
        """Iterations completed so far, over all stages: the number of the next one."""
        earlier = self.resumed.completed if self.resumed is not None else 0
        return earlier + sum(result.iterations for _, result in self.results)

    @property
    def last(self):
        return self.results[-1][1]

    @property
    def last_image(self):
        """The latest stage's result (this process's, or the checkpoint's)."""
        return self.results[-1][1].image if self.results else self.resumed.image

    def stopped(self):
        """Whether the last stage was interrupted or diverged (the run stops there)."""
        return self.last.interrupted or self.last.diverged

    def stage_starts(self, current=None):
        """[(stage index, number of its first iteration)] of the stages begun, and of
        current = (stage, its history so far) if given."""
        starts = [tuple(start) for start in self.resumed.stage_starts] if self.resumed else []
        ongoing = [current] if current is not None else []
        for stage, history in [(s, r.history) for s, r in self.results] + ongoing:
            if history and stage.index not in {index for index, _ in starts}:
                starts.append((stage.index, history[0][0]))
        return starts

    # Checkpoints -------------------------------------------------------------------------

    def checkpointer(self, stage):
        """checkpoint(snapshot) for stage's optimisation: writes output-dir/checkpoint.npz."""
        done_before = self.resumed.iteration if self.resumes(stage) else 0
        completed_before = self.iterations

        def save(snapshot):
            self._save_checkpoint(stage, done_before + snapshot.iterations,
                                  completed_before + snapshot.iterations, snapshot)
        return save

    def _save_checkpoint(self, stage, iteration, completed, snapshot):
        """The checkpoint after iteration iterations of stage (completed in all): the history
        of the stages recorded and snapshot's own (of a stage still running)."""
        rows = np.array(self.history + list(snapshot.history),
                        dtype=np.float64).reshape(-1, 4)  # (iterations, 4)
        checkpoint.save_checkpoint(self.options.output_dir, checkpoint.Checkpoint(
            stage.index, iteration, completed, np.asarray(snapshot.image, np.float32),
            snapshot.adam, snapshot.average,
            snapshot.rng_state or checkpoint.rng_state(self.seam_generator(stage)),
            self.result_options,
            rows, self.stage_starts((stage, snapshot.history))))


def check_resumed(options, plan, resumed):
    """A checkpoint that does not fit the run's stages (its image of another size, a stage
    that the plan does not have): CheckpointError, before anything is written."""
    where = '--resume %s' % options.resume
    if resumed.stage >= len(plan):
        raise CheckpointError('%s: the checkpoint is at stage %d, the run has %d stages'
                              % (where, resumed.stage + 1, len(plan)))
    stage = plan[resumed.stage]
    if resumed.iteration > stage.iterations:
        raise CheckpointError('%s: the checkpoint is at iteration %d of stage %d, which has %d'
                              % (where, resumed.iteration, resumed.stage + 1, stage.iterations))
    if resumed.image.shape != (1, stage.height, stage.width, 3):
        raise CheckpointError("%s: the checkpoint's image is %dx%d, its stage is %dx%d"
                              % (where, resumed.image.shape[2], resumed.image.shape[1],
                                 stage.width, stage.height))


def parse_options(content_layer, style_layers, argv=None):
    """The command line's options and the checkpoint they resume from (or None).

    With --resume DIR the options not given are the checkpoint's (checkpoint.resumed_options
    refuses one given anew that would change the result).
    """
    parser = build_parser(content_layer, style_layers)
    options = parser.parse_args(argv)
    if options.resume is None:
        return options, None
    # The options given on this command line: parsed again without defaults.
    given_parser = build_parser(content_layer, style_layers)
    for action in given_parser._actions:
        action.default = argparse.SUPPRESS
    given = set(vars(given_parser.parse_args(argv)))
    resumed = checkpoint.load_checkpoint(options.resume, parser)  # its options by parser's rules
    options = checkpoint.resumed_options(resumed.options, options, given, options.resume)
    return options, resumed


def progress_bar(options, plan, record=None):
    """One progress bar for the run's stages, weighted by each stage's pixels; a resumed run
    counts only what is left."""
    from nst.optimize import Progress
    left = {stage.index for stage in record.stages_to_run()} if record else None
    return Progress([(record.remaining(stage) if record else stage.iterations)
                     if left is None or stage.index in left else 0 for stage in plan],
                    [stage.width * stage.height for stage in plan],
                    enabled=not options.no_progress)


def first_tile(tiling):
    """crop(image): the first tile of a (1, H, W, C) image (the whole image when it is one
    tile), to build the one-tile graph on."""
    return lambda image: tiles.crop(image, 0, 0, tiling.tile_size)


def stage_path(options, stage):
    """Where a stage's result goes: output-dir/stage_<width>.png."""
    return os.path.join(options.output_dir, 'stage_%d.png' % stage.width)


def start_stage(progress, stage, tiling=None):
    """Name the stage on the progress bar (nothing for a single-stage run), with its tiles."""
    name = stage.name if stage.count > 1 else None
    if tiling is not None and tiling.count > 1:
        name = '%s%d tiles of %dx%d' % (name + ', ' if name else '', tiling.count,
                                         tiling.tile_width, tiling.tile_height)
    progress.start_stage(stage.index, name)


def finish(options, record, stop=None):
    """Save the plots, say how the run ended; return the exit code (stop: the run's
    nst.optimize.StopRequest, which says whether a Ctrl-C or a SIGTERM stopped it)."""
    from nst.plots import save_plots

    inputs = record.inputs
    if not record.results:
        print('The run in %s is complete (%d iterations); nothing to resume'
              % (options.output_dir, record.iterations))
        return 0
    final_stage, result = record.results[-1]
    content, styles, _ = stage_images(options, inputs, final_stage)
    final_path = os.path.join(options.output_dir, 'generated_image.jpg')
    result_pixels = to_pixels(result.image)
    if options.preserve_colors:
        result_pixels = transfer_luminance(result_pixels, content)
    stage_marks = [(first, inputs.stages[index].name) for index, first in record.stage_starts()
                   if inputs.stages[index].count > 1]
    save_plots(options.output_dir, record.history, content, styles, result_pixels, stage_marks)
    if result.diverged == 'gradient':
        _note("error: the gradient overflowed float32 after %d iterations (Adam's moments are "
              'not finite: --alpha, --beta or --tv-weight too large?); the latest image is in %s'
              % (record.iterations, final_path))
        return EXIT_FAILURE
    if result.diverged:
        if not record.history:
            _note('error: the cost is not finite from the first iteration (a damaged weights '
                  'file %s, or --alpha, --beta or --tv-weight too large?); the starting image '
                  'is in %s' % (inputs.weights_path, final_path))
        else:
            _note('error: the cost became non-finite after %d iterations; the last image with '
                  'a finite cost is in %s (try a lower --learning-rate, --alpha or --beta)'
                  % (record.iterations, final_path))
        return EXIT_FAILURE
    if result.interrupted:
        terminated = stop is not None and stop.signal_number == signal.SIGTERM
        _note('%s after %d iterations; the latest image is in %s'
              % ('Terminated (SIGTERM)' if terminated else 'Interrupted', record.iterations,
                 final_path))
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    print('Saved %s' % final_path)
    return 0


class Outcome:
    """The exit code of a run, set by exit_codes or by the run itself."""
    code = 0


@contextlib.contextmanager
def exit_codes(outcome):
    """Turn what escapes a run into one line on stderr and outcome.code: an NSTError's own exit
    code, 130 for a Ctrl-C outside the loop (or a second one), 1 for running out of memory.
    Never a traceback."""
    errors.quiet_start_ended()  # from here a Ctrl-C is a KeyboardInterrupt, handled below
    try:
        yield
    except NSTError as error:
        _note('error: %s' % error)
        outcome.code = error.exit_code
    except errors.Terminated:  # a SIGTERM outside the loop (or a second one)
        _note(errors.TERMINATED_AT_ONCE)
        outcome.code = EXIT_TERMINATED
    except KeyboardInterrupt:
        _note(errors.INTERRUPTED_AT_ONCE)
        outcome.code = EXIT_INTERRUPTED
    except MemoryError:
        _note('error: out of memory; try a smaller --width')
        outcome.code = EXIT_FAILURE
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly, as other shell tools do;
        # stdout goes to /dev/null so that Python's last flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        outcome.code = EXIT_FAILURE
