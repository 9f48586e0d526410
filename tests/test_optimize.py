"""nst.optimize and the course's training loop (art_generation.model_nn): the optimisers end to
end on a tiny generated VGG-19, Ctrl-C, and the total-variation cost.

The weights come from nst/synthetic.py (MatConvNet layout, tiny channel widths), so a run
takes a fraction of a second. Expected values come from the course (its print format, alpha 10,
beta 40, the file names, the save_image formula) or from NumPy, never from the code under test.
"""
import contextlib
import io
import os
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

import art_generation as ag
import nst_utils
from nst import images, optimize, vgg
from nst.runtime import import_tf
from nst.weights import read_vgg_weights
from pictures import (MEANS, block_means, checker_picture, parse_blocks, read_rgb,
                      smooth_picture, striped_picture)

tf = import_tf()

HEIGHT, WIDTH = 48, 64
BLACK_AND_WHITE = ((255, 255, 255), (0, 0, 0))  # checkerboard: every pixel at a bound of 0..255


@pytest.fixture(scope='module')
def tiny_weights(tiny_vgg_file):
    return read_vgg_weights(tiny_vgg_file)


def build(sess, weights, content, styles, **settings):
    """The course's model at the content's size in sess, and the style transfer built on it."""
    model = vgg.build_vgg_graph(weights, *content.shape[1:3], sess=sess)
    return ag.build_style_transfer(sess, model, content, styles, **settings)


def normalised(pixels):
    """(H, W, 3) uint8 -> (1, H, W, 3) float with the mean pixel removed, as the course does."""
    return pixels[None].astype(np.float64) - MEANS


# ----------------------------------------------------------------------------------------------
# The total-variation cost
# ----------------------------------------------------------------------------------------------

def test_total_variation_by_hand():
    image = np.zeros((1, 2, 3, 3), np.float32)
    image[0, 1, 2, 0] = 2.0  # one pixel differs by 2 from its upper and left neighbours
    with tf.Graph().as_default(), tf.Session() as sess:
        assert sess.run(optimize.total_variation_cost(tf.constant(image))) == pytest.approx(8.0)


# ----------------------------------------------------------------------------------------------
# model_nn, as the notebook calls it
# ----------------------------------------------------------------------------------------------

def test_evaluated_session_gives_held_activations_and_refuses_others():
    """FixedInputs.evaluated runs the tensors once and holds their values in the order given;
    its stand-in session gives their placeholders however they are fetched, and refuses a
    tensor it did not evaluate with a line naming it."""
    with tf.Graph().as_default(), tf.Session() as sess:
        x = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
        sess.run(x.initializer)
        doubled, squared, other = 2 * x, tf.square(x), x + 1
        fixed = optimize.FixedInputs()
        evaluated = fixed.evaluated(sess, [squared, doubled])
        x.load(np.zeros((2, 3), np.float32), sess)  # later inputs change nothing held
        held = evaluated.run({'d': doubled, 's': [squared]})
        assert list(fixed.values) == [held['s'][0], held['d']]  # the order given
        np.testing.assert_array_equal(fixed.values[held['d']], 2 * np.arange(6).reshape(2, 3))
        np.testing.assert_array_equal(sess.run(held['s'][0] + 0, fixed.values),
                                      np.square(np.arange(6)).reshape(2, 3))
        with pytest.raises(ValueError, match=other.name):
            evaluated.run(other)


def test_a_tiled_progress_bar_ends_at_its_total(capsys, recwarn):
    """Each tile moves the bar by its share of the step; the shares, rounded, may add up to a
    hair more than the step, and the bar must still end at its total (tqdm warns on stderr past
    it, and shows a negative time left). 45 tiles of a 400x300 stage, 3 steps (a real run's)."""
    with optimize.Progress([3], [400 * 300]) as progress:
        progress.start_stage(0)
        for _ in range(3):
            for done in range(1, 46):
                progress.tile(done, 45)
            progress.step((1.0, 2.0, 3.0))
        assert progress.bar.n <= progress.bar.total
        assert progress.bar.n == pytest.approx(progress.bar.total, rel=1e-12)
    assert [str(w.message) for w in recwarn] == []
    assert 'clamping' not in capsys.readouterr().err


