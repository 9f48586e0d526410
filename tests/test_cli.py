"""The command line (art_generation.main, nst.cli): options, checks, errors and exit codes, and
whole runs end to end on a tiny generated VGG-19 file.

Most runs call art_generation.main([...]) in this process (TensorFlow is imported once; main
returns the exit code, argparse errors raise SystemExit(2)), with the tiny weights from
nst/synthetic.py, a small width, a few iterations and their own output folder; a run takes about a
second. Subprocesses are used only where the process itself is the point: the exit code and
stderr of a real run with no traceback, Ctrl-C, SIGKILL, TensorFlow's start-up. Test pictures are
generated with NumPy and Pillow (tests/pictures.py); downloads go only to the loopback server of
tests/loopback.py (the CLI takes the address from NST_VGG_URL). Expected values come from the
issues, the course, the file formats or independent NumPy/Pillow computations, never from the
code under test.

Bad input is one line on stderr and exit code 2; a failure at run time (a download, a write, a
diverging cost) one line and exit code 1; Ctrl-C exit code 130 with the latest image kept.

Temporary files. Images are written to a hidden temp file `.<name>.<random><ext>` in the same
folder and renamed, so a process killed at any moment leaves either the old image or the new one
under the real name. A SIGKILL during a write can leave one such hidden temp file behind; it is
ignorable (hidden, never under the name of a result, read by nothing) and may be deleted. The
tests below accept hidden temp files of exactly that pattern and nothing else.
"""
import contextlib
import fcntl
import io
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import art_generation as ag
from loopback import CUT, OTHER_SHA, PAYLOAD, SIZE
from matconvnet import CONV_NAMES
from nst import cli as nst_cli
from nst import checkpoint, download, images, memory, optimize, runtime, vgg
from nst import synthetic
from pictures import (HEIGHT, MEANS, TEMP_NAME, WIDTH, block_means, parse_blocks, read_rgb,
                      smooth_picture)

tf = runtime.import_tf()


PROJECT_DIR = Path(__file__).resolve().parent.parent
SCRIPT = str(PROJECT_DIR / 'art_generation.py')

# From the issues and the course, written out rather than read from the code.
VGG_URL = 'https://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat'
VGG_SHA256 = 'abdb57167f82a2a1fbab1e1c16ad9373411883f262a1a37ee5db2e6fb0044695'
COURSE_STYLE_LAYERS = [('conv1_1', 0.2), ('conv2_1', 0.2), ('conv3_1', 0.2), ('conv4_1', 0.2),
                       ('conv5_1', 0.2)]
OPTIONS = ('--content', '--style', '--style-blend-weights', '--output-dir', '--model',
           '--no-download', '--iterations', '--learning-rate', '--alpha', '--beta',
           '--noise-ratio', '--seed', '--width', '--style-layers', '--content-layer',
           '--save-every', '--print-every', '--optimizer', '--tv-weight', '--preserve-colors',
           '--pooling', '--initial')


TINY = synthetic.TINY_WIDTHS


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def image_size(path):
    with Image.open(path) as image:
        image.load()  # decodes the whole file
        return image.size


def total_variation(pixels):
    """Sum of squared differences between neighbouring pixels, in float64."""
    pixels = np.asarray(pixels, dtype=np.float64)
    return (np.sum((pixels[1:] - pixels[:-1]) ** 2)
            + np.sum((pixels[:, 1:] - pixels[:, :-1]) ** 2))


def parser():
    """The command line's parser with the course's defaults, as art_generation.main builds it."""
    return nst_cli.build_parser(ag.CONTENT_LAYER, ag.STYLE_LAYERS)


def refuse_download(*args, **kwargs):
    raise AssertionError('the tests must not download the weights')


@pytest.fixture(autouse=True)
def no_download(request, monkeypatch):
    """These tests never fetch the real weights: downloads reach only the loopback server, in
    the tests that ask for it (loopback_only)."""
    monkeypatch.delenv('NST_VGG_URL', raising=False)
    if 'loopback_only' not in request.fixturenames:
        monkeypatch.setattr(download, 'download_vgg_model', refuse_download)


def install_spy(monkeypatch):
    """Record, for each run, what the CLI built and what the optimisation returned."""
    runs = []
    load, build, Optimisation = ag.load_vgg_model, ag.build_style_transfer, optimize.Optimisation
    model_kwargs = []

    def spying_load(*args, **kwargs):
        model_kwargs.append(kwargs)
        return load(*args, **kwargs)

    def spying_build(sess, model, content_image, style_images, **kwargs):
        nst = build(sess, model, content_image, style_images, **kwargs)
        runs.append(SimpleNamespace(
            kwargs=kwargs, model_kwargs=model_kwargs[-1], content_image=np.array(content_image),
            style_images=[np.array(s) for s in style_images],
            ops=[(op.type, op.get_attr('T') if 'T' in op.node_def.attr else None)
                 for op in sess.graph.get_operations()]))
        return nst

    class SpyingOptimisation(Optimisation):
        def __init__(self, sess, nst, input_image, num_iterations, **kwargs):
            runs[-1].input_image = np.array(input_image)
            super().__init__(sess, nst, input_image, num_iterations, **kwargs)

        def __exit__(self, *exc):
            try:
                return super().__exit__(*exc)
            finally:
                runs[-1].result = self.result

    monkeypatch.setattr(ag, 'load_vgg_model', spying_load)
    monkeypatch.setattr(ag, 'build_style_transfer', spying_build)
    monkeypatch.setattr(optimize, 'Optimisation', SpyingOptimisation)
    return runs


@pytest.fixture
def spy(monkeypatch):
    return install_spy(monkeypatch)


class Run(SimpleNamespace):
    """code, out, err and dir of one CLI run."""

    def blocks(self):
        return parse_blocks(self.out)

    def numbered_pngs(self):
        return sorted(int(name[:-4]) for name in os.listdir(self.dir)
                      if re.fullmatch(r'\d+\.png', name))


def cli_argv(tiny_vgg_file, pics, out_dir, options, content=None, styles=None, width=WIDTH,
             iterations=3, seed=0, progress=False):
    argv = ['--model', tiny_vgg_file, '--no-download', '--content', content or pics.content,
            '--style', *(styles or [pics.style]), '--width', str(width),
            '--iterations', str(iterations), '--output-dir', str(out_dir)]
    if seed is not None:
        argv += ['--seed', str(seed)]
    if not progress:
        argv.append('--no-progress')
    return argv + list(options)


def check_run(run, argv):
    """What every successful run must give: exit 0, no traceback, the three pictures decodable,
    the course's lines at the iterations --print-every asks for."""
    assert run.code == 0, run.err
    assert 'Traceback' not in run.err
    for name in ('generated_image.jpg', 'costs.png', 'summary.png'):
        image_size(run.dir / name)  # present and decodable
    every = int(_option(argv, '--print-every', 20))
    iterations = int(_option(argv, '--iterations', 200))
    assert [b[0] for b in run.blocks()] == [
        i for i in range(iterations) if every and i % every == 0]
    return run


def _option(argv, name, default):
    """The last value given for an option in argv (as argparse takes it)."""
    value = default
    for k, item in enumerate(argv[:-1]):
        if item == name:
            value = argv[k + 1]
    return str(value)


@pytest.fixture
def cli(capsys, tiny_vgg_file, pics, tmp_path):
    """cli(*options, name=..., content=..., styles=..., width=..., iterations=..., seed=...)."""
    def run(*options, name='out', check=True, **settings):
        out_dir = tmp_path / name
        argv = cli_argv(tiny_vgg_file, pics, out_dir, options, **settings)
        capsys.readouterr()
        code = ag.main(argv)
        out, err = capsys.readouterr()
        result = Run(code=code, out=out, err=err, dir=out_dir)
        return check_run(result, argv) if check else result
    return run


REFERENCE_ITERATIONS = 11


@pytest.fixture(scope='module')
def reference(tiny_vgg_file, pics, tmp_path_factory):
    """One run with the course's settings, shared by several tests (runs cost about a second):
    seed 0, 11 iterations, every one printed, 0/5/10.png saved, the progress bar on."""
    out_dir = tmp_path_factory.mktemp('reference') / 'out'
    argv = cli_argv(tiny_vgg_file, pics, out_dir, ['--print-every', '1', '--save-every', '5'],
                    iterations=REFERENCE_ITERATIONS, progress=True)
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(download, 'download_vgg_model', refuse_download)
        runs = install_spy(patch)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = ag.main(argv)
    run = Run(code=code, out=out.getvalue(), err=err.getvalue(), dir=out_dir, spy=runs[0])
    return check_run(run, argv)


def usage_error(capsys, argv):
    """Run main(argv) that must fail with a usage error: returns its one stderr line."""
    capsys.readouterr()
    try:
        code = ag.main(argv)
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ''
    assert 'Traceback' not in err and 'usage:' not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def base_args(model, pics, out_dir, *extra):
    """A small valid run; options given in extra override these (argparse keeps the last)."""
    return ['--model', model, '--no-download', '--content', pics.content, '--style', pics.style,
            '--width', str(WIDTH), '--iterations', '2', '--output-dir', str(out_dir),
            '--no-progress', '--print-every', '0', '--save-every', '0'] + [str(a) for a in extra]


def run_main(capsys, argv):
    """Run main in this process: (exit code, stdout, stderr)."""
    try:
        code = ag.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


INFO_LINES = ('Downloading the VGG-19 weights',)


def one_error_line(err, *needles):
    """stderr holds no traceback and exactly one line besides known information lines; that
    line names every needle. Returns the line."""
    assert 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if line.strip()
             and not line.startswith(INFO_LINES)]
    assert len(lines) == 1, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# Parsing and help
# ----------------------------------------------------------------------------------------------


def help_entries(text):
    """{option: its help text, whitespace normalised} from argparse's --help output."""
    entries, current = {}, None
    for line in text.splitlines():
        if line.startswith('  -'):
            invocation, _, help_text = line.strip().partition('  ')
            names = [part.split()[0] for part in invocation.split(', ')]
            current = [help_text.strip()]
            for name in names:
                entries[name] = current
        elif current is not None and line.startswith(' ' * 4) and line.strip():
            current.append(line.strip())
        else:
            current = None
    return {name: ' '.join(' '.join(parts).split()) for name, parts in entries.items()}


def test_help_lists_every_option_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv('COLUMNS', '100')
    with pytest.raises(SystemExit) as exit:
        ag.main(['--help'])
    assert exit.value.code == 0
    out, err = capsys.readouterr()
    assert err == ''
    entries = help_entries(out)
    assert set(OPTIONS) <= set(entries), set(OPTIONS) - set(entries)
    defaults = {}
    for option in OPTIONS:
        text = entries[option]
        shown = re.findall(r'\(default: ([^()]*(?:\([^()]*\)[^()]*)*)\)', text)
        assert len(shown) == 1, (option, text)  # said once, not twice or contradicting
        assert len(text) > len('(default: %s)' % shown[0]) + 10, (option, text)  # explained
        defaults[option] = shown[0]
    numbers = {'--iterations': 200, '--learning-rate': 2.0, '--alpha': 10, '--beta': 40,
               '--noise-ratio': 0.6, '--width': 400, '--save-every': 20, '--print-every': 20,
               '--tv-weight': 0}
    for option, value in numbers.items():
        assert float(defaults[option]) == value, option
    for option, value in {'--content-layer': 'conv4_2', '--optimizer': 'adam',
                          '--pooling': 'avg'}.items():
        assert defaults[option] == value, option
    assert defaults['--output-dir'].rstrip('/').endswith('output')
    assert defaults['--model'].endswith('imagenet-vgg-verydeep-19.mat')
    assert defaults['--content'].endswith('content.jpg')
    assert 'style.jpg' in defaults['--style']
    for flag in ('--no-download', '--preserve-colors'):
        assert defaults[flag] == 'False'
    assert all(name in defaults['--style-layers'] for name in ('conv1_1', 'conv5_1', '0.2'))
    assert 'equal' in defaults['--style-blend-weights']
    # How styles are blended, and the choices of the choice options.
    blend = entries['--style-blend-weights'].lower()
    assert 'normalised' in blend or 'normalized' in blend
    assert 'gram' in blend
    assert '--optimizer {adam,lbfgs}' in out and '--pooling {avg,max}' in out


