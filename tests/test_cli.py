"""The command line (issue 3) end to end on a tiny generated VGG-19 file.

Each run calls art_generation.main([...]) in this process (TensorFlow is imported once), with the
tiny weights from tests/vgg_fixture.py, a small width, a few iterations and its own output folder;
a run takes about a second. Subprocesses are used only where the exit code, stderr or a signal is
what is tested. Test images are generated with NumPy and Pillow. Expected values come from the
issues, the course or independent NumPy/Pillow computations, never from the code under test.
"""
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import art_generation as ag
import nst_utils
from pictures import (MEANS, block_means, checker_picture, parse_blocks, read_rgb, save_png,
                      smooth_picture, striped_picture)

tf = nst_utils.import_tf()

PROJECT_DIR = Path(__file__).resolve().parent.parent
SCRIPT = str(PROJECT_DIR / 'art_generation.py')

# From the issues and the course, written out rather than read from the code.
VGG_URL = 'https://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat'
VGG_SHA256 = 'abdb57167f82a2a1fbab1e1c16ad9373411883f262a1a37ee5db2e6fb0044695'
COURSE_STYLE_LAYERS = [('conv1_1', 0.2), ('conv2_1', 0.2), ('conv3_1', 0.2), ('conv4_1', 0.2),
                       ('conv5_1', 0.2)]
# Every option issue 3 names.
OPTIONS = ('--content', '--style', '--style-blend-weights', '--output-dir', '--model',
           '--no-download', '--iterations', '--learning-rate', '--alpha', '--beta',
           '--noise-ratio', '--seed', '--width', '--style-layers', '--content-layer',
           '--save-every', '--print-every', '--optimizer', '--tv-weight', '--preserve-colors',
           '--pooling', '--initial')

WIDTH, HEIGHT = 64, 48  # the generated content is 4:3


# ----------------------------------------------------------------------------------------------
# Generated inputs
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


@pytest.fixture(scope='session')
def pics(tmp_path_factory):
    folder = tmp_path_factory.mktemp('pics')
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    initial = np.stack([np.full((HEIGHT, WIDTH), 30), 200 * x // WIDTH, 240 - 200 * y // HEIGHT],
                       axis=-1).astype(np.uint8)
    return SimpleNamespace(
        content=save_png(folder / 'content.png', smooth_picture(WIDTH, HEIGHT)),
        style=save_png(folder / 'style.png', striped_picture(80, 60)),
        style2=save_png(folder / 'style2.png', checker_picture(40, 90)),  # portrait
        wide=save_png(folder / 'wide.png', smooth_picture(200, 100)),      # 2:1
        tall=save_png(folder / 'tall.png', smooth_picture(60, 100)),       # 3:5
        initial=save_png(folder / 'initial.png', initial),
    )


def refuse_download(*args, **kwargs):
    raise AssertionError('the tests must not download the weights')


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """These tests never fetch the real weights."""
    monkeypatch.setattr(nst_utils, 'download_vgg_model', refuse_download)


def install_spy(monkeypatch):
    """Record, for each run, what the CLI built and what the optimisation returned."""
    runs = []
    build, optimise = ag.build_style_transfer, ag.optimise

    def spying_build(sess, weights, content_image, style_images, **kwargs):
        nst = build(sess, weights, content_image, style_images, **kwargs)
        runs.append(SimpleNamespace(
            kwargs=kwargs, content_image=np.array(content_image),
            style_images=[np.array(s) for s in style_images],
            ops=[(op.type, op.get_attr('T') if 'T' in op.node_def.attr else None)
                 for op in sess.graph.get_operations()]))
        return nst

    def spying_optimise(sess, nst, input_image, num_iterations, **kwargs):
        runs[-1].input_image = np.array(input_image)
        runs[-1].result = optimise(sess, nst, input_image, num_iterations, **kwargs)
        return runs[-1].result

    monkeypatch.setattr(ag, 'build_style_transfer', spying_build)
    monkeypatch.setattr(ag, 'optimise', spying_optimise)
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
        patch.setattr(nst_utils, 'download_vgg_model', refuse_download)
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
    options = ag.build_parser().parse_args([])
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
    content, styles, initial = ag.load_inputs(ag.build_parser().parse_args([]))
    assert content.shape == (300, 400, 3) and content.dtype == np.uint8
    assert [s.shape for s in styles] == [(300, 400, 3)]
    assert initial is None
    assert content.std() > 10 and styles[0].std() > 10  # real pictures, not blanks


def test_layer_options_parse():
    parse = ag.build_parser().parse_args
    options = parse(['--style-layers', 'conv1_1:0.5, conv3_1:1.5,conv5_4:0',
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


def test_blend_weights_must_match_the_styles(capsys, pics, tmp_path, tiny_vgg_file):
    line = usage_error(capsys, ['--model', tiny_vgg_file, '--no-download',
                                '--content', pics.content,
                                '--style', pics.style, pics.style2, '--style-blend-weights', '1',
                                '--output-dir', str(tmp_path / 'out')])
    assert '--style-blend-weights' in line


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
    assert spy[0].kwargs['pooling'] == 'max'
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
    if support and nst_utils.bfloat16_support() is None:
        pytest.skip('this CPU has no bfloat16 arithmetic')
    monkeypatch.setattr(nst_utils, 'bfloat16_support', lambda: support)
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
# Subprocesses: exit codes, stderr, signals
# ----------------------------------------------------------------------------------------------

def child_env(**extra):
    env = dict(os.environ)
    env.pop('PYTHONUNBUFFERED', None)  # as a user's shell: stdout is block-buffered in a pipe
    env.update(extra)
    return env


def test_missing_weights_with_no_download(tmp_path, pics):
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
def quiet_child(tiny_vgg_file, pics, tmp_path_factory):
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


def test_ctrl_c_saves_the_latest_image_and_exits_130(tmp_path, tiny_vgg_file, pics, quiet_child):
    out_dir = tmp_path / 'out'
    process = subprocess.Popen(
        [sys.executable, SCRIPT, '--model', tiny_vgg_file, '--no-download', '--content',
         pics.content, '--style', pics.style, '--width', '48', '--iterations', '1000000',
         # Only iteration 0 is printed: the line must be flushed, not wait in a pipe's buffer.
         '--print-every', '100000', '--save-every', '1', '--output-dir', str(out_dir),
         '--no-progress', '--seed', '0'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env=child_env(TF_CPP_MIN_LOG_LEVEL='3'))
    started = threading.Event()
    streams = {'out': [], 'err': []}

    def read(name, stream):
        for line in stream:
            streams[name].append(line)
            if line.startswith('Iteration 0 :'):
                started.set()

    readers = [threading.Thread(target=read, args=(name, stream), daemon=True)
               for name, stream in (('out', process.stdout), ('err', process.stderr))]
    for reader in readers:
        reader.start()
    try:
        assert started.wait(timeout=90), 'no "Iteration 0 :" line: %r' % streams
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for reader in readers:
        reader.join(timeout=10)
    stderr = ''.join(streams['err'])
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