def test_model_nn_end_to_end(tiny_weights, tmp_path, capsys):
    """The notebook's last cells on a small image: model_nn(sess, input_image) finds the graph
    built in the session, prints the course's four lines every 20 iterations with falling costs,
    saves i.png every 20 and generated_image.jpg in the output folder, returns the image."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    out_dir = tmp_path / 'output'
    with tf.Graph().as_default(), tf.Session() as sess:
        build(sess, tiny_weights, content, [style])
        np.random.seed(1)
        input_image = nst_utils.generate_noise_image(content)
        capsys.readouterr()
        generated = ag.model_nn(sess, input_image, num_iterations=41, output_dir=str(out_dir))
    stdout = capsys.readouterr().out

    blocks = parse_blocks(stdout)
    assert [b[0] for b in blocks] == [0, 20, 40]
    # Nothing but the course's lines on stdout: 3 blocks of 4 lines.
    assert len(stdout.splitlines()) == 4 * len(blocks)
    for _, total, content_cost, style_cost in blocks:
        assert np.all(np.isfinite([total, content_cost, style_cost]))
        assert content_cost > 0 and style_cost > 0
        # J = alpha J_content + beta J_style with the course's alpha 10 and beta 40.
        assert total == pytest.approx(10 * content_cost + 40 * style_cost, rel=1e-4)
    totals = [b[1] for b in blocks]
    assert totals[1] < totals[0]
    assert totals[2] < totals[0] / 10

    assert sorted(os.listdir(out_dir)) == ['0.png', '20.png', '40.png', 'generated_image.jpg']
    for name in os.listdir(out_dir):
        with Image.open(out_dir / name) as image:
            image.load()
            assert image.size == (WIDTH, HEIGHT)
            assert image.mode == 'RGB'

    assert generated.shape == (1, HEIGHT, WIDTH, 3)
    assert np.all(np.isfinite(generated))
    # The last image saved is the returned one, through the course's save_image formula.
    expected_pixels = np.clip(generated[0] + MEANS[0], 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(read_rgb(out_dir / '40.png'), expected_pixels)
    final = read_rgb(out_dir / 'generated_image.jpg')
    assert np.abs(block_means(final) - block_means(expected_pixels)).mean() < 4  # JPEG
    # And it moved away from the starting image.
    start_pixels = np.clip(input_image[0] + MEANS[0], 0, 255)
    assert np.abs(expected_pixels - start_pixels).mean() > 2


def test_model_nn_without_a_built_graph_says_so(tmp_path):
    with tf.Graph().as_default(), tf.Session() as sess:
        with pytest.raises(ValueError, match='build_style_transfer'):
            ag.model_nn(sess, np.zeros((1, HEIGHT, WIDTH, 3), np.float32), num_iterations=1,
                        output_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_model_nn_uses_the_graph_of_its_own_session(tiny_weights, tmp_path, capsys):
    """Two graphs of different sizes: each session's model_nn runs its own, whichever graph is
    the default at the time."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    small = normalised(smooth_picture(32, 24))
    with tf.Graph().as_default(), tf.Session() as sess_small:
        build(sess_small, tiny_weights, small, [normalised(
            striped_picture(32, 24))])
        with tf.Graph().as_default(), tf.Session() as sess:
            build(sess, tiny_weights, content, [style])
            # The small session's graph is not the default one here.
            image_small = ag.model_nn(sess_small, small.astype(np.float32), num_iterations=1,
                                      output_dir=str(tmp_path / 'small'))
            image = ag.model_nn(sess, content.astype(np.float32), num_iterations=1,
                                output_dir=str(tmp_path / 'big'))
    assert image.shape == (1, HEIGHT, WIDTH, 3)
    assert image_small.shape == (1, 24, 32, 3)
    with Image.open(tmp_path / 'small' / '0.png') as saved:
        assert saved.size == (32, 24)


# ----------------------------------------------------------------------------------------------
# L-BFGS-B: the pixel range as box constraints
# ----------------------------------------------------------------------------------------------