def test_no_options_parse_to_the_course_run():
    options = parser().parse_args([])
    assert (options.alpha, options.beta, options.learning_rate) == (10, 40, 2.0)
    assert options.iterations == 200
    assert options.width == 400
    assert options.noise_ratio == 0.6
    assert options.content_layer == 'conv4_2'
    assert [(name, pytest.approx(w)) for name, w in options.style_layers] == COURSE_STYLE_LAYERS
    assert (options.save_every, options.print_every) == (20, 20)
    assert (options.optimizer, options.pooling) == ('adam', 'avg')
    assert options.tv_weight == 0 and not options.preserve_colors
    assert options.initial is None and options.style_blend_weights is None
    assert options.seed is None and options.precision == 'float32'
    assert not options.no_download
    # The course's paths, resolved against the project folder.
    assert Path(options.content) == PROJECT_DIR / 'images' / 'content.jpg'
    assert [Path(p) for p in options.style] == [PROJECT_DIR / 'images' / 'style.jpg']
    assert Path(options.output_dir) == PROJECT_DIR / 'output'
    assert Path(options.model) == PROJECT_DIR / 'pretrained-model' / 'imagenet-vgg-verydeep-19.mat'


def test_default_images_exist_and_load_at_the_course_size():
    """Smoke test of images/: the default run's inputs are 400x300 pictures."""
    options = parser().parse_args([])
    content, styles, initial = nst_cli.size_inputs(options, *nst_cli.read_inputs(options))
    assert content.shape == (300, 400, 3) and content.dtype == np.uint8
    assert [s.shape for s in styles] == [(300, 400, 3)]
    assert initial is None
    assert content.std() > 10 and styles[0].std() > 10  # real pictures, not blanks


def test_layer_options_parse():
    parse = parser().parse_args
    options = parse(['--style-layers', 'conv1_1:0.5, conv3_1 : 1.5,conv5_4:0',
                     '--content-layer', 'conv3_2'])
    assert options.style_layers == [('conv1_1', 0.5), ('conv3_1', 1.5), ('conv5_4', 0.0)]
    assert options.content_layer == 'conv3_2'
    assert parse(['--content-layer', 'avgpool4']).content_layer == 'avgpool4'


@pytest.mark.parametrize('option, value', [
    ('--style-layers', 'conv9_9:0.2'),
    ('--style-layers', 'conv1_1'),
    ('--style-layers', 'conv1_1:abc'),
    ('--style-layers', 'conv1_1:-1'),
    ('--style-layers', 'conv1_1:nan'),
    ('--style-layers', 'conv1_1:0,conv2_1:0'),
    ('--style-layers', ''),
    ('--style-layers', 'relu1_1:0.2'),
    ('--style-layers', 'conv1_1:0.5,conv1_1:0.5'),
    ('--content-layer', 'conv6_1'),
    ('--content-layer', 'relu4_2'),
    ('--content-layer', ''),
    ('--width', '0'),
    ('--iterations', 'ten'),
    ('--learning-rate', '-1'),
    ('--alpha', 'inf'),
    ('--noise-ratio', '1.5'),
    ('--optimizer', 'sgd'),
    ('--pooling', 'min'),
    ('--precision', 'float16'),
])
def test_invalid_option_values_exit_2_with_one_line_naming_the_option(capsys, tmp_path, option,
                                                                      value):
    line = usage_error(capsys, ['--output-dir', str(tmp_path / 'out'), option, value])
    assert option in line
    assert not os.path.exists(tmp_path / 'out' / 'generated_image.jpg')


BAD_NUMBERS = [
    ('--iterations', ['-1', '0', 'ten', '2.5', 'nan', 'inf']),
    ('--width', ['-5', '0', 'wide', '32.5', 'nan', 'inf', '-inf', '1' + '0' * 400]),
    ('--learning-rate', ['-1', '0', 'fast', 'nan', 'inf', '-inf', '1e39']),
    ('--alpha', ['-1', 'abc', 'nan', 'inf', '1e39']),
    ('--beta', ['-0.5', 'abc', 'nan', 'inf']),
    ('--tv-weight', ['-1', 'abc', 'nan', 'inf']),
    ('--noise-ratio', ['-0.1', '1.5', '2', 'abc', 'nan', 'inf']),
    ('--save-every', ['-1', 'x', '2.5', 'nan', 'inf']),
    ('--print-every', ['-1', 'nan']),
    ('--seed', ['-1', 'nan', '4294967296', '1e40']),
    ('--style-blend-weights', ['-1', 'nan', 'inf']),
]


@pytest.mark.parametrize('option, value', [(option, value) for option, values in BAD_NUMBERS
                                           for value in values])
def test_bad_number_exits_2_with_one_line_naming_the_option(capsys, tmp_path, pics, tiny_vgg_file,
                                                            option, value):
    # --option=value, so that argparse does not take '-inf' for an option.
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out',
                                              '%s=%s' % (option, value)))
    assert code == 2
    one_error_line(err, option, value)
    assert not (tmp_path / 'out' / 'generated_image.jpg').exists()


@pytest.mark.parametrize('option', ['--alpha', '--beta', '--tv-weight', '--noise-ratio',
                                    '--save-every', '--print-every'])
def test_zero_is_accepted_where_it_means_something(option):
    """The rejections above are not over-eager: 0 is a valid weight, ratio or 'never'."""
    options = nst_cli.build_parser(ag.CONTENT_LAYER, ag.STYLE_LAYERS).parse_args(['%s=0' % option])
    assert getattr(options, option[2:].replace('-', '_')) == 0


def test_the_largest_seed_numpy_takes_is_accepted():
    options = nst_cli.build_parser(ag.CONTENT_LAYER, ag.STYLE_LAYERS).parse_args(
        ['--seed', str(2 ** 32 - 1)])
    assert options.seed == 2 ** 32 - 1


def test_a_named_pipe_as_the_model_is_refused_not_waited_on(capsys, tmp_path, pics):
    """Opening a FIFO for reading waits for a writer: --model naming one is refused at once.
    (Should it wait, a writer comes after 20 s and the test fails instead of hanging.)"""
    fifo = str(tmp_path / 'weights.mat')
    os.mkfifo(fifo)
    unblock = threading.Timer(20, lambda: open(fifo, 'wb').close())
    unblock.start()
    try:
        line = usage_error(capsys, ['--model', fifo, '--no-download', '--content', pics.content,
                                    '--style', pics.style, '--output-dir', str(tmp_path / 'o')])
    finally:
        unblock.cancel()
    assert fifo in line and 'named pipe' in line


def test_a_newline_in_a_path_stays_on_the_one_line(capsys, tmp_path, pics, tiny_vgg_file):
    missing = str(tmp_path / 'miss\ning.jpg')
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out',
                                              '--content', missing))
    assert code == 2
    one_error_line(err, str(tmp_path / 'miss\\ning.jpg'), 'not found')


@pytest.mark.parametrize('scale', ['1e23', '1000'])
def test_a_style_scale_too_large_for_memory_is_refused_before_anything_runs(
        capsys, tmp_path, pics, tiny_vgg_file, scale):
    """The 80x60 style scaled 1000 times for a 64x48 result is 64000x48000 pixels, about 23
    GiB while it is made (1e23: more pixels than any memory): under --max-memory 1G, one line
    naming the option, exit 2, before the weights are read or anything is written."""
    out_dir = tmp_path / 'out'
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, out_dir, '--style-scale',
                                              scale, '--max-memory', '1G'))
    assert code == 2
    one_error_line(err, '--style-scale', pics.style, 'the budget')
    assert not out_dir.exists() or os.listdir(out_dir) == []


def test_blend_weights_must_match_the_styles(capsys, pics, tmp_path, tiny_vgg_file):
    line = usage_error(capsys, ['--model', tiny_vgg_file, '--no-download',
                                '--content', pics.content,
                                '--style', pics.style, pics.style2, '--style-blend-weights', '1',
                                '--output-dir', str(tmp_path / 'out')])
    assert '--style-blend-weights' in line


@pytest.mark.parametrize('styles, weights, words', [
    (2, ['1'], '1 weights for 2 style images'),
    (1, ['1', '2'], '2 weights for 1 style images'),
    (3, ['0.5', '0.5'], '2 weights for 3 style images'),
    (2, ['0', '0'], 'sum to 0'),
])
def test_blend_weights_not_matching_the_styles(capsys, tmp_path, pics, tiny_vgg_file, styles,
                                               weights, words):
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out', '--style',
                                              *[pics.style] * styles, '--style-blend-weights',
                                              *weights))
    assert code == 2
    one_error_line(err, '--style-blend-weights', words)


# ----------------------------------------------------------------------------------------------
# Image files that cannot be read
# ----------------------------------------------------------------------------------------------


def cut_in_half(path, fmt, pixels):
    """Write pixels in fmt, check the whole file decodes, then cut it to half its length."""
    Image.fromarray(pixels).save(path, format=fmt)
    read_rgb(path)  # the intact file is fine: the error below comes from the cut
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:len(data) // 2])


def make_bad_image(kind, folder):
    """(path, words of the expected problem) for one kind of unreadable image file."""
    noisy = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    path = folder / {'missing': 'nowhere.jpg', 'empty': 'empty.jpg', 'not an image': 'notes.jpg',
                     'truncated JPEG': 'cut.jpg', 'truncated PNG': 'cut.png',
                     'directory': 'folder.png'}[kind]
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'not an image':
        path.write_text('These are my notes, not a picture.\n' * 20)
    elif kind == 'truncated JPEG':
        cut_in_half(path, 'JPEG', noisy)
    elif kind == 'truncated PNG':
        cut_in_half(path, 'PNG', noisy)
    elif kind == 'directory':
        path.mkdir()
    words = {'missing': 'not found', 'empty': 'empty', 'not an image': 'not an image',
             'truncated JPEG': 'truncated', 'truncated PNG': 'truncated',
             'directory': 'directory'}[kind]
    return str(path), words


@pytest.mark.parametrize('option', ['--content', '--style', '--initial'])
@pytest.mark.parametrize('kind', ['missing', 'empty', 'not an image', 'truncated JPEG',
                                  'truncated PNG', 'directory'])
def test_unreadable_image_exits_2_with_one_line(capsys, tmp_path, pics, kind, option):
    path, words = make_bad_image(kind, tmp_path)
    out_dir = tmp_path / 'out'
    # No weights file and --no-download: images are checked first, before any weights or
    # download (else this would be the weights message).
    missing_model = tmp_path / 'no-weights.mat'
    argv = base_args(missing_model, pics, out_dir, option, path)
    code, _, err = run_main(capsys, argv)
    assert code == 2
    one_error_line(err, path, words)
    assert os.listdir(out_dir) == []


def test_second_style_unreadable_is_named(capsys, tmp_path, pics):
    path, _ = make_bad_image('truncated PNG', tmp_path)
    code, _, err = run_main(capsys, base_args('unused.mat', pics, tmp_path / 'out', '--style',
                                              pics.style, path))
    assert code == 2
    line = one_error_line(err, path, 'truncated')
    assert pics.style not in line


def test_decompression_bomb_is_an_error_not_a_traceback(capsys, tmp_path, pics, monkeypatch):
    # Pillow refuses images of more than 2 * MAX_IMAGE_PIXELS with DecompressionBombError,
    # which is not an OSError; a limit below the 32x24 content triggers it.
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    code, _, err = run_main(capsys, base_args('unused.mat', pics, tmp_path / 'out'))
    assert code == 2
    one_error_line(err, pics.content, 'too large')


def test_odd_images_run_through_the_cli(capsys, tmp_path, tiny_vgg_file):
    """A 16-bit grey content, a palette style with transparency and an RGBA initial image are
    accepted by a whole run (their decoding is checked pixel by pixel in test_images.py)."""
    grey16 = (np.linspace(0, 65535, WIDTH * HEIGHT).reshape(HEIGHT, WIDTH)).astype(np.uint16)
    content = str(tmp_path / 'grey16.png')
    Image.fromarray(grey16).save(content)
    style = Image.fromarray(np.arange(40 * 30, dtype=np.uint8).reshape(30, 40) % 4, 'P')
    style.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    style.info['transparency'] = bytes([0, 255, 128, 255])
    style.save(str(tmp_path / 'style.png'))
    rgba = np.dstack([smooth_picture(WIDTH, HEIGHT), np.full((HEIGHT, WIDTH), 128, np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(str(tmp_path / 'initial.png'))
    for path, mode in ((content, 'I;16'), (tmp_path / 'style.png', 'P'),
                       (tmp_path / 'initial.png', 'RGBA')):
        assert Image.open(path).mode == mode
    pics = SimpleNamespace(content=content, style=str(tmp_path / 'style.png'))
    code, out, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out', '--initial',
                                                tmp_path / 'initial.png', '--iterations', '1'))
    assert code == 0, err
    assert read_rgb(tmp_path / 'out' / 'generated_image.jpg').shape == (HEIGHT, WIDTH, 3)


# ----------------------------------------------------------------------------------------------
# Weight files
# ----------------------------------------------------------------------------------------------


def scale_kernels(layers, factor):
    written = synthetic.weights_by_name(layers)
    for name in CONV_NAMES:
        layers = synthetic.replace_kernel(layers, name,
                                          kernel=written[name][0] * np.float32(factor))
    return layers


def make_bad_weights(kind, folder):
    """(path, words the message must hold) for one kind of wrong weights file."""
    path = str(folder / 'imagenet-vgg-verydeep-19.mat')
    write = synthetic.write_vgg19_mat
    if kind == 'truncated':
        write(path, with_fc=False)
        synthetic.truncate_file(path, 0.5)
        return path, ['truncated']
    if kind == 'HTML page':
        synthetic.write_html_page(path)
        return path, ['HTML']
    if kind == 'empty':
        Path(path).write_bytes(b'')
        return path, ['empty']
    if kind == 'directory':
        os.mkdir(path)
        return path, ['directory']
    if kind == 'layer renamed':
        write(path, layers_override=lambda ls: synthetic.rename_layer(ls, 'conv3_2', 'conv3_x'))
        return path, ['conv3_2', 'conv3_x']
    if kind == 'layer missing':
        write(path, layers_override=lambda ls: synthetic.remove_layer(ls, 'conv2_2'))
        return path, ['conv2_2']
    if kind == 'kernel of wrong shape':
        write(path, layers_override=lambda ls: synthetic.replace_kernel(
            ls, 'conv2_1', shape=(5, 5, TINY[0], TINY[1])))
        return path, ['conv2_1', '(5, 5, 4, 8)']
    if kind == 'kernel with wrong input channels':
        write(path, layers_override=lambda ls: synthetic.replace_kernel(
            ls, 'conv3_1', shape=(3, 3, TINY[1] + 2, TINY[2])))
        return path, ['conv3_1']
    if kind == 'no layers variable':
        write(path, omit_layers=True)
        return path, ['layers']
    if kind == 'old MatConvNet format':
        write(path, layout='old')
        return path, ['old MatConvNet', VGG_URL]  # says what it is and where the right file is
    raise ValueError(kind)


@pytest.mark.parametrize('kind', ['truncated', 'HTML page', 'empty', 'directory',
                                  'layer renamed', 'layer missing', 'kernel of wrong shape',
                                  'kernel with wrong input channels', 'no layers variable',
                                  'old MatConvNet format'])
def test_wrong_weights_file_exits_2_with_one_line(capsys, tmp_path, pics, kind, monkeypatch):
    path, words = make_bad_weights(kind, tmp_path)
    monkeypatch.setattr(download, 'download_vgg_model', pytest.fail)  # never replaced by a download
    monkeypatch.setattr(vgg, 'VGGBuilder', pytest.fail)               # refused before the graph
    code, _, err = run_main(capsys, base_args(path, pics, tmp_path / 'out'))
    assert code == 2
    one_error_line(err, path, *words)


def test_missing_weights_with_no_download_names_path_url_and_checksum(capsys, tmp_path, pics):
    path = tmp_path / 'pretrained-model' / 'imagenet-vgg-verydeep-19.mat'
    code, _, err = run_main(capsys, base_args(path, pics, tmp_path / 'out'))
    assert code == 2
    one_error_line(err, path, VGG_URL, VGG_SHA256)
    assert not path.parent.exists()  # nothing was downloaded or created


# ----------------------------------------------------------------------------------------------
# The output folder
# ----------------------------------------------------------------------------------------------


def test_output_dir_that_is_a_file(capsys, tmp_path, pics, tiny_vgg_file):
    target = tmp_path / 'results'
    target.write_text('a file, not a folder')
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, target))
    assert code == 2
    one_error_line(err, '--output-dir', target, 'not a folder')
    assert target.read_text() == 'a file, not a folder'


def test_output_dir_under_a_file_cannot_be_created(capsys, tmp_path, pics, tiny_vgg_file):
    # The portable "cannot be written" case: it fails for root too (permissions would not).
    blocker = tmp_path / 'results'
    blocker.write_text('a file')
    target = blocker / 'run1'
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, target))
    assert code == 2
    one_error_line(err, '--output-dir', target, 'cannot create')


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_output_dir_not_writable(capsys, tmp_path, pics, tiny_vgg_file):
    target = tmp_path / 'results'
    target.mkdir()
    target.chmod(0o500)
    try:
        code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, target))
    finally:
        target.chmod(0o700)
    assert code == 2
    one_error_line(err, '--output-dir', target, 'not writable')


# ----------------------------------------------------------------------------------------------
# Memory: a run too large for this machine is refused before anything runs
# ----------------------------------------------------------------------------------------------


def parse_bytes(text):
    number, unit = text.split()
    return float(number) * 1024 ** ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'].index(unit)


def test_huge_width_is_refused_at_once(capsys, tmp_path, pics, tiny_vgg_file, meminfo_available,
                                       monkeypatch):
    def no_graph(*args, **kwargs):
        raise AssertionError('the graph must not be built')
    monkeypatch.setattr(vgg, 'VGGBuilder', no_graph)
    monkeypatch.setattr(ag, 'build_style_transfer', no_graph)
    for name in ('resize_image', 'fit_image'):  # fail at once rather than allocate 22 GB
        real = getattr(images, name)

        def small_only(image, width, height, real=real):
            assert width * height < 10 ** 7, 'an image was resized to %dx%d' % (width, height)
            return real(image, width, height)
        # Wherever the project's modules imported it.
        for module in [m for key, m in list(sys.modules.items()) if key.split('.')[0] == 'nst']:
            if getattr(module, name, None) is real:
                monkeypatch.setattr(module, name, small_only)
    started = time.monotonic()
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out', '--width',
                                              100000))
    elapsed = time.monotonic() - started
    assert code == 2
    line = one_error_line(err, '--width', '100000')
    assert elapsed < 5  # resizing the images to 100000x75000 alone would take far longer
    assert os.listdir(tmp_path / 'out') == []
    # The line names the estimate and the limit; the estimate is at least the float32 input
    # image alone (100000 x 75000 x 3 x 4 bytes = 90 GB), the limit is this machine's.
    sizes = re.findall(r'(\d+(?:\.\d+)? [KMGTP]?i?B)\b', line)
    assert len(sizes) == 2, line
    estimate, limit = (parse_bytes(s) for s in sizes)
    assert estimate >= 100000 * 75000 * 3 * 4
    assert estimate > limit
    assert limit <= meminfo_available * 1.1 + 64 * 2 ** 20


def test_limit_is_compared_with_the_estimate(capsys, tmp_path, pics, tiny_vgg_file, monkeypatch):
    """Just below the estimate: refused, naming both; at the estimate: accepted; unknown: run."""
    needed = memory.estimate_run_memory(HEIGHT, WIDTH, TINY)
    monkeypatch.setattr(memory, 'available_memory', lambda: needed - 1)
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'a'))
    assert code == 2
    one_error_line(err, '--width', memory.format_bytes(needed - 1))
    for available in (needed, None):
        monkeypatch.setattr(memory, 'available_memory', lambda: available)
        code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'b',
                                                  '--iterations', 1))
        assert code == 0, err


def test_course_width_400_is_accepted(capsys, tmp_path, pics, tiny_vgg_file):
    code, out, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out',
                                                '--width', 400, '--iterations', 1))
    assert code == 0, err
    assert read_rgb(tmp_path / 'out' / 'generated_image.jpg').shape == (300, 400, 3)


# ----------------------------------------------------------------------------------------------
# End-to-end runs
# ----------------------------------------------------------------------------------------------


def test_several_styles_blend_their_gram_matrices(cli, spy, pics, reference):
    """Two styles with weights 2 0 give exactly the single-style run (the weights are
    normalised and blend the Gram matrices); weights 1 3 give another style cost; the summary
    shows every style."""
    only_first = cli('--style-blend-weights', '2', '0', styles=[pics.style, pics.style2],
                     iterations=1, name='2-0')
    blended = cli('--style-blend-weights', '1', '3', styles=[pics.style, pics.style2],
                  iterations=1, name='1-3')
    assert spy[0].kwargs['blend_weights'] == pytest.approx([1.0, 0.0])
    assert spy[1].kwargs['blend_weights'] == pytest.approx([0.25, 0.75])
    # Each style is fitted (scaled and centre-cropped) to the result's size.
    assert [s.shape for s in spy[1].style_images] == [(1, HEIGHT, WIDTH, 3)] * 2
    np.testing.assert_array_equal(spy[1].input_image, reference.spy.input_image)  # same start
    single_costs = reference.blocks()[0][1:]
    (_, *first_costs), = only_first.blocks()
    (_, *blend_costs), = blended.blocks()
    assert first_costs == pytest.approx(single_costs, rel=1e-6)
    assert blend_costs[2] != pytest.approx(single_costs[2], rel=1e-2)  # the style cost
    # summary.png: content, the styles and the result side by side: 4 panels instead of 3.
    single_w, single_h = image_size(reference.dir / 'summary.png')
    blend_w, blend_h = image_size(blended.dir / 'summary.png')
    assert blend_w / blend_h > 1.2 * single_w / single_h


def test_lbfgs_cost_falls_and_pixels_stay_in_range(cli, spy, pics):
    """L-BFGS-B from a saturated image: the cost falls at every iteration and the image never
    leaves 0..255, so nothing needs clipping."""
    run = cli('--optimizer', 'lbfgs', '--initial', pics.style2, '--print-every', '1',
              iterations=12, name='lbfgs')
    totals = [b[1] for b in run.blocks()]
    assert len(totals) == 12
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(totals, totals[1:]))
    assert totals[-1] < totals[0] / 5
    result = spy[0].result
    pixels = result.image + MEANS
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    history = [h[1] for h in result.history]
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(history, history[1:]))
    assert history[-1] < history[0]
    assert image_size(run.dir / 'generated_image.jpg') == (WIDTH, HEIGHT)


@pytest.mark.parametrize('stage, iteration, size, expected', [
    (2, 0, (64, 48), 'the checkpoint is at stage 3, the run has 2 stages'),
    (1, 10 ** 6, (128, 96), 'the checkpoint is at iteration 1000000 of stage 2, which has 50'),
    (0, 3, (80, 60), "the checkpoint's image is 80x60, its stage is 64x48"),
])
def test_a_checkpoint_that_does_not_fit_the_runs_stages_is_refused(stage, iteration, size,
                                                                   expected):
    """check_resumed, against the plan of a two-stage run (64x48 for 50 iterations, then
    128x96 for 50): a stage the plan lacks, an iteration past the stage's last (a run would
    say it had done a million iterations of 100) or an image of another size."""
    plan = [stages.Stage(0, 2, 64, 48, 50), stages.Stage(1, 2, 128, 96, 50)]
    resumed = checkpoint.Checkpoint(
        stage=stage, iteration=iteration, completed=iteration,
        image=np.zeros((1, size[1], size[0], 3), np.float32), adam=None, average=None,
        rng_state=None, options={}, history=np.zeros((0, 4)), stage_starts=[])
    options = nst_cli.build_parser(ag.CONTENT_LAYER, ag.STYLE_LAYERS).parse_args(
        ['--resume', 'DIR'])
    with pytest.raises(nst_cli.CheckpointError) as info:
        nst_cli.check_resumed(options, plan, resumed)
    assert str(info.value) == '--resume DIR: ' + expected
    resumed = resumed._replace(stage=1, iteration=50, image=np.zeros((1, 96, 128, 3)))
    nst_cli.check_resumed(options, plan, resumed)  # the last stage's end: it fits


def test_lbfgs_that_ends_before_its_iterations_saves_a_checkpoint_and_resumes(
        capsys, tmp_path, pics, tiny_vgg_file):
    """With no cost to lower (--alpha 0 --beta 0: J = 0, its gradient 0) L-BFGS ends before
    its first iteration: the run ends normally (exit 0), its checkpoint says the 0 iterations
    run, and resuming goes on with the stage, which ends again at once."""
    out_dir = tmp_path / 'out'
    args = base_args(tiny_vgg_file, pics, out_dir, '--optimizer', 'lbfgs', '--alpha', 0,
                     '--beta', 0, '--iterations', 5)
    code, _, err = run_main(capsys, args)
    assert code == 0, err
    saved = checkpoint.load_checkpoint(str(out_dir))
    assert (saved.stage, saved.iteration, saved.completed) == (0, 0, 0)
    code, out, err = run_main(capsys, ['--resume', str(out_dir), '--no-progress'])
    assert code == 0, err
    assert 'Saved' in out