def test_lbfgs_keeps_every_pixel_in_range_where_adam_does_not(tiny_weights, tmp_path):
    """Start from a black-and-white checkerboard (every pixel at a bound) toward a textured
    style: unconstrained Adam pushes pixels out of 0..255, L-BFGS-B never does, and its cost
    falls at every iteration."""
    board_pixels = checker_picture(WIDTH, HEIGHT, 8, BLACK_AND_WHITE)
    board = normalised(board_pixels)
    style = normalised(striped_picture(WIDTH, HEIGHT, seed=3))
    start = board.astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, board, [style])
        adam = optimize.optimise(sess, nst, start, 30, optimizer='adam', progress=False)
        runs = []
        ag.model_nn(sess, start, 30, nst=nst, optimizer='lbfgs', output_dir=str(tmp_path / 'l'),
                    progress=False, print_every=0, save_every=0, finished=runs.append)
        [lbfgs] = runs

    # The control: this problem does push pixels out of range.
    adam_pixels = adam.image + MEANS
    assert np.mean((adam_pixels < -0.5) | (adam_pixels > 255.5)) > 0.01

    pixels = lbfgs.image + MEANS
    assert lbfgs.image.shape == (1, HEIGHT, WIDTH, 3)
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    assert np.mean((pixels < 0.5) | (pixels > 254.5)) > 0  # some constraints are active
    assert lbfgs.iterations >= 10 and not lbfgs.diverged and not lbfgs.interrupted
    totals = [entry[1] for entry in lbfgs.history]
    assert [entry[0] for entry in lbfgs.history] == list(range(len(totals)))
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in zip(totals, totals[1:]))
    assert totals[-1] < totals[0] / 10
    # The final image is the one saved.
    saved = read_rgb(tmp_path / 'l' / 'generated_image.jpg')
    expected = np.clip(pixels[0], 0, 255).astype(np.uint8)
    assert np.abs(block_means(saved) - block_means(expected)).mean() < 4  # JPEG
    assert np.abs(block_means(saved) - block_means(board_pixels)).mean() > 20


# ----------------------------------------------------------------------------------------------
# Ctrl-C: stop at the end of the current iteration, with either optimiser
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('optimizer', ['adam', 'lbfgs'])
def test_sigint_stops_after_the_current_iteration(tiny_weights, tmp_path, optimizer):
    """A real SIGINT, raised while iteration 2 is being saved, ends the run after iteration 2:
    the result says so, generated_image.jpg holds that image, Ctrl-C is handed back."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    saves = []

    def save_image(path, image):
        saves.append(path)
        if len(saves) == 3:  # saving 2.png
            signal.raise_signal(signal.SIGINT)
        images.save_pixels(path, images.to_pixels(image))

    before = signal.getsignal(signal.SIGINT)
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        runs = []
        ag.model_nn(sess, content.astype(np.float32), 50, nst=nst, optimizer=optimizer,
                    output_dir=str(tmp_path), save_every=1, print_every=0, progress=False,
                    save_image=save_image, finished=runs.append)
        [result] = runs
    assert signal.getsignal(signal.SIGINT) is before
    assert result.interrupted and not result.diverged
    assert result.iterations == 3
    assert [entry[0] for entry in result.history] == [0, 1, 2]
    assert sorted(os.listdir(tmp_path)) == ['0.png', '1.png', '2.png', 'generated_image.jpg']
    expected = np.clip(result.image[0] + MEANS[0], 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(read_rgb(tmp_path / '2.png'), expected)
    final = read_rgb(tmp_path / 'generated_image.jpg')
    assert np.abs(block_means(final) - block_means(expected)).mean() < 4


def test_the_stop_checkpoint_is_written_before_the_last_save(tiny_weights, tmp_path,
                                                             monkeypatch):
    """Ctrl-C while iteration 7 prints (save and checkpoint every 5), then again while
    generated_image.jpg is saved (the second stops at once): the checkpoint of iteration 7 was
    written before that save, so nothing since the checkpoint of iteration 5 is lost."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    snapshots = []

    def interrupting_print(*args, **kwargs):
        if args == ('Iteration 7 :',):
            signal.raise_signal(signal.SIGINT)
        print(*args, **kwargs)

    def save_image(path, image):
        if path.endswith('generated_image.jpg'):
            signal.raise_signal(signal.SIGINT)
        images.save_pixels(path, images.to_pixels(image))

    monkeypatch.setattr(ag, 'print', interrupting_print, raising=False)
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        with pytest.raises(KeyboardInterrupt):
            ag.model_nn(sess, content.astype(np.float32), 30, nst=nst,
                        output_dir=str(tmp_path), print_every=1, save_every=5, progress=False,
                        save_image=save_image, checkpoint=snapshots.append)
    # After iterations 0 and 5 (1 and 6 done), and after 7, where the run stopped.
    assert [snapshot.iterations for snapshot in snapshots] == [1, 6, 8]
    assert sorted(os.listdir(tmp_path)) == ['0.png', '5.png']


def test_each_iteration_s_lines_reach_stdout_in_one_write(tiny_weights, tmp_path):
    """What the loop's body prints is written when the iteration ends, in one piece (a pipe
    read line by line, or one closed early, gets whole blocks)."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    writes = []

    class Recording(io.StringIO):
        def write(self, text):
            writes.append(text)
            return super().write(text)

    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        with contextlib.redirect_stdout(Recording()):
            ag.model_nn(sess, content.astype(np.float32), 3, nst=nst, output_dir=str(tmp_path),
                        print_every=1, save_every=0, progress=False)
    blocks = [text for text in writes if text]
    assert len(blocks) == 3
    for number, text in enumerate(blocks):
        lines = text.splitlines()
        assert lines[0] == 'Iteration %d :' % number and len(lines) == 4, text


# ----------------------------------------------------------------------------------------------
# L-BFGS-B's thread: scipy drives its own loop, so it runs beside model_nn's
# ----------------------------------------------------------------------------------------------

def lbfgs_threads():
    return [thread for thread in threading.enumerate()
            if thread.name == 'L-BFGS-B' and thread.is_alive()]


def test_leaving_an_lbfgs_loop_early_ends_its_thread(tiny_weights):
    """A loop left by a break counts the iterations done (not an interruption); one left by an
    error in its body raises it, leaves no result; either way scipy's thread has ended. Zero
    iterations asked are zero taken."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        start = content.astype(np.float32)
        with optimize.Optimisation(sess, nst, start, 50, optimizer='lbfgs',
                                   progress=False) as run:
            for i in run.iterations():
                if i == 2:
                    break
        assert lbfgs_threads() == []
        assert run.result.iterations == 3 and not run.result.interrupted
        assert [entry[0] for entry in run.result.history] == [0, 1, 2]
        with pytest.raises(OSError, match='disk full'):
            with optimize.Optimisation(sess, nst, start, 50, optimizer='lbfgs',
                                       progress=False) as run:
                for i in run.iterations():
                    if i == 1:
                        raise OSError('disk full')
        assert lbfgs_threads() == []
        assert run.result is None
        # No iterations asked: none taken (scipy would take one).
        assert optimize.optimise(sess, nst, start, 0, optimizer='lbfgs',
                                 progress=False).iterations == 0


def test_an_error_in_the_lbfgs_thread_reaches_the_caller(tiny_weights):
    """A session run that fails in scipy's thread (here a fixed input fed an array of the
    wrong shape) raises its error where the loop runs."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        fixed = next(iter(nst.feeds))
        broken = nst._replace(feeds={**nst.feeds, fixed: np.zeros((1, 1), np.float32)})
        with pytest.raises(ValueError, match='Cannot feed value of shape'):
            optimize.optimise(sess, broken, content.astype(np.float32), 5, optimizer='lbfgs',
                              progress=False)
    assert lbfgs_threads() == []


def test_a_second_ctrl_c_during_an_lbfgs_evaluation_stops_at_once(tiny_weights):
    """Two SIGINTs while scipy's thread evaluates the cost (signals a thread other than the
    main one receives): the first asks to stop after the iteration, the second raises
    KeyboardInterrupt while the evaluation still runs (after a spell of the loop's wait, not
    after the iteration); the thread then ends and Ctrl-C is handed back."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    evaluation = {'calls': 0, 'ended': None, 'second signal handled': None}

    class TimedStop(optimize.StopRequest):
        def _handle(self, signum, frame):
            if self.requested:
                evaluation['second signal handled'] = time.monotonic()
            super()._handle(signum, frame)

    stop = TimedStop()

    class InterruptedSession:  # the session, with a slow third evaluation that gets Ctrl-C
        def __init__(self, sess):
            self.sess, self.graph = sess, sess.graph

        def run(self, fetches, feed_dict=None):
            if threading.current_thread().name == 'L-BFGS-B':
                evaluation['calls'] += 1
                if evaluation['calls'] == 3:
                    signal.raise_signal(signal.SIGINT)
                    deadline = time.monotonic() + 10
                    while not stop.requested and time.monotonic() < deadline:
                        time.sleep(0.01)
                    signal.raise_signal(signal.SIGINT)
                    time.sleep(3 * optimize.REPORT_WAIT + 0.5)  # a long evaluation
                    evaluation['ended'] = time.monotonic()
            return self.sess.run(fetches, feed_dict)

    before = signal.getsignal(signal.SIGINT)
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        with pytest.raises(KeyboardInterrupt):
            try:
                optimize.optimise(InterruptedSession(sess), nst, content.astype(np.float32),
                                  50, optimizer='lbfgs', progress=False, stop=stop)
            finally:
                raised = time.monotonic()
    # Handled while the evaluation ran; the thread was waited for.
    assert evaluation['second signal handled'] < evaluation['ended'] < raised
    assert lbfgs_threads() == []
    assert signal.getsignal(signal.SIGINT) is before