def test_preserve_colors_keeps_the_content_chroma(cli, spy, pics):
    run = cli('--preserve-colors', '--save-every', '10', iterations=11, name='colours')
    content = Image.open(pics.content).convert('RGB').resize((WIDTH, HEIGHT))
    content_ycc = np.asarray(content.convert('YCbCr')).astype(int)
    raw = np.clip(spy[0].result.image[0] + MEANS[0], 0, 255).astype(np.uint8)
    raw_ycc = np.asarray(Image.fromarray(raw).convert('YCbCr')).astype(int)
    # The control: the styled image itself has other colours.
    assert np.abs(raw_ycc[..., 1:] - content_ycc[..., 1:]).mean() > 5
    for i in (0, 10):
        pixels = read_rgb(run.dir / ('%d.png' % i))
        ycc = np.asarray(Image.fromarray(pixels).convert('YCbCr')).astype(int)
        # Pixels where RGB clipped cannot carry the chroma; the rest must.
        representable = np.all((pixels > 0) & (pixels < 255), axis=-1)
        assert representable.mean() > 0.5
        chroma_error = np.abs(ycc[..., 1:] - content_ycc[..., 1:])[representable]
        assert chroma_error.max() <= 2, i
    # The final image: the luminance of the styled result, the content's chroma.
    last = read_rgb(run.dir / '10.png')
    final = np.asarray(Image.fromarray(last).convert('YCbCr')).astype(int)
    representable = np.all((last > 0) & (last < 255), axis=-1)
    assert np.abs(final[..., 0] - raw_ycc[..., 0])[representable].max() <= 2


def test_tv_weight_smooths_the_result(cli, spy, reference):
    """The same run as the reference (TV weight 0) with --tv-weight 100 ends much smoother."""
    smooth = cli('--tv-weight', '100', '--save-every', '10', '--print-every', '10',
                 iterations=REFERENCE_ITERATIONS, name='tv100')
    np.testing.assert_array_equal(spy[0].input_image, reference.spy.input_image)
    assert total_variation(read_rgb(smooth.dir / '10.png')) < 0.3 * total_variation(
        read_rgb(reference.dir / '10.png'))
    # J = 10 J_content + 40 J_style + tv_weight * TV(image), TV the sum of squared differences
    # between neighbouring pixels (the image after the printed iteration is the one returned).
    (i, total, content_cost, style_cost) = smooth.blocks()[-1]
    assert i == 10
    tv_term = total - 10 * content_cost - 40 * style_cost
    assert tv_term == pytest.approx(100 * total_variation(spy[0].result.image[0]), rel=1e-3)
    (_, total, content_cost, style_cost) = reference.blocks()[-1]
    assert total == pytest.approx(10 * content_cost + 40 * style_cost, rel=1e-5)


def test_max_pooling(cli, spy):
    run = cli('--pooling', 'max', iterations=1, name='max')
    assert spy[0].model_kwargs['pooling'] == 'max'
    ops = [op for op, _ in spy[0].ops]
    # The file's own pooling, in the four pools below conv5_1, the deepest layer the costs use.
    assert ops.count('MaxPool') == 4 and 'AvgPool' not in ops
    assert all(np.isfinite(run.blocks()[0][1:]))


def test_initial_image_is_the_starting_point(cli, spy, pics):
    run = cli('--initial', pics.initial, '--learning-rate', '0.001', '--save-every', '1',
              iterations=1, name='initial')
    initial = read_rgb(pics.initial).astype(int)
    np.testing.assert_allclose(spy[0].input_image[0] + MEANS[0], initial, atol=1e-3)
    first = read_rgb(run.dir / '0.png').astype(int)
    assert np.abs(first - initial).max() <= 1  # one step of 0.001, rounded down on saving
    assert np.abs(first - read_rgb(pics.content).astype(int)).mean() > 20  # not the content


def test_output_size_follows_the_content_aspect_ratio(cli, spy, pics):
    """A 200x100 content at --width 64 gives 64x32 images; the styles (4:3 and portrait) are
    fitted to that size."""
    width, height = 64, 32
    run = cli('--save-every', '1', content=pics.wide, styles=[pics.style, pics.style2],
              width=width, iterations=2, name='wide')
    for name in ('0.png', '1.png', 'generated_image.jpg'):
        assert image_size(run.dir / name) == (width, height), name
    assert spy[0].content_image.shape == (1, height, width, 3)
    assert [s.shape for s in spy[0].style_images] == [(1, height, width, 3)] * 2


def test_seed_makes_runs_identical(cli, reference):
    first = cli('--print-every', '1', '--save-every', '1', seed=7, iterations=2, name='seed7')
    again = cli('--print-every', '1', '--save-every', '1', seed=7, iterations=2,
                name='seed7-again')
    assert first.out.replace(str(first.dir), '') == again.out.replace(str(again.dir), '')
    for i in range(2):
        np.testing.assert_array_equal(read_rgb(first.dir / ('%d.png' % i)),
                                      read_rgb(again.dir / ('%d.png' % i)))
    # Another seed (the reference run has seed 0): another start, another result.
    assert first.blocks()[0] != reference.blocks()[0]
    assert not np.array_equal(read_rgb(first.dir / '0.png'), read_rgb(reference.dir / '0.png'))


def test_save_every_and_print_every(cli):
    run = cli('--save-every', '3', '--print-every', '2', iterations=7, name='every')
    assert run.numbered_pngs() == [i for i in range(7) if i % 3 == 0]
    assert [b[0] for b in run.blocks()] == [i for i in range(7) if i % 2 == 0]
    assert run.out.count('Iteration') == 4
    never = cli('--save-every', '0', '--print-every', '0', iterations=3, name='never')
    assert never.numbered_pngs() == []
    assert 'Iteration' not in never.out and 'cost' not in never.out
    assert image_size(never.dir / 'generated_image.jpg') == (WIDTH, HEIGHT)


def colour_pixels(pixels, rgb, tolerance=12):
    return int(np.sum(np.all(np.abs(pixels.astype(int) - rgb) <= tolerance, axis=-1)))


def test_costs_and_summary_plots(reference):
    costs = read_rgb(reference.dir / 'costs.png')
    assert costs.shape[0] > 150 and costs.shape[1] > 200
    # Three curves in matplotlib's first three colours (C0, C1, C2): total, content, style.
    for rgb in ((0x1f, 0x77, 0xb4), (0xff, 0x7f, 0x0e), (0x2c, 0xa0, 0x2c)):
        assert colour_pixels(costs, rgb) > 20, rgb
    summary = read_rgb(reference.dir / 'summary.png')
    width, height = summary.shape[1], summary.shape[0]
    assert width > 2 * height  # content, style and result side by side
    # The style's stripes are shown: its saturated red is there.
    assert colour_pixels(summary, (230, 30, 30), tolerance=30) > 20


def test_layer_options_are_used_and_default_to_the_courses(cli, spy, reference):
    chosen = cli('--style-layers', 'conv1_1:1,conv2_1:0', '--content-layer', 'conv3_2',
                 iterations=1, name='chosen-layers')
    assert spy[0].kwargs['style_layers'] == [('conv1_1', 1.0), ('conv2_1', 0.0)]
    assert spy[0].kwargs['content_layer'] == 'conv3_2'
    # Other layers, other costs of the same start.
    np.testing.assert_array_equal(spy[0].input_image, reference.spy.input_image)
    assert chosen.blocks()[0][2] != pytest.approx(reference.blocks()[0][2], rel=1e-3)
    assert chosen.blocks()[0][3] != pytest.approx(reference.blocks()[0][3], rel=1e-3)
    # The default run is the course's: conv4_2, STYLE_LAYERS, alpha 10, beta 40, Adam 2.0,
    # average pooling, no TV.
    default = reference.spy
    assert default.kwargs['content_layer'] == 'conv4_2'
    assert [(n, pytest.approx(w)) for n, w in default.kwargs['style_layers']] == \
        COURSE_STYLE_LAYERS
    assert (default.kwargs['alpha'], default.kwargs['beta']) == (10, 40)
    assert default.kwargs['learning_rate'] == 2.0 and default.kwargs['tv_weight'] == 0
    ops = [op for op, _ in default.ops]
    assert ops.count('AvgPool') == 4 and 'MaxPool' not in ops  # the pools below conv5_1


@pytest.mark.parametrize('support', [None, 'avx512', 'amx'])
def test_bfloat16_precision(cli, spy, monkeypatch, support):
    """bfloat16 runs the convolutions in bfloat16 where the CPU can; it says when it falls
    back to float32 (no bfloat16 arithmetic) and when it may be slower (no AMX)."""
    if support and runtime.bfloat16_support() is None:
        pytest.skip('this CPU has no bfloat16 arithmetic')
    monkeypatch.setattr(runtime, 'bfloat16_support', lambda: support)
    run = cli('--precision', 'bfloat16', '--print-every', '1', name='bf16')
    blocks = run.blocks()
    assert len(blocks) == 3
    assert all(np.isfinite(b[1:]).all() and min(b[1:]) > 0 for b in blocks)
    conv_types = {dtype for op, dtype in spy[0].ops if op == 'Conv2D'}
    lines = run.err.splitlines()
    if support is None:
        assert conv_types == {tf.float32}
        assert len(lines) == 1 and 'using float32' in lines[0]
    else:
        assert conv_types == {tf.bfloat16}
        if support == 'avx512':
            assert len(lines) == 1 and 'may be slower than float32' in lines[0]
        else:
            assert run.err == ''


@pytest.mark.parametrize('support, no_tune, measured, why', [
    (None, False, 'float32', 'this CPU has no AVX512_BF16 or AMX-BF16'),
    ('amx', True, 'float32', 'not measured: --no-tune or NST_TUNE=0'),
    ('amx', False, 'bfloat16', 'as measured'),
    ('avx512', False, 'float32', 'as measured')])
def test_precision_auto_says_what_it_chose_and_why(monkeypatch, capsys, support, no_tune,
                                                   measured, why):
    from nst import tuning
    monkeypatch.setattr(runtime, 'bfloat16_support', lambda: support)
    monkeypatch.delenv('NST_TUNE', raising=False)
    asked = []
    monkeypatch.setattr(tuning, 'choose_precision',
                        lambda enabled, log: asked.append(enabled) or measured)
    options = SimpleNamespace(precision='auto', no_tune=no_tune)
    assert nst_cli.resolve_precision(options) == measured
    assert asked == [False if no_tune else None]
    line, = capsys.readouterr().err.splitlines()
    assert line.startswith('--precision auto: %s (' % measured) and why in line


@pytest.mark.parametrize('no_tune, measured, speedup, note', [
    (True, None, None, 'not measured: --no-tune or NST_TUNE=0'),
    (False, 'float32', 0.48, 'ran at 0.48x the float32 speed'),
    (False, 'float32', None, 'could not be timed'),
    (False, 'float32', 1.1, None),   # faster, if not by the 1.2x auto asks
    (False, 'bfloat16', 1.94, None)])
def test_bfloat16_on_avx512_bf16_says_so_only_where_measured_slower(
        monkeypatch, capsys, no_tune, measured, speedup, note):
    """AVX512_BF16 without AMX: half the float32 speed on our Xeon, twice it on a Zen 4 EPYC.
    The run stays in bfloat16 as asked; the note comes where the measurement (or its absence)
    says bfloat16 may be the slower one."""
    from nst import tuning
    monkeypatch.setattr(runtime, 'bfloat16_support', lambda: 'avx512')
    monkeypatch.delenv('NST_TUNE', raising=False)
    asked = []
    monkeypatch.setattr(tuning, 'choose_precision',
                        lambda enabled: asked.append(enabled) or measured)
    monkeypatch.setattr(tuning, 'bfloat16_speedup', lambda: speedup)
    options = SimpleNamespace(precision='bfloat16', no_tune=no_tune)
    assert nst_cli.resolve_precision(options) == 'bfloat16'
    assert asked == ([] if no_tune else [None])
    lines = capsys.readouterr().err.splitlines()
    if note is None:
        assert lines == []
    else:
        line, = lines
        assert line.startswith('--precision bfloat16: ') and note in line
        assert 'may be slower than float32' in line


@pytest.mark.parametrize('variable, value, says', [
    ('NST_TUNE', 'garbage', "NST_TUNE: 'garbage' is not one of 0, false"),
    ('NST_TUNE', '2', "NST_TUNE: '2' is not one of"),
    ('TF_NUM_INTRAOP_THREADS', '-1', "TF_NUM_INTRAOP_THREADS: '-1' is not a number of threads"),
    ('TF_NUM_INTRAOP_THREADS', ' -3 ', "TF_NUM_INTRAOP_THREADS: ' -3 ' is not a number")])
def test_a_bad_environment_variable_is_a_usage_error_naming_it(capsys, tmp_path, pics,
                                                               monkeypatch, variable, value,
                                                               says):
    """NST_TUNE was taken as on whatever it said; a negative TF_NUM_INTRAOP_THREADS aborts the
    process (a C++ check) when the first session is made. One line, exit 2, nothing written."""
    monkeypatch.setenv(variable, value)
    line = usage_error(capsys, ['--model', str(tmp_path / 'none.mat'), '--no-download',
                                '--content', pics.content, '--style', pics.style,
                                '--no-progress', '--output-dir', str(tmp_path / 'out')])
    assert line.startswith('error: ' + says)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('variable, value', [
    ('TF_NUM_INTRAOP_THREADS', '-1_0'), ('TF_NUM_INTRAOP_THREADS', '-99999999999'),
    ('TF_NUM_INTRAOP_THREADS', '-\u0663'), ('TF_NUM_INTRAOP_THREADS', 'garbage'),
    ('TF_NUM_INTRAOP_THREADS', '0'), ('TF_NUM_INTEROP_THREADS', '-1'), ('NST_TUNE', ' OFF '),
    ('NST_TUNE', '')])