# ----------------------------------------------------------------------------------------------
# Tiles (nst.tiles, optimize.tile_targets and the tiled Adam loop)
# ----------------------------------------------------------------------------------------------

def tiled_transfer(sess, weights, content, styles, tiling, style_layers=ag.STYLE_LAYERS,
                   seed=0):
    """The one-tile graph of tiling built as art_generation.run_stage builds it, and its
    TiledTargets."""
    from nst import tiles
    model = vgg.build_vgg_graph(weights, *tiling.tile_size, sess=sess)
    crop = lambda image: tiles.crop(image, 0, 0, tiling.tile_size)  # noqa: E731
    nst = ag.build_style_transfer(sess, model, crop(content), [crop(s) for s in styles],
                                  style_layers=style_layers)
    targets = optimize.tile_targets(sess, nst, tiling, content, styles, ag.CONTENT_LAYER,
                                    style_layers, np.random.default_rng(seed))
    return nst, targets


@pytest.mark.parametrize('styles', [1, 2])
def test_a_single_tile_steps_as_the_untiled_run(tiny_weights, styles):
    """One tile covering the image: the tiled loop (NumPy Adam at full size over blended tile
    gradients) takes the same steps as TensorFlow's Adam on the whole image."""
    from nst import tiles
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style_images = [normalised(striped_picture(WIDTH, HEIGHT)),
                    normalised(checker_picture(WIDTH, HEIGHT))][:styles]
    np.random.seed(3)
    start = nst_utils.generate_noise_image(content).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, style_images)
        whole = optimize.optimise(sess, nst, start, 5, progress=False)
    with tf.Graph().as_default(), tf.Session() as sess:
        nst, targets = tiled_transfer(sess, tiny_weights, content, style_images,
                                      tiles.single_tile(HEIGHT, WIDTH))
        tiled = optimize.optimise(sess, nst, start, 5, progress=False, tiled=targets)
    np.testing.assert_allclose([h[1:] for h in tiled.history], [h[1:] for h in whole.history],
                               rtol=1e-5)
    # Within float32 rounding of 5 steps of learning rate 2 (pixels span about 255).
    np.testing.assert_allclose(tiled.image, whole.image, atol=1e-3)
    assert np.abs(tiled.image - start).max() > 5  # the steps did move the image


def test_tiled_style_targets_are_the_whole_images_gram_matrices(tiny_weights):
    """At conv1_1 and conv2_1 the cells a tile owns lie far enough inside it that their
    activations are the whole image's: the Gram matrices summed over the tiles, scaled to a
    tile, are the whole style image's (computed in float64 NumPy from its activations)."""
    from nst import tiles
    height, width = 160, 200
    tiling = tiles.Tiling(height, width, 112, 132, (0, 48), (0, 68))
    layers = [('conv1_1', 0.5), ('conv2_1', 0.5)]
    content = normalised(smooth_picture(width, height))
    style = normalised(checker_picture(width, height))
    with tf.Graph().as_default(), tf.Session() as sess:
        model = vgg.build_vgg_graph(tiny_weights, height, width, sess=sess)
        sess.run(model['input'].assign(style.astype(np.float32)))
        whole = sess.run({name: model[name] for name, _ in layers})
    with tf.Graph().as_default(), tf.Session() as sess:
        nst, targets = tiled_transfer(sess, tiny_weights, content, [style], tiling, layers)
        grams = list(targets.style_feeds.values())
        tile_cells = [np.prod(nst.model[name].get_shape().as_list()[1:3]) for name, _ in layers]
    assert len(grams) == 2
    for (name, _), gram, cells in zip(layers, grams, tile_cells):
        features = whole[name].astype(np.float64).reshape(-1, whole[name].shape[-1])
        expected = features.T @ features * cells / features.shape[0]
        np.testing.assert_allclose(gram, expected, rtol=2e-4, atol=1e-3 * np.abs(expected).max())


def test_tiled_run_lowers_the_cost_without_seams(tiny_weights):
    """Four tiles: the full-size cost of the result (evaluated on an untiled graph) falls, and
    the tile borders do not show."""
    from nst import tiles
    height, width = 160, 200
    tiling = tiles.Tiling(height, width, 112, 132, (0, 48), (0, 68))
    content = normalised(smooth_picture(width, height))
    style = normalised(striped_picture(width, height))
    np.random.seed(4)
    start = nst_utils.generate_noise_image(content).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        nst, targets = tiled_transfer(sess, tiny_weights, content, [style], tiling)
        result = optimize.optimise(sess, nst, start, 30, progress=False, tiled=targets)
    assert result.iterations == 30
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        costs = []
        for image in (start, result.image):
            nst.set_input(sess, image)
            costs.append(nst.run(sess, nst.J))
    assert costs[1] < 0.5 * costs[0]
    assert tiles.border_contrast(result.image, tiling) < 1.1


def test_resumed_adam_takes_the_same_steps(tiny_weights):
    """5 steps, then a fresh session resumed from the state after 2 (the image, Adam's moments
    and step count, as a checkpoint holds them) for 3 more: the same images, bit for bit (TF's
    float32 powers of beta1 and beta2 reproduced exactly)."""
    from nst.checkpoint import AdamState
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    np.random.seed(5)
    start = nst_utils.generate_noise_image(content).astype(np.float32)
    snapshots = []
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        whole = optimize.optimise(sess, nst, start, 5, progress=False, checkpoint_every=2,
                                  checkpoint=snapshots.append)
    at_2 = snapshots[1]  # after iteration 2: 3 iterations done
    assert at_2.iterations == 3 and at_2.adam.step == 3
    with tf.Graph().as_default(), tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        resumed = optimize.optimise(sess, nst, at_2.image, 2, progress=False,
                                    resume=optimize.Continuation(AdamState(*at_2.adam)))
    np.testing.assert_array_equal(resumed.image, whole.image)


def test_a_second_optimise_in_a_session_starts_afresh(tiny_weights):
    """optimise initialises Adam's state and sets the input in one run: called again in the
    same session from the same image it takes the same steps, bit for bit (Adam's moments and
    step count were reset, not carried on), and the passes and the loop share one input
    setter (one 'input_feed' placeholder in the graph)."""
    content = normalised(smooth_picture(WIDTH, HEIGHT))
    style = normalised(striped_picture(WIDTH, HEIGHT))
    np.random.seed(6)
    start = nst_utils.generate_noise_image(content).astype(np.float32)
    with tf.Graph().as_default() as graph, tf.Session() as sess:
        nst = build(sess, tiny_weights, content, [style])
        runs = [optimize.optimise(sess, nst, start, 3, progress=False) for _ in range(2)]
        assert optimize.InputSetter.of(nst.model) is nst.set_input
        feeds = [op for op in graph.get_operations() if op.name.startswith('input_feed')]
    assert len(feeds) == 1
    # The gradient is ungated: gating adds a tuple of identities for each op, which costs
    # start-up time and never changes a result.
    assert not [op.name for op in graph.get_operations() if '/tuple/' in op.name]
    assert runs[0].history == runs[1].history
    np.testing.assert_array_equal(runs[0].image, runs[1].image)
    assert not np.array_equal(runs[0].image, start)