def test_environment_values_tensorflow_ignores_or_takes_are_not_refused(monkeypatch, variable,
                                                                         value):
    """TensorFlow ignores an intra-op count that is not a 32-bit ASCII integer (it runs), our
    sessions set the inter-op count themselves, and NST_TUNE takes any case and spacing."""
    monkeypatch.setenv(variable, value)
    nst_cli.check_environment()


@pytest.mark.parametrize('variable', ['ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA'])
def test_the_note_of_a_cap_names_the_variable_that_set_it(monkeypatch, capsys, variable):
    for name in ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, 'avx2')
    monkeypatch.setattr(runtime, 'cpu_flags', lambda: {'avx2', 'avx512f', 'avx512_bf16'})
    monkeypatch.setattr(runtime, 'onednn_enabled', lambda: True)
    options = SimpleNamespace(precision='bfloat16', no_tune=True)
    assert nst_cli.resolve_precision(options) == 'float32'
    line, = capsys.readouterr().err.splitlines()
    assert line == ('--precision bfloat16: %s=AVX2 keeps oneDNN below AVX512_BF16; using '
                    'float32' % variable)


def test_bfloat16_under_a_onednn_cap_below_it_runs_in_float32(tiny_vgg_file, pics, tmp_path,
                                                              child_env):
    """ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512_BF16 CPU leaves oneDNN no bfloat16 kernels: its
    bfloat16 matmul aborts the process (measured by --precision auto) and its bfloat16
    convolutions fail. Both precisions then run in float32 and say why, exit 0."""
    if not runtime.cpu_flags() & {'avx512_bf16', 'amx_bf16'}:
        pytest.skip('this CPU has no bfloat16 arithmetic for a cap to keep oneDNN from')
    env = child_env(ONEDNN_MAX_CPU_ISA='AVX2', NST_TUNE='1',
                    NST_CACHE_DIR=str(tmp_path / 'cache'))
    children = {precision: subprocess.Popen(
        [sys.executable, SCRIPT, *cli_argv(tiny_vgg_file, pics, tmp_path / precision,
                                           ['--precision', precision], iterations=1)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
        for precision in ('auto', 'bfloat16')}
    for precision, child in children.items():
        _, err = child.communicate(timeout=180)
        assert child.returncode == 0 and 'Traceback' not in err, err
        assert 'ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN below AVX512_BF16' in err
        assert ('--precision auto: float32 (' if precision == 'auto'
                else '--precision bfloat16: ') in err
        assert precision == 'auto' or '; using float32' in err


def test_progress_bar_next_to_the_course_lines(reference):
    err = reference.err
    assert '%d/%d' % (REFERENCE_ITERATIONS, REFERENCE_ITERATIONS) in err
    assert re.search(r'\d\d:\d\d<\d\d:\d\d', err)  # elapsed < remaining
    assert 'J=' in err and 'content=' in err and 'style=' in err
    # stdout keeps the course's lines intact, and nothing else.
    assert len(reference.out.splitlines()) == 4 * REFERENCE_ITERATIONS + 1
    assert reference.out.splitlines()[-1].startswith('Saved ')
    assert reference.numbered_pngs() == [0, 5, 10]


# ----------------------------------------------------------------------------------------------
# Faults during a run
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def saved(monkeypatch):
    """Spy on nst.images.save_pixels: {file name: the pixels handed to it}, in call order."""
    calls = {}
    real = images.save_pixels

    def spy(path, pixels):
        calls[os.path.basename(path)] = np.array(pixels, copy=True)
        return real(path, pixels)

    monkeypatch.setattr(images, 'save_pixels', spy)
    return calls


def ctrl_c_after_saving(monkeypatch, name):
    """Make the run press Ctrl-C (SIGINT) right after it writes the image called name (e.g.
    '2.png'). Returns the real images.save_pixels, to put back."""
    real = images.save_pixels

    def save_then_ctrl_c(path, pixels):
        real(path, pixels)
        if os.path.basename(path) == name:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(images, 'save_pixels', save_then_ctrl_c)
    return real


def test_ctrl_c_keeps_the_latest_image(capsys, tmp_path, pics, tiny_vgg_file, saved, monkeypatch):
    """SIGINT while iteration 2 is being saved: the run stops after it, and generated_image.jpg
    holds exactly the pixels of the latest saved iteration."""
    ctrl_c_after_saving(monkeypatch, '2.png')
    out_dir = tmp_path / 'out'
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, out_dir, '--iterations', 1000,
                                              '--save-every', 1))
    assert code == 130
    line = one_error_line(err, 'Interrupted', out_dir / 'generated_image.jpg')
    numbered = sorted(int(name[:-4]) for name in saved if re.fullmatch(r'\d+\.png', name))
    assert numbered == list(range(numbered[-1] + 1)) and numbered[-1] < 10
    assert 'after %d iterations' % (numbered[-1] + 1) in line
    latest = saved['%d.png' % numbered[-1]]
    np.testing.assert_array_equal(saved['generated_image.jpg'], latest)
    np.testing.assert_array_equal(read_rgb(out_dir / ('%d.png' % numbered[-1])), latest)
    # On disk, JPEG-coded: the 8x8 block means (what JPEG keeps of a noisy image) match.
    assert np.abs(block_means(read_rgb(out_dir / 'generated_image.jpg'))
                  - block_means(latest)).mean() < 3
    # The first iteration's image is not the latest one (the run did move).
    assert not np.array_equal(saved['0.png'], latest)


@pytest.mark.parametrize('cause', ['huge learning rate', 'weights that overflow'])
def test_diverging_run_keeps_the_last_finite_image(capsys, tmp_path, pics, tiny_vgg_file, saved,
                                                   cause):
    """A non-finite cost stops the run: exit 1, one line, and generated_image.jpg is the last
    image whose cost was finite. Started from a known image (--initial), that is the start:

    - learning rate 1e30: Adam's first step moves every pixel by about 1e30, whose activations
      square to more than float32 holds, so the cost after one step is inf;
    - every kernel scaled by 1e10: the activations overflow through the 16 layers, so even the
      starting image's cost is not finite.
    """
    model, extra = tiny_vgg_file, ['--learning-rate', '1e30']
    if cause == 'weights that overflow':
        model = str(tmp_path / 'overflow.mat')
        synthetic.write_vgg19_mat(model, with_fc=False,
                                  layers_override=lambda ls: scale_kernels(ls, 1e10))
        extra = []
    out_dir = tmp_path / 'out'
    code, _, err = run_main(capsys, base_args(model, pics, out_dir, '--initial', pics.initial,
                                              '--iterations', 10, '--save-every', 1, *extra))
    assert code == 1
    line = one_error_line(err, 'finite', out_dir / 'generated_image.jpg')
    if cause == 'huge learning rate':
        assert '--learning-rate' in line
        # The step was taken and saved (0.png): far from the start, saturated pixels.
        assert np.abs(saved['0.png'].astype(int) - read_rgb(pics.initial)).mean() > 40
    else:
        assert model in line
    initial = read_rgb(pics.initial).astype(int)
    # Kept: the start (to within the float round trip of the mean subtraction), on disk as JPEG.
    assert np.abs(saved['generated_image.jpg'].astype(int) - initial).max() <= 1
    assert np.abs(read_rgb(out_dir / 'generated_image.jpg').astype(int) - initial).mean() < 3
    assert set(os.listdir(out_dir)) <= {'0.png', 'generated_image.jpg', 'costs.png',
                                        'summary.png', 'checkpoint.npz'}


@pytest.mark.parametrize('iterations, save_every, overflow_named', [
    (3, 1, True), (1, 0, True), (3, 0, False)], ids=['checkpoint', 'end', 'next-cost'])
def test_a_gradient_that_overflows_adam_stops_the_run_with_one_line(
        capsys, tmp_path, pics, tiny_vgg_file, iterations, save_every, overflow_named):
    """--alpha 1e23: the first cost is finite, but its gradient squared leaves float32, so
    Adam's v is inf. The run stops with one line naming the cost weights (exit 1): at the
    first checkpoint, which could not hold Adam's state, or, with none due, when the next
    step's cost is no longer finite (or at the end of the run, which checks Adam's state);
    what is kept is a whole image and, if any, a checkpoint that loads."""
    out_dir = tmp_path / 'out'
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, out_dir, '--alpha', '1e23',
                                              '--iterations', iterations,
                                              '--save-every', save_every))
    assert code == 1
    line = one_error_line(err, '--alpha', out_dir / 'generated_image.jpg')
    assert ('overflowed' in line) == overflow_named
    assert read_rgb(out_dir / 'generated_image.jpg').shape == (HEIGHT, WIDTH, 3)
    if (out_dir / 'checkpoint.npz').exists():
        checkpoint.load_checkpoint(str(out_dir))


# ----------------------------------------------------------------------------------------------
# Downloads through the command line (the loopback server only)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('url', ['not a url', 'http://[::1', 'http://host:abc/x',
                                 'https://localhost:1/a b', 'http://a\nb/', 'ftp://host/x',
                                 'http:///no-host', 'http://a..b/x.mat',
                                 'http://%s.example/x.mat' % ('a' * 70)])
def test_a_malformed_mirror_is_a_usage_error_naming_nst_vgg_url(capsys, tmp_path, pics,
                                                                 monkeypatch, sleeps, url):
    """NST_VGG_URL that is no http(s) address with a host: one line naming the variable, exit
    2, no attempt made (no retries slept) and nothing written beside the weights' path."""
    monkeypatch.setenv('NST_VGG_URL', url)
    dest = tmp_path / 'pretrained-model' / 'imagenet-vgg-verydeep-19.mat'
    line = usage_error(capsys, ['--model', str(dest), '--content', pics.content,
                                '--style', pics.style, '--no-progress',
                                '--output-dir', str(tmp_path / 'out')])
    assert line.startswith('error: NST_VGG_URL: ')
    assert sleeps == []
    assert not dest.parent.exists() or os.listdir(dest.parent) == []


@pytest.mark.parametrize('route', ['/always-drop', '/wrong-bytes', '/missing'])
def test_failed_download_leaves_nothing_and_says_what_happened(capsys, tmp_path, pics, server,
                                                               loopback_only, sleeps,
                                                               monkeypatch, route):
    url = server.url(route)
    monkeypatch.setenv('NST_VGG_URL', url)
    dest = tmp_path / 'pretrained-model' / 'imagenet-vgg-verydeep-19.mat'
    argv = [a for a in base_args(dest, pics, tmp_path / 'out') if a != '--no-download']
    code, _, err = run_main(capsys, argv)
    assert code == 1  # a failure at run time, not bad input
    line = one_error_line(err, dest, url)
    assert 'Downloading' in err and url in err.splitlines()[0]  # says where from, first
    assert server.requests() and all(path == route for path, _, _ in server.requests())
    assert not dest.exists()
    part = Path(str(dest) + '.part')
    if route == '/always-drop':
        assert 'connection closed after %d of %d bytes' % (CUT, SIZE) in line
        assert str(part) in line  # kept for a resume, and it says where
        assert part.read_bytes() == PAYLOAD[:CUT]
        assert len(server.requests()) == 4  # retried
    elif route == '/wrong-bytes':
        assert OTHER_SHA in line and VGG_SHA256 in line  # what was served, what was expected
        assert os.listdir(dest.parent) == []
    else:
        assert 'HTTP 404' in line
        assert os.listdir(dest.parent) == []
        assert server.requests() == [('/missing', None, 404)]  # a 404 is not retried


def test_offline_download_is_a_missing_file(capsys, tmp_path, pics, loopback_only, sleeps,
                                            monkeypatch):
    """No connection at all (here: nothing listens on the loopback port) is like --no-download:
    exit 2, one line with the path, the URL and the checksum, nothing left behind."""
    with socket.socket() as probe:  # a free loopback port, closed again: connections are refused
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    url = 'http://127.0.0.1:%d/imagenet-vgg-verydeep-19.mat' % port
    monkeypatch.setenv('NST_VGG_URL', url)
    dest = tmp_path / 'pretrained-model' / 'imagenet-vgg-verydeep-19.mat'
    argv = [a for a in base_args(dest, pics, tmp_path / 'out') if a != '--no-download']
    code, _, err = run_main(capsys, argv)
    assert code == 2
    line = one_error_line(err, dest, url)
    assert 'cannot be reached' in line and VGG_SHA256 in line
    assert os.listdir(dest.parent) == []


# ----------------------------------------------------------------------------------------------
# Subprocesses: exit codes, stderr, signals
# ----------------------------------------------------------------------------------------------


CTRL_C_WHILE_LOADING = """
import builtins, os, runpy, signal, sys
real_import = builtins.__import__

def importing(name, globals=None, locals=None, fromlist=(), level=0):
    if name == 'nst' and fromlist and 'cli' in fromlist:  # art_generation's own modules
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C now, as the user's would arrive
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = importing
sys.argv = [sys.argv[1], '--help']
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_ctrl_c_while_the_modules_load_is_one_line_and_130(tmp_path, child_env):
    """A Ctrl-C in the first moments of `python art_generation.py`, while its modules load
    (before main can turn it into one line): one line, exit 130, no KeyboardInterrupt
    traceback. The Ctrl-C is sent when art_generation.py imports its package's modules."""
    process = subprocess.run([sys.executable, '-c', CTRL_C_WHILE_LOADING, SCRIPT],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env=child_env())
    assert process.returncode == 130, process.stderr
    assert process.stderr.strip().splitlines() == ['Interrupted; nothing more was saved']
    assert 'usage:' not in process.stdout  # it stopped there


SIGTERM_WHILE_PLOTTING = """
import os, runpy, signal, sys
import matplotlib.figure
real_savefig = matplotlib.figure.Figure.savefig

def savefig(self, *args, **kwargs):  # costs.png, written after the loop: SIGTERM mid-write
    os.kill(os.getpid(), signal.SIGTERM)
    return real_savefig(self, *args, **kwargs)

matplotlib.figure.Figure.savefig = savefig
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_sigterm_after_the_loop_cleans_up_and_exits_143(tmp_path, tiny_vgg_file, pics,
                                                        child_env):
    """A SIGTERM after the loop (while costs.png is written, as the run ends) stops the run at
    once as a second Ctrl-C does: one line, exit 143, and the plot's temporary file removed
    (the default SIGTERM would have killed the process and left it)."""
    out_dir = tmp_path / 'out'
    process = subprocess.run(
        [sys.executable, '-c', SIGTERM_WHILE_PLOTTING, SCRIPT, '--model', tiny_vgg_file,
         '--no-download', '--content', pics.content, '--style', pics.style, '--width', '32',
         '--iterations', '1', '--output-dir', str(out_dir), '--no-progress'],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=child_env())
    assert process.returncode == 143, process.stderr
    assert process.stderr.strip().splitlines() == [
        'Terminated (SIGTERM); nothing more was saved']
    names = os.listdir(out_dir)
    assert 'generated_image.jpg' in names and 'costs.png' not in names
    assert [name for name in names if name.startswith('.')] == []  # no temporary file left


def test_missing_weights_with_no_download(tmp_path, pics, child_env):
    missing = tmp_path / 'nowhere' / 'imagenet-vgg-verydeep-19.mat'
    process = subprocess.run(
        [sys.executable, SCRIPT, '--no-download', '--model', str(missing), '--content',
         pics.content, '--style', pics.style, '--output-dir', str(tmp_path / 'out')],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=child_env(TF_CPP_MIN_LOG_LEVEL='3'))
    assert process.returncode == 2
    assert 'Traceback' not in process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert str(missing) in lines[0] and VGG_URL in lines[0] and VGG_SHA256 in lines[0]
    assert not missing.exists() and not Path(str(missing) + '.part').exists()


@pytest.fixture(scope='module')
def quiet_child(tiny_vgg_file, pics, child_env, tmp_path_factory):
    """A short run without TF_CPP_MIN_LOG_LEVEL, started in the background so that its
    TensorFlow import overlaps the Ctrl-C test's (both tests ask for it)."""
    folder = tmp_path_factory.mktemp('quiet')
    env = child_env()
    env.pop('TF_CPP_MIN_LOG_LEVEL', None)
    process = subprocess.Popen(
        [sys.executable, SCRIPT, '--model', tiny_vgg_file, '--no-download', '--content',
         pics.content, '--style', pics.style, '--width', '32', '--iterations', '1',
         '--output-dir', str(folder / 'out'), '--no-progress'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder, env=env)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def interrupt_when(argv, line_start, cwd, env, signal_number=signal.SIGINT):
    """Run `python art_generation.py argv`, send SIGINT (or signal_number) once a stdout line
    starts with line_start, and return (exit code, stdout, stderr)."""
    process = subprocess.Popen([sys.executable, SCRIPT] + argv, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    seen = threading.Event()
    streams = {'out': [], 'err': []}

    def read(name, stream):
        for line in stream:
            streams[name].append(line)
            if line.startswith(line_start):
                seen.set()

    readers = [threading.Thread(target=read, args=(name, stream), daemon=True)
               for name, stream in (('out', process.stdout), ('err', process.stderr))]
    for reader in readers:
        reader.start()
    try:
        assert seen.wait(timeout=90), 'no %r line: %r' % (line_start, streams)
        process.send_signal(signal_number)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for reader in readers:
        reader.join(timeout=10)
    return code, ''.join(streams['out']), ''.join(streams['err'])


def test_ctrl_c_saves_the_latest_image_and_exits_130(tmp_path, tiny_vgg_file, pics, child_env,
                                                     quiet_child):
    out_dir = tmp_path / 'out'
    code, _, stderr = interrupt_when(
        ['--model', tiny_vgg_file, '--no-download', '--content', pics.content, '--style',
         pics.style, '--width', '48', '--iterations', '1000000',
         # Only iteration 0 is printed: the line must be flushed, not wait in a pipe's buffer.
         '--print-every', '100000', '--save-every', '1', '--output-dir', str(out_dir),
         '--no-progress', '--seed', '0'],
        'Iteration 0 :', tmp_path, child_env(TF_CPP_MIN_LOG_LEVEL='3'))
    assert code == 130, stderr
    assert 'Traceback' not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    final = out_dir / 'generated_image.jpg'
    assert 'generated_image.jpg' in lines[0] and str(out_dir) in lines[0]
    assert image_size(final) == (48, 36)
    image_size(out_dir / 'costs.png')
    image_size(out_dir / 'summary.png')
    # The saved image is the latest one: the last iteration's i.png, JPEG-coded.
    latest = max(int(name[:-4]) for name in os.listdir(out_dir) if re.fullmatch(r'\d+\.png', name))
    assert latest < 1000000 - 1
    assert np.abs(block_means(read_rgb(final))
                  - block_means(read_rgb(out_dir / ('%d.png' % latest)))).mean() < 4


def test_tensorflow_start_up_is_quiet(quiet_child):
    """No TF_CPP_MIN_LOG_LEVEL set: still nothing from TensorFlow on stderr."""
    stdout, stderr = quiet_child.communicate(timeout=120)
    assert quiet_child.returncode == 0, stderr
    assert stderr == ''
    assert stdout.startswith('Iteration 0 :\ntotal cost = ')
    assert stdout.rstrip().splitlines()[-1].startswith('Saved ')


def test_sigkill_mid_run_leaves_only_whole_images(tmp_path, tiny_vgg_file, pics, child_env):
    """kill -9 a run that saves every iteration: every image under a real name decodes fully,
    the iterations saved are 0..n without a gap, and anything else is a hidden temp file."""
    out_dir = tmp_path / 'out'
    process = subprocess.Popen(
        [sys.executable, SCRIPT] + base_args(tiny_vgg_file, pics, out_dir, '--iterations', 100000,
                                             '--save-every', 1),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=child_env())
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            # Whole images only: a hidden temp file (.7.png.xxxx.png) also ends in .png.
            if out_dir.is_dir() and sum(name.endswith('.png') and not name.startswith('.')
                                        for name in os.listdir(out_dir)) >= 8:
                break
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read()
        process.kill()  # SIGKILL
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
    names = os.listdir(out_dir)
    visible = [name for name in names if not name.startswith('.')]
    hidden = [name for name in names if name.startswith('.')]
    # The checkpoint, whole (replaced atomically like the images), and the images.
    assert 'checkpoint.npz' in visible
    checkpoint.load_checkpoint(str(out_dir))
    visible.remove('checkpoint.npz')
    assert all(re.fullmatch(r'\d+\.png', name) for name in visible), visible
    numbers = sorted(int(name[:-4]) for name in visible)
    assert len(numbers) >= 8 and numbers == list(range(len(numbers)))
    for name in visible:
        with Image.open(out_dir / name) as image:
            image.verify()  # PNG chunk CRCs
        assert read_rgb(out_dir / name).shape == (HEIGHT, WIDTH, 3)  # decodes fully
    assert len(hidden) <= 1, hidden
    for name in hidden:
        match = TEMP_NAME.fullmatch(name)
        assert match and re.fullmatch(r'\d+\.png|checkpoint\.npz', match.group('name')), name


@pytest.mark.parametrize('case, expected_code', [
    ('unreadable image', 2), ('truncated weights', 2), ('non-finite option', 2),
    ('huge width', 2), ('download 404', 1)])
def test_process_exit_code_and_one_line(tmp_path, pics, tiny_vgg_file, server, child_env, case,
                                        expected_code):
    """As a user runs it: `python ag.py ...`; none of these imports TensorFlow,
    so each answers within seconds."""
    env = child_env()
    args = base_args(tiny_vgg_file, pics, tmp_path / 'out')
    if case == 'unreadable image':
        path, _ = make_bad_image('truncated JPEG', tmp_path)
        args += ['--content', path]
    elif case == 'truncated weights':
        path, _ = make_bad_weights('truncated', tmp_path)
        args += ['--model', path]
    elif case == 'non-finite option':
        args += ['--learning-rate=nan']
    elif case == 'huge width':
        args += ['--width', '100000']
    else:
        args = [a for a in args if a != '--no-download'] + ['--model', str(tmp_path / 'w.mat')]
        env['NST_VGG_URL'] = server.url('/missing')
    started = time.monotonic()
    process = subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, env=env)
    assert process.returncode == expected_code, process.stderr
    line = one_error_line(process.stderr)
    assert process.stdout == ''
    if case == 'download 404':
        assert server.requests() == [('/missing', None, 404)] and env['NST_VGG_URL'] in line
    assert time.monotonic() - started < 30


# ----------------------------------------------------------------------------------------------
# Coarse-to-fine stages (nst.stages): --start-width, --scale-factor, --stage-iterations,
# --style-scale, --average
# ----------------------------------------------------------------------------------------------

import inspect  # noqa: E402

from nst import plots, stages  # noqa: E402

# The 64x48 content at --width 128 from 64 by a factor 2: two stages, 64x48 and 128x96 (by
# hand: 64 * 2 = 128 is not below 128; 128 / 64 = 2 is not below sqrt(2)).
TWO_STAGES = ('--start-width', '64', '--scale-factor', '2')


def pillow_resize(pixels, width, height):
    """pixels (h, w, 3) uint8 resized with Pillow's Lanczos filter, independently of nst."""
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS))


def as_pixels(image):
    """(1, H, W, 3) mean-subtracted float -> (H, W, 3) float64 pixels (no rounding)."""
    return np.asarray(image, dtype=np.float64)[0] + MEANS[0]


@pytest.fixture(scope='module')
def two_stage(tiny_vgg_file, pics, tmp_path_factory):
    """One two-stage run (3 then 2 iterations, every one printed and saved, seed 1), shared by
    the tests below; spies record each stage's graph inputs and result, and the plots' input."""
    out_dir = tmp_path_factory.mktemp('two-stage') / 'out'
    argv = cli_argv(tiny_vgg_file, pics, out_dir, TWO_STAGES + (
        '--stage-iterations', '3,2', '--print-every', '1', '--save-every', '1'),
        width=128, iterations=5, seed=1)
    out, err = io.StringIO(), io.StringIO()
    plotted = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(download, 'download_vgg_model', refuse_download)
        runs = install_spy(patch)
        real_plots = plots.save_plots

        def spying_plots(*args, **kwargs):
            bound = inspect.signature(real_plots).bind(*args, **kwargs)
            bound.apply_defaults()
            plotted.append(SimpleNamespace(**bound.arguments))
            return real_plots(*args, **kwargs)

        patch.setattr(plots, 'save_plots', spying_plots)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = ag.main(argv)
    run = Run(code=code, out=out.getvalue(), err=err.getvalue(), dir=out_dir, spy=runs,
              plotted=plotted)
    return check_run(run, argv)  # prints iterations 0..4: numbers continue across stages


def test_two_stage_run_ends_at_the_requested_size(two_stage, pics):
    run = two_stage
    assert run.err == ''
    assert image_size(run.dir / 'generated_image.jpg') == (128, 96)
    assert image_size(run.dir / 'stage_128.png') == (128, 96)
    assert image_size(run.dir / 'stage_64.png') == (64, 48)
    first, second = run.spy
    assert first.content_image.shape == (1, 48, 64, 3)
    assert second.content_image.shape == (1, 96, 128, 3)
    assert (first.result.iterations, second.result.iterations) == (3, 2)
    assert first.result.image.shape == (1, 48, 64, 3)
    assert second.result.image.shape == (1, 96, 128, 3)
    # Each stage's content is the content picture resized to the stage (Pillow's Lanczos).
    content = read_rgb(pics.content)
    np.testing.assert_allclose(as_pixels(first.content_image), content, atol=1e-3)
    np.testing.assert_allclose(as_pixels(second.content_image), pillow_resize(content, 128, 96),
                               atol=1e-3)
    # stage_<width>.png holds each stage's result as 8-bit pixels (clipped, truncated as the
    # course's save_image does); generated_image.jpg the last one's, JPEG-coded.
    for stage, width in ((first, 64), (second, 128)):
        expected = np.clip(as_pixels(stage.result.image), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(read_rgb(run.dir / ('stage_%d.png' % width)), expected)
    assert np.abs(block_means(read_rgb(run.dir / 'generated_image.jpg'))
                  - block_means(read_rgb(run.dir / 'stage_128.png'))).mean() < 3
    # i.png at each stage's own size; numbers go on across stages.
    assert run.numbered_pngs() == [0, 1, 2, 3, 4]
    assert [image_size(run.dir / ('%d.png' % i)) for i in range(5)] == [(64, 48)] * 3 + [
        (128, 96)] * 2


def test_second_stage_starts_from_the_first_stages_result_upsampled(two_stage):
    first, second = two_stage.spy
    expected = stages.upsample(first.result.image, 128, 96)
    assert second.input_image.dtype == np.float32
    np.testing.assert_array_equal(second.input_image, expected)
    # Float, not the 8-bit stage_64.png upsampled: most values are not whole numbers.
    assert np.mean(np.abs(second.input_image - np.round(second.input_image)) > 0.01) > 0.9


def test_history_and_costs_plot_go_on_across_stages(two_stage):
    run = two_stage
    first, second = run.spy
    assert [h[0] for h in first.result.history] == [0, 1, 2]
    assert [h[0] for h in second.result.history] == [3, 4]
    assert [b[0] for b in run.blocks()] == [0, 1, 2, 3, 4]
    (plotted,) = run.plotted
    assert [h[0] for h in plotted.history] == [0, 1, 2, 3, 4]
    assert plotted.history == first.result.history + second.result.history
    # The plot marks where each stage starts, by its first iteration.
    assert [(i, label) for i, label in plotted.stage_marks] == [(0, 'stage 1/2, 64x48'),
                                                  (3, 'stage 2/2, 128x96')]
    costs = read_rgb(run.dir / 'costs.png')
    assert costs.shape[0] > 150 and costs.shape[1] > 200
    for rgb in ((0x1f, 0x77, 0xb4), (0xff, 0x7f, 0x0e), (0x2c, 0xa0, 0x2c)):  # three curves
        assert colour_pixels(costs, rgb) > 20, rgb


def cropped_resize(pixels, scaled_width, scaled_height, width, height):
    """Pillow's resize to the scaled size, centre-cropped to width x height (offsets rounded
    down): the style at a stage for a --style-scale above 1, computed without nst."""
    scaled = pillow_resize(pixels, scaled_width, scaled_height)
    top, left = (scaled_height - height) // 2, (scaled_width - width) // 2
    return scaled[top:top + height, left:left + width]


@pytest.mark.parametrize('scale', ['2', '0.5'])
def test_style_scale_sizes_the_style_at_every_stage(cli, spy, pics, scale):
    """--style-scale F: at every stage the style is F times the size at which it covers the
    stage. The 80x60 style covers 64x48 at 64x48 and 128x96 at 128x96 (4:3 both)."""
    run = cli(*TWO_STAGES, '--style-scale', scale, '--print-every', '0', '--save-every', '0',
              width=128, iterations=4, name='style-scale-' + scale)
    style = read_rgb(pics.style)
    assert style.shape == (60, 80, 3)
    assert [s.result.iterations for s in spy] == [4, 2]  # --iterations 4: 4, then half
    sizes = [(64, 48), (128, 96)]
    for stage, (width, height) in zip(spy, sizes):
        (given,) = stage.style_images
        assert given.shape == (1, height, width, 3)
        np.testing.assert_allclose(as_pixels(given),
                                   stages.style_at(style, width, height, float(scale)),
                                   atol=1e-3)
        pixels = np.round(as_pixels(given)).astype(np.uint8)
        if scale == '2':
            # 128x96, then 256x192, centre-cropped: worked out without nst.
            expected = cropped_resize(style, 2 * width, 2 * height, width, height)
            np.testing.assert_array_equal(pixels, expected)
        else:
            # 32x24, then 64x48: the middle is the style resized, mirrored around it (the row
            # above the middle repeats its first row).
            top, left = height // 4, width // 4
            middle = pillow_resize(style, width // 2, height // 2)
            np.testing.assert_array_equal(pixels[top:top + height // 2, left:left + width // 2],
                                          middle)
            np.testing.assert_array_equal(pixels[top - 1], pixels[top])
            np.testing.assert_array_equal(pixels[top:top + height // 2, :left],
                                          middle[:, left - 1::-1])
    assert image_size(run.dir / 'generated_image.jpg') == (128, 96)


@pytest.mark.parametrize('extra, option, words', [
    (['--start-width=100'], '--start-width', '100'),                # above --width 64
    (['--scale-factor=1'], '--scale-factor', '1'),
    (['--scale-factor=0.5'], '--scale-factor', '0.5'),
    (['--scale-factor=-2'], '--scale-factor', '-2'),
    (['--scale-factor=x'], '--scale-factor', 'x'),
    (['--scale-factor=nan'], '--scale-factor', 'nan'),
    (['--style-scale=0'], '--style-scale', '0'),
    (['--style-scale=-1'], '--style-scale', '-1'),
    (['--style-scale=big'], '--style-scale', 'big'),
    (['--stage-iterations=0,2'], '--stage-iterations', '0,2'),
    (['--stage-iterations=-1,2'], '--stage-iterations', '-1,2'),
    (['--stage-iterations=a,b'], '--stage-iterations', 'a,b'),
    (['--stage-iterations=3,'], '--stage-iterations', '3,'),
    (['--stage-iterations=2.5,1'], '--stage-iterations', '2.5,1'),
    # Wrong lengths: two stages (64 and 128) given one or three counts; one stage given two.
    (['--width', '128', *TWO_STAGES, '--stage-iterations', '5'], '--stage-iterations',
     '1 iteration counts for 2 stages'),
    (['--width', '128', *TWO_STAGES, '--stage-iterations', '3,2,1'], '--stage-iterations',
     '3 iteration counts for 2 stages'),
    (['--stage-iterations', '3,2'], '--stage-iterations', '2 iteration counts for 1 stages'),
    (['--average=1'], '--average', '1'),
    (['--average=1.5'], '--average', '1.5'),
    (['--average=-0.1'], '--average', '-0.1'),
    (['--average=x'], '--average', 'x'),
    (['--average=nan'], '--average', 'nan'),
])
def test_stage_options_out_of_range_exit_2_with_one_line(capsys, tmp_path, pics, tiny_vgg_file,
                                                         monkeypatch, extra, option, words):
    monkeypatch.setattr(vgg, 'VGGBuilder', pytest.fail)  # refused before any graph
    code, out, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out', *extra))
    assert code == 2
    assert out == ''
    one_error_line(err, option, words)
    assert not (tmp_path / 'out' / 'generated_image.jpg').exists()


def test_stage_options_at_their_limits_are_accepted(tmp_path):
    """The rejections above are not over-eager: a start width equal to the width, a factor just
    above 1, a tiny style scale, an average of 0 or just below 1."""
    options = parser().parse_args(['--width', '64', '--start-width', '64', '--scale-factor',
                                   '1.01', '--style-scale', '0.01', '--average', '0.999',
                                   '--stage-iterations', '1,2,3', '--output-dir', str(tmp_path)])
    assert (options.start_width, options.scale_factor) == (64, 1.01)
    assert (options.style_scale, options.average) == (0.01, 0.999)
    assert options.stage_iterations == [1, 2, 3]
    nst_cli.check_options(options)  # raises UsageError if refused
    assert parser().parse_args(['--average', '0']).average == 0


def test_average_is_the_bias_corrected_average_of_the_iterates(cli, spy, saved, monkeypatch):
    """--average 0.5 over 3 iterations: the result is (x3 + 0.5 x2 + 0.25 x1) / 1.75 of the
    iterates x1, x2, x3 (the images after each step), in float64 here; i.png after iteration k
    is the average so far."""
    iterates = []
    real = optimize._LoopState.after_iteration

    def recording(self, i, image, costs):
        iterates.append(np.array(image, dtype=np.float64))
        return real(self, i, image, costs)

    monkeypatch.setattr(optimize._LoopState, 'after_iteration', recording)
    cli('--average', '0.5', '--save-every', '1', '--print-every', '0', iterations=3,
        name='average')
    x1, x2, x3 = iterates
    averages = [x1, (x2 + 0.5 * x1) / 1.5, (x3 + 0.5 * x2 + 0.25 * x1) / 1.75]
    result = spy[0].result.image
    assert result.dtype == np.float32 and result.shape == x3.shape
    # float32 precision: |pixels| < 300, so 1e-4 is a few ulps.
    np.testing.assert_allclose(result, averages[2], rtol=0, atol=1e-4)
    assert np.abs(x3 - averages[2]).max() > 0.5  # the average is not the last iterate
    # What was saved: each i.png the average so far, generated_image.jpg the final one (as
    # 8-bit pixels: a value at a whole number may land on either side: 1 level).
    for i, average in enumerate(averages):
        expected = np.clip(as_pixels(average), 0, 255)
        assert np.abs(saved['%d.png' % i].astype(float) - np.floor(expected)).max() <= 1, i
    assert np.abs(saved['generated_image.jpg'].astype(float)
                  - np.floor(np.clip(as_pixels(averages[2]), 0, 255))).max() <= 1


def test_ctrl_c_during_the_second_stage(tmp_path, tiny_vgg_file, pics, child_env):
    """A real SIGINT to `python art_generation.py` while its second stage runs: exit 130, one
    line 'Interrupted after N iterations; the latest image is in ...', generated_image.jpg at
    the second stage's size (its latest image), stage_64.png done and stage_128.png not."""
    out_dir = tmp_path / 'out'
    code, stdout, stderr = interrupt_when(
        ['--model', tiny_vgg_file, '--no-download', '--content', pics.content, '--style',
         pics.style, '--width', '128', *TWO_STAGES, '--stage-iterations', '2,1000000',
         '--print-every', '1', '--save-every', '1', '--output-dir', str(out_dir),
         '--no-progress', '--seed', '0'],
        'Iteration 2 :',  # the second stage's first iteration
        tmp_path, child_env(TF_CPP_MIN_LOG_LEVEL='3'))
    assert code == 130, stderr
    assert 'Traceback' not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    final = out_dir / 'generated_image.jpg'
    match = re.fullmatch(r'Interrupted after (\d+) iterations; the latest image is in (.+)',
                         lines[0])
    assert match, lines[0]
    assert match.group(2) == str(final)
    done = int(match.group(1))
    printed = [b[0] for b in parse_blocks(stdout)]
    # All iterations of both stages, numbered on across them; the one in which Ctrl-C came was
    # finished and is the last.
    assert printed == list(range(done)) and done >= 3
    assert image_size(final) == (128, 96)
    assert image_size(out_dir / 'stage_64.png') == (64, 48)
    assert not (out_dir / 'stage_128.png').exists()
    image_size(out_dir / 'costs.png')
    image_size(out_dir / 'summary.png')
    latest = out_dir / ('%d.png' % (done - 1))
    assert image_size(latest) == (128, 96)
    assert np.abs(block_means(read_rgb(final)) - block_means(read_rgb(latest))).mean() < 4


def test_sigterm_stops_as_ctrl_c_does_and_exits_143(tmp_path, tiny_vgg_file, pics, child_env,
                                                     quiet_child):
    """SIGTERM (timeout, kill, docker stop) ends the run as Ctrl-C does: after the current
    iteration, with the latest image, the plots and a checkpoint that loads, no temporary file
    left; one line, and 143, the code a shell gives a process SIGTERM ended."""
    out_dir = tmp_path / 'out'
    code, _, stderr = interrupt_when(
        ['--model', tiny_vgg_file, '--no-download', '--content', pics.content, '--style',
         pics.style, '--width', '48', '--iterations', '1000000', '--print-every', '100000',
         '--save-every', '1', '--output-dir', str(out_dir), '--no-progress', '--seed', '0'],
        'Iteration 0 :', tmp_path, child_env(TF_CPP_MIN_LOG_LEVEL='3'), signal.SIGTERM)
    assert code == 143, stderr
    line = one_error_line(stderr, 'Terminated (SIGTERM) after', out_dir / 'generated_image.jpg')
    iterations = int(re.search(r'after (\d+) iterations', line).group(1))
    assert image_size(out_dir / 'generated_image.jpg') == (48, 36)
    image_size(out_dir / 'costs.png')
    assert checkpoint.load_checkpoint(str(out_dir)).completed == iterations
    assert [name for name in os.listdir(out_dir) if name.startswith('.')] == []


def test_ctrl_c_while_the_second_stage_is_built(capsys, tmp_path, tiny_vgg_file, pics,
                                                monkeypatch):
    """A Ctrl-C between stages (while stage 2's graph is built) ends the run as an interrupted
    one: the stage in progress finishes its first iteration and stops there, exit 130 with the
    one line, generated_image.jpg at stage 2's size, the plots written; a second Ctrl-C is not
    needed and no 'nothing more was saved' message appears."""
    monkeypatch.setattr(download, 'download_vgg_model', refuse_download)
    real_build = ag.build_style_transfer
    built = []

    def build_then_ctrl_c(*args, **kwargs):
        built.append(1)
        nst = real_build(*args, **kwargs)
        if len(built) == 2:  # stage 2's graph: the user presses Ctrl-C now
            os.kill(os.getpid(), signal.SIGINT)
        return nst

    monkeypatch.setattr(ag, 'build_style_transfer', build_then_ctrl_c)
    before = signal.getsignal(signal.SIGINT)
    out_dir = tmp_path / 'out'
    code, out, err = run_main(capsys, cli_argv(tiny_vgg_file, pics, out_dir, TWO_STAGES + (
        '--stage-iterations', '2,50', '--print-every', '1'), width=128, iterations=52, seed=1))
    assert code == 130, err
    assert err.strip() == ('Interrupted after 3 iterations; the latest image is in %s'
                           % (out_dir / 'generated_image.jpg'))
    assert [b[0] for b in parse_blocks(out)] == [0, 1, 2]
    assert image_size(out_dir / 'generated_image.jpg') == (128, 96)
    assert image_size(out_dir / 'stage_64.png') == (64, 48)
    assert not (out_dir / 'stage_128.png').exists()
    image_size(out_dir / 'costs.png')
    assert signal.getsignal(signal.SIGINT) is before  # the run's handler is gone


# ----------------------------------------------------------------------------------------------
# Print size: --max-memory (tiles) and --resume (checkpoints)
# ----------------------------------------------------------------------------------------------

TILED = ('--start-width', '128', '--scale-factor', '2')  # stages 128x96, then 256x192


def tiny_budget(height, width):
    """A --max-memory just below what a height x width stage needs whole (tiny weights): it
    runs in tiles."""
    return '%dK' % (memory.estimate_run_memory(height, width, TINY) // 1024 - 1)


@pytest.mark.parametrize('value, reason', [
    ('0', 'needs a unit'), ('0G', 'above 0'), ('-1G', 'above 0'), ('6', 'needs a unit'),
    ('6X', 'unknown unit'), ('lots', 'not a size')])
def test_bad_max_memory_exits_2_with_one_line(capsys, tmp_path, pics, tiny_vgg_file, value,
                                             reason):
    line = usage_error(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out',
                                         '--max-memory=' + value))
    assert '--max-memory' in line and reason in line


def test_max_memory_below_the_smallest_tile_is_refused(capsys, tmp_path, pics, tiny_vgg_file):
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out',
                                              '--max-memory', '100M'))
    assert code == 2
    one_error_line(err, '--max-memory', 'even in tiles', '100.0 MiB')
    assert os.listdir(tmp_path / 'out') == []


def test_lbfgs_is_refused_where_tiles_are_needed(capsys, tmp_path, pics, tiny_vgg_file):
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, tmp_path / 'out', '--width',
                                              256, '--optimizer', 'lbfgs', '--max-memory',
                                              tiny_budget(192, 256)))
    assert code == 2
    one_error_line(err, '--optimizer lbfgs', 'tiles')


@pytest.fixture
def built_sizes(monkeypatch):
    """The (height, width) of each model built by the run (a tiled stage's: one tile's)."""
    sizes = []
    real = ag.load_vgg_model

    def spy(path, image_height=None, image_width=None, *args, **kwargs):
        sizes.append((image_height, image_width))
        return real(path, image_height, image_width, *args, **kwargs)
    monkeypatch.setattr(ag, 'load_vgg_model', spy)
    return sizes


def test_a_stage_above_the_budget_runs_in_tiles(capsys, tmp_path, pics, tiny_vgg_file,
                                                built_sizes):
    out_dir = tmp_path / 'out'
    argv = cli_argv(tiny_vgg_file, pics, out_dir, TILED + (
        '--max-memory', tiny_budget(192, 256), '--print-every', '1'), width=256, iterations=6)
    code, out, err = run_main(capsys, argv)
    assert code == 0, err
    assert built_sizes[0] == (96, 128)  # stage 1 fits whole
    tile_height, tile_width = built_sizes[1]
    assert tile_height * tile_width < 192 * 256 and tile_height <= 192 and tile_width <= 256
    assert image_size(out_dir / 'generated_image.jpg') == (256, 192)
    assert [b[0] for b in parse_blocks(out)] == list(range(9))  # 6 + 3 iterations


def final_checkpoint_image(folder):
    with np.load(folder / 'checkpoint.npz') as saved:
        return saved['image']


@pytest.fixture(scope='module')
def uninterrupted(tiny_vgg_file, pics, tmp_path_factory):
    """A two-stage run whose second stage is tiled, seed 1, 8 + 4 iterations, uninterrupted:
    (argv without --output-dir, its final image)."""
    out_dir = tmp_path_factory.mktemp('whole') / 'out'
    options = TILED + ('--max-memory', tiny_budget(192, 256), '--save-every', '2',
                       '--print-every', '0')
    argv = cli_argv(tiny_vgg_file, pics, out_dir, options, width=256, iterations=8, seed=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(download, 'download_vgg_model', refuse_download)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert ag.main(argv) == 0
    return argv, final_checkpoint_image(out_dir)


def with_output_dir(argv, folder):
    argv = list(argv)
    argv[argv.index('--output-dir') + 1] = str(folder)
    return argv


@pytest.mark.parametrize('at', ['4.png', '10.png'])  # in stage 1; in the tiled stage 2
def test_resume_after_ctrl_c_ends_as_the_uninterrupted_run(capsys, tmp_path, uninterrupted,
                                                           monkeypatch, at):
    argv, expected = uninterrupted
    real = ctrl_c_after_saving(monkeypatch, at)
    out_dir = tmp_path / 'out'
    code, _, err = run_main(capsys, with_output_dir(argv, out_dir))
    assert code == 130, err
    monkeypatch.setattr(images, 'save_pixels', real)
    code, out, err = run_main(capsys, ['--resume', out_dir, '--no-progress'])
    assert code == 0, err
    assert image_size(out_dir / 'generated_image.jpg') == (256, 192)
    resumed = final_checkpoint_image(out_dir)
    assert np.abs(resumed - expected).max() <= 1e-3 * 255
    # Resuming a run that is complete does nothing and says so.
    code, out, err = run_main(capsys, ['--resume', out_dir])
    assert code == 0 and 'complete' in out


def test_resume_after_sigkill_ends_as_the_uninterrupted_run(capsys, tmp_path, uninterrupted,
                                                            child_env):
    """SIGKILL at a random moment after the first checkpoints: --resume finishes the run."""
    argv, expected = uninterrupted
    out_dir = tmp_path / 'out'
    process = subprocess.Popen([sys.executable, SCRIPT] + with_output_dir(argv, out_dir),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               cwd=tmp_path, env=child_env())
    try:
        deadline = time.monotonic() + 120
        while not (out_dir / '4.png').exists():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(np.random.default_rng().uniform(0, 0.3))
        process.kill()
    finally:
        process.wait()
        process.stderr.close()
    code, _, err = run_main(capsys, ['--resume', out_dir, '--no-progress'])
    assert code == 0, err
    assert np.abs(final_checkpoint_image(out_dir) - expected).max() <= 1e-3 * 255


@pytest.fixture
def stopped_run(capsys, tmp_path, tiny_vgg_file, pics, monkeypatch):
    """A run stopped by Ctrl-C after iteration 2, its checkpoint in the folder returned."""
    real = ctrl_c_after_saving(monkeypatch, '2.png')
    out_dir = tmp_path / 'stopped'
    content = tmp_path / 'content.png'  # a copy, which a test may change
    content.write_bytes(Path(pics.content).read_bytes())
    code, _, err = run_main(capsys, base_args(tiny_vgg_file, pics, out_dir, '--iterations', 20,
                                              '--save-every', 1, '--content', content))
    monkeypatch.setattr(images, 'save_pixels', real)
    assert code == 130, err
    return out_dir


def folder_state(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize('damage', ['missing folder', 'no checkpoint', 'truncated', 'garbage',
                                    'other width', 'other content', 'content changed',
                                    'other image size'])
def test_bad_checkpoints_exit_2_with_one_line_and_overwrite_nothing(capsys, stopped_run, pics,
                                                                    tmp_path, damage):
    folder, extra = stopped_run, []
    path = folder / 'checkpoint.npz'
    if damage == 'missing folder':
        folder = tmp_path / 'nowhere'
    elif damage == 'no checkpoint':
        path.unlink()
    elif damage == 'truncated':
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    elif damage == 'garbage':
        path.write_bytes(os.urandom(4096))
    elif damage == 'other width':
        extra = ['--width', str(WIDTH * 2)]
    elif damage == 'other content':
        extra = ['--content', pics.style]
    elif damage == 'content changed':
        Image.open(pics.content).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            tmp_path / 'content.png')
    elif damage == 'other image size':  # a checkpoint image that is not its stage's size
        saved = dict(np.load(path))
        saved['image'] = saved['image'][:, :-1]
        for key in ('m', 'v', 'adam_m', 'adam_v'):
            if key in saved:
                saved[key] = saved[key][:, :-1]
        np.savez(path, **saved)
    before = folder_state(folder) if folder.exists() else None
    code, out, err = run_main(capsys, ['--resume', folder] + extra)
    assert code == 2, err
    one_error_line(err, '--resume', str(folder))
    if before is not None:
        assert folder_state(folder) == before


def terminal_screen(output):
    """The lines a terminal shows for output: a carriage return goes back to the line's start,
    and what follows overwrites it (the progress bar redraws itself so)."""
    screen = []
    for line in output.replace('\r\n', '\n').split('\n'):
        shown = []
        for part in line.split('\r'):  # each written from the line's start
            shown[:len(part)] = part
        screen.append(''.join(shown).rstrip())
    return screen


def test_the_course_lines_print_above_the_progress_bar(tmp_path, tiny_vgg_file, pics, child_env):
    """In a terminal (a pseudo-terminal: stdout and stderr the same screen, the bar shown), each
    of the course's lines stands on a line of its own, the bar cleared before it and drawn
    again below."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack('HHHH', 30, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, os.path.join(PROJECT_DIR, 'art_generation.py'), '--model',
         tiny_vgg_file, '--no-download', '--content', pics.content, '--style', pics.style,
         '--width', '64', '--iterations', '41', '--save-every', '0', '--seed', '0',
         '--output-dir', str(tmp_path / 'out')],
        stdin=child, stdout=child, stderr=child, env=child_env(), close_fds=True)
    os.close(child)
    output = b''
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child's end closed
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert process.wait(timeout=120) == 0, output.decode(errors='replace')
    screen = terminal_screen(output.decode())
    blocks = [k for k, line in enumerate(screen) if 'Iteration' in line]
    assert [screen[k] for k in blocks] == ['Iteration 0 :', 'Iteration 20 :', 'Iteration 40 :']
    for k in blocks:
        assert [line.split(' = ')[0] for line in screen[k + 1:k + 4]] == [
            'total cost', 'content cost', 'style cost']


def test_a_ctrl_c_after_a_stage_s_last_iteration_keeps_its_stage_image(cli, monkeypatch):
    """Ctrl-C while the first stage's last image is saved (its iterations all done): the run
    stops there, exit 130, and that stage's image is kept (stage_32.png) with its checkpoint
    at the stage's end; the next stage never began."""
    real_save_image = ag.save_image
    interrupted = []

    def save_image(path, image):
        if path.endswith('generated_image.jpg') and not interrupted:
            interrupted.append(path)
            signal.raise_signal(signal.SIGINT)
        real_save_image(path, image)

    monkeypatch.setattr(ag, 'save_image', save_image)
    run = cli('--no-tune', '--start-width', '32', '--scale-factor', '2', '--stage-iterations',
              '2,3', '--save-every', '0', width=64, check=False)
    assert run.code == 130, run.err
    assert run.err.strip() == ('Interrupted after 2 iterations; the latest image is in %s'
                               % (run.dir / 'generated_image.jpg'))
    assert image_size(run.dir / 'stage_32.png') == (32, 24)
    assert not (run.dir / 'stage_64.png').exists()
    saved = checkpoint.load_checkpoint(str(run.dir))
    assert (saved.stage, saved.iteration) == (0, 2)
