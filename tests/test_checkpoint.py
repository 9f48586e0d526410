"""nst.checkpoint: the file --resume continues from.

Saved then loaded, every field comes back bit for bit and the random state goes on drawing the
same numbers; a save that fails or is killed half-way leaves the previous checkpoint; every kind
of bad file is a one-line CheckpointError naming the folder, and loading touches nothing; the
options of a resumed run are the saved ones, with a given option that would change the result,
or a changed input image, refused. Pure NumPy: no TensorFlow.
"""
import argparse
import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from nst import checkpoint, cli
from nst.checkpoint import AdamState, Checkpoint
from nst.errors import EXIT_FAILURE, EXIT_USAGE, CheckpointError, ImageError, WriteError

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (1, 6, 8, 3)  # (1, H, W, 3): a stage 8 pixels wide, 6 high


def parse(*args):
    """The options of `art_generation.py args`, parsed by the real parser."""
    return cli.build_parser('conv4_2', [('conv1_1', 1.0)]).parse_args(list(args))


@pytest.fixture
def inputs(tmp_path):
    """Input 'images' (only their bytes are hashed, so any bytes do): paths as str."""
    folder = tmp_path / 'images'
    folder.mkdir()
    files = {}
    for name, data in (('content.jpg', b'content bytes'), ('style1.jpg', b'style one'),
                       ('style2.jpg', b'style two'), ('initial.png', b'initial bytes')):
        (folder / name).write_bytes(data)
        files[name.split('.')[0]] = str(folder / name)
    return files


@pytest.fixture
def run_dir(tmp_path):
    """An empty folder for the checkpoint (the inputs are beside it), as str."""
    folder = tmp_path / 'run'
    folder.mkdir()
    return str(folder)


@pytest.fixture
def run_options(inputs):
    """A run's options: two styles, stages, a seed, non-default weights."""
    return parse('--content', inputs['content'], '--style', inputs['style1'], inputs['style2'],
                 '--style-blend-weights', '1', '3', '--width', '64', '--start-width', '32',
                 '--stage-iterations', '3,2', '--style-layers', 'conv1_1:0.5,conv3_1:0.25',
                 '--seed', '3', '--learning-rate', '1.5', '--average', '0.9')


def random_state_after_draws(seed=7, draws=5):
    generator = np.random.default_rng(seed)
    generator.random(draws)
    return generator


def make_checkpoint(options_dict, adam=True, average=True, seed=0):
    """A checkpoint of random arrays (negative, tiny and huge values: any rounding shows)."""
    rng = np.random.default_rng(seed)

    def field(dtype):
        values = rng.standard_normal(SHAPE) * 10.0 ** rng.integers(-30, 30, SHAPE)
        return values.astype(dtype)

    return Checkpoint(
        stage=1, iteration=2, completed=5, image=field(np.float32),
        adam=AdamState(field(np.float32), np.abs(field(np.float32)), 2) if adam else None,
        average=(field(np.float64), 0.6513215599) if average else None,
        rng_state=checkpoint.rng_state(random_state_after_draws()),
        options=options_dict,
        history=np.column_stack([np.arange(5.0), rng.standard_normal((5, 3)) * 1e9]),
        stage_starts=[(0, 0), (1, 3)])


def assert_same_array(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert actual.tobytes() == expected.tobytes()


def assert_same_checkpoint(actual, expected):
    assert (actual.stage, actual.iteration, actual.completed) == (
        expected.stage, expected.iteration, expected.completed)
    assert_same_array(actual.image, expected.image)
    assert_same_array(actual.history, expected.history)
    if expected.adam is None:
        assert actual.adam is None
    else:
        assert_same_array(actual.adam.m, expected.adam.m)
        assert_same_array(actual.adam.v, expected.adam.v)
        assert actual.adam.step == expected.adam.step and type(actual.adam.step) is int
    if expected.average is None:
        assert actual.average is None
    else:
        assert_same_array(actual.average[0], expected.average[0])
        assert actual.average[1] == expected.average[1]
    assert actual.rng_state == expected.rng_state
    assert actual.options == expected.options
    assert actual.stage_starts == expected.stage_starts


def folder_listing(folder):
    """{name: (size, mtime_ns)} of a folder, hidden files included."""
    return {entry.name: (entry.stat().st_size, entry.stat().st_mtime_ns)
            for entry in os.scandir(folder)}


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------

def test_save_then_load_round_trips_every_field(run_dir, run_options):
    saved = make_checkpoint(checkpoint.result_options(run_options))
    checkpoint.save_checkpoint(run_dir, saved)
    assert os.listdir(run_dir) == ['checkpoint.npz']  # not checkpoint.npz.npz, no temp file
    loaded = checkpoint.load_checkpoint(run_dir)
    assert_same_checkpoint(loaded, saved)
    assert loaded.stage_starts == [(0, 0), (1, 3)]


def test_the_random_state_goes_on_with_the_same_numbers(run_dir, run_options):
    """PCG64's state holds ints above 2**64: restored from the file, a generator draws what
    the saved one would have drawn next."""
    original = random_state_after_draws()
    assert original.bit_generator.state['state']['state'] > 2 ** 64  # what makes this a test
    saved = make_checkpoint(checkpoint.result_options(run_options))._replace(
        rng_state=checkpoint.rng_state(original))
    checkpoint.save_checkpoint(run_dir, saved)
    continuation = original.random(20), original.integers(0, 2 ** 62, 20)

    restored = np.random.default_rng(12345)
    checkpoint.set_rng_state(restored, checkpoint.load_checkpoint(run_dir).rng_state)
    assert_same_array(restored.random(20), continuation[0])
    assert_same_array(restored.integers(0, 2 ** 62, 20), continuation[1])


def test_the_legacy_global_random_state_goes_on_too(run_dir, run_options):
    """The course draws its noise from np.random (a RandomState): its MT19937 key array and a
    cached Gaussian (after an odd number of normals) survive the file."""
    legacy = np.random.RandomState(3)
    legacy.standard_normal(3)  # leaves the second of a pair of Gaussians cached
    state = checkpoint.rng_state(legacy)
    assert state['has_gauss'] == 1
    json.dumps(state)  # JSON-able
    checkpoint.save_checkpoint(run_dir, make_checkpoint(
        checkpoint.result_options(run_options))._replace(rng_state=state))
    continuation = legacy.standard_normal(5), legacy.uniform(-20, 20, 5)

    restored = np.random.RandomState(0)
    checkpoint.set_rng_state(restored, checkpoint.load_checkpoint(run_dir).rng_state)
    assert_same_array(restored.standard_normal(5), continuation[0])
    assert_same_array(restored.uniform(-20, 20, 5), continuation[1])


def test_the_module_numpy_random_stands_for_the_global_state():
    """rng_state(np.random): the state np.random.seed sets, as the course's noise uses it."""
    outer = np.random.get_state()  # other tests' global state, put back after
    try:
        np.random.seed(11)
        np.random.uniform(size=3)
        state = checkpoint.rng_state(np.random)
        expected = np.random.uniform(-20, 20, 4)
        np.random.seed(99)
        checkpoint.set_rng_state(np.random, json.loads(json.dumps(state)))
        assert_same_array(np.random.uniform(-20, 20, 4), expected)
    finally:
        np.random.set_state(outer)


def test_no_adam_and_no_average_round_trip(run_dir, run_options):
    saved = make_checkpoint(checkpoint.result_options(run_options), adam=False, average=False)
    checkpoint.save_checkpoint(run_dir, saved)
    loaded = checkpoint.load_checkpoint(run_dir)
    assert loaded.adam is None and loaded.average is None
    assert_same_checkpoint(loaded, saved)


def test_an_empty_history_and_numpy_counts_round_trip(run_dir, run_options):
    """The start of a run: no history yet (a list, as the caller may hold it); counts that are
    NumPy integers come back as int."""
    start = make_checkpoint(checkpoint.result_options(run_options))
    saved = start._replace(
        stage=np.int64(0), iteration=np.int32(0), completed=np.int64(0), history=[],
        stage_starts=[(np.int64(0), np.int64(0))], adam=start.adam._replace(step=np.int64(0)))
    checkpoint.save_checkpoint(run_dir, saved)
    loaded = checkpoint.load_checkpoint(run_dir)
    assert loaded.history.shape == (0, 4) and loaded.history.dtype == np.float64
    assert (loaded.stage, loaded.iteration, loaded.completed) == (0, 0, 0)
    assert all(type(n) is int for n in (loaded.stage, loaded.iteration, loaded.completed))
    assert loaded.stage_starts == [(0, 0)] and type(loaded.adam.step) is int


def test_a_second_save_replaces_the_first(run_dir, run_options):
    options = checkpoint.result_options(run_options)
    checkpoint.save_checkpoint(run_dir, make_checkpoint(options, seed=1))
    second = make_checkpoint(options, seed=2)._replace(iteration=3, completed=6)
    checkpoint.save_checkpoint(run_dir, second)
    assert os.listdir(run_dir) == ['checkpoint.npz']
    assert_same_checkpoint(checkpoint.load_checkpoint(run_dir), second)


def test_a_checkpoint_breaking_the_rules_is_refused_before_writing(run_dir, run_options):
    """A caller's bug (Adam's moments of another size) is caught at save, not at resume."""
    good = make_checkpoint(checkpoint.result_options(run_options))
    bad = good._replace(adam=good.adam._replace(m=np.zeros((1, 3, 4, 3), np.float32)))
    with pytest.raises(ValueError, match="Adam's m"):
        checkpoint.save_checkpoint(run_dir, bad)
    assert os.listdir(run_dir) == []


def half_written_savez(code):
    """An np.savez that writes the first half of the real file, then fails with OSError(code),
    as a full disk would."""
    real_savez = np.savez

    def savez(file, **arrays):
        buffer = io.BytesIO()
        real_savez(buffer, **arrays)
        data = buffer.getvalue()
        file.write(data[:len(data) // 2])
        file.flush()
        raise OSError(code, os.strerror(code))
    return savez


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EDQUOT])
def test_a_failed_save_keeps_the_previous_checkpoint(run_dir, run_options, monkeypatch, code):
    options = checkpoint.result_options(run_options)
    previous = make_checkpoint(options, seed=1)
    checkpoint.save_checkpoint(run_dir, previous)
    monkeypatch.setattr(checkpoint.np, 'savez', half_written_savez(code))
    with pytest.raises(WriteError) as info:
        checkpoint.save_checkpoint(run_dir, make_checkpoint(options, seed=2))
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith(os.path.join(run_dir, 'checkpoint.npz') + ': ')
    assert os.strerror(code) in message
    assert info.value.exit_code == EXIT_FAILURE
    monkeypatch.undo()
    assert os.listdir(run_dir) == ['checkpoint.npz']  # no temp file left behind
    assert_same_checkpoint(checkpoint.load_checkpoint(run_dir), previous)


def test_a_save_into_a_missing_folder_is_a_write_error(tmp_path, run_options):
    folder = tmp_path / 'gone'
    with pytest.raises(WriteError) as info:
        checkpoint.save_checkpoint(str(folder), make_checkpoint(
            checkpoint.result_options(run_options)))
    assert '\n' not in str(info.value) and str(folder) in str(info.value)
    assert not folder.exists()


KILLED_WRITER = r'''
import io, os, signal, sys
import numpy as np
from nst import checkpoint

real_savez = np.savez

def dying_savez(file, **arrays):
    """Write the first half of the checkpoint, then die as if by kill -9."""
    buffer = io.BytesIO()
    real_savez(buffer, **arrays)
    data = buffer.getvalue()
    file.write(data[:len(data) // 2])
    file.flush()
    os.fsync(file.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

previous = checkpoint.load_checkpoint(sys.argv[1])
np.savez = dying_savez
checkpoint.save_checkpoint(sys.argv[1], previous._replace(iteration=3, completed=6))
'''


def test_a_process_killed_while_saving_leaves_the_previous_checkpoint(run_dir, run_options,
                                                                      child_env):
    previous = make_checkpoint(checkpoint.result_options(run_options))
    checkpoint.save_checkpoint(run_dir, previous)
    process = subprocess.run([sys.executable, '-c', KILLED_WRITER, run_dir],
                             capture_output=True, timeout=60, env=child_env(), cwd=PROJECT_DIR)
    assert process.returncode == -signal.SIGKILL, process.stderr
    names = sorted(os.listdir(run_dir))
    assert len(names) == 2 and names[1] == 'checkpoint.npz', names
    assert names[0].startswith('.checkpoint.npz.') and names[0].endswith('.npz')  # half a file
    assert_same_checkpoint(checkpoint.load_checkpoint(run_dir), previous)


# ----------------------------------------------------------------------------------------------
# Bad checkpoints
# ----------------------------------------------------------------------------------------------

def rewrite(path, change):
    """Rewrite the npz at path with change(arrays) applied to its arrays (a dict)."""
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    with open(path, 'wb') as f:
        np.savez(f, **arrays)


def edit_meta(change):
    def edit(arrays):
        meta = json.loads(arrays['meta'].item())
        change(meta)
        arrays['meta'] = np.array(json.dumps(meta))
    return edit


def truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def write_bytes(data):
    def write(path):
        with open(path, 'wb') as f:
            f.write(data)
    return write


def write_npy(path):
    with open(path, 'wb') as f:
        np.save(f, np.zeros(SHAPE, np.float32))


def write_future_version_only(path):
    with open(path, 'wb') as f:
        np.savez(f, format_version=np.array(7), pixels=np.zeros(3))


def rewritten(change):
    """A damage: the file rewritten with change(arrays) applied to its arrays."""
    return lambda path: rewrite(path, change)


def put(name, value):
    return rewritten(lambda arrays: arrays.__setitem__(name, value))


def drop(name):
    return rewritten(lambda arrays: arrays.pop(name))


def set_meta(name, value):
    return rewritten(edit_meta(lambda meta: meta.__setitem__(name, value)))


def nan_image(arrays):
    arrays['image'] = arrays['image'].copy()
    arrays['image'][0, 2, 3, 1] = np.nan


DAMAGED = 'is damaged'
NOT_A_CHECKPOINT = DAMAGED + ' (truncated or not a checkpoint)'
FUTURE = 'was written by format version 7; this program reads 1'
# (damage done to a good checkpoint file, how the message goes on after the file's path)
BAD_FILES = {
    'truncated': (truncate, NOT_A_CHECKPOINT),
    'garbage': (write_bytes(b'not a zip file at all, just bytes' * 40), NOT_A_CHECKPOINT),
    'empty': (write_bytes(b''), NOT_A_CHECKPOINT),
    'a plain .npy': (write_npy, NOT_A_CHECKPOINT),
    'pickled data': (put('meta', np.array({'a': 1}, dtype=object)), NOT_A_CHECKPOINT),
    'no version': (drop('format_version'), DAMAGED + ' (no format version'),
    'no image': (drop('image'), DAMAGED + " (no 'image' array)"),
    'no meta': (drop('meta'), DAMAGED + " (no 'meta' array)"),
    'no Adam m': (drop('adam_m'), DAMAGED + ' (an Adam step count but no adam_m'),
    'meta not JSON': (put('meta', np.array('{"stage": 1,')), DAMAGED + " ('meta' is not JSON)"),
    'image of 3 dims': (put('image', np.zeros(SHAPE[1:], np.float32)),
                        DAMAGED + ' (the image is float32 (6, 8, 3), not (1, H, W, 3)'),
    'image float64': (put('image', np.zeros(SHAPE)), DAMAGED + ' (the image is float64'),
    'NaN in the image': (rewritten(nan_image), DAMAGED + ' (the image is not finite)'),
    'm of another shape': (put('adam_m', np.zeros((1, 6, 7, 3), np.float32)),
                           DAMAGED + " (Adam's m is float32 (1, 6, 7, 3), not (1, 6, 8, 3)"),
    'v of another shape': (put('adam_v', np.zeros((1, 8, 6, 3), np.float32)),
                           DAMAGED + " (Adam's v is float32 (1, 8, 6, 3)"),
    'average of another shape': (put('average_sum', np.zeros((1, 3))),
                                 DAMAGED + ' (the average is float64 (1, 3)'),
    'history of 3 columns': (put('history', np.zeros((4, 3))),
                             DAMAGED + ' (the history is float64 (4, 3)'),
    'negative iteration': (set_meta('iteration', -1), DAMAGED + ' (iteration is -1'),
    'negative completed': (set_meta('completed', -5), DAMAGED + ' (completed is -5'),
    'negative Adam step': (set_meta('adam_step', -2), DAMAGED + " (Adam's step is -2"),
    # A resumed run replays Adam's step count (a loop of that many multiplications): it would
    # never end on this one.
    'Adam step past the iteration': (
        set_meta('adam_step', 10 ** 30),
        DAMAGED + " (Adam's step %d is past the stage's iteration 2)" % 10 ** 30),
    'Adam step one past the iteration': (
        set_meta('adam_step', 3), DAMAGED + " (Adam's step 3 is past the stage's iteration 2)"),
    'a stage start after the stage': (
        set_meta('stage_starts', [[0, 0], [5, 3]]),
        DAMAGED + ' (the stage starts name a stage after stage 1, the one it is at)'),
    'bad random state': (rewritten(edit_meta(lambda meta: meta['rng_state'].__setitem__(
        'state', 'x'))), DAMAGED + ' (the random state'),
    'a random state too short': (
        set_meta('rng_state', {'bit_generator': 'MT19937', 'state': {'key': [1, 2], 'pos': 0}}),
        DAMAGED + ' (the random state'),
    # Deeper than Python's recursion goes: json.loads raises RecursionError, not ValueError.
    'meta nested too deep': (put('meta', np.array('[' * 200000)),
                             DAMAGED + " ('meta' is not JSON)"),
    'options missing --width': (rewritten(edit_meta(lambda meta: meta['options'].pop('width'))),
                                DAMAGED + ' (the options lack width)'),
    'a future version': (put('format_version', np.array(7)), FUTURE),
    # A later format may hold other arrays altogether: the version is what is reported.
    'a future version only': (write_future_version_only, FUTURE),
}


@pytest.mark.parametrize('kind', BAD_FILES)
def test_a_bad_checkpoint_file_is_a_one_line_error(run_dir, run_options, kind):
    damage, expected = BAD_FILES[kind]
    folder = run_dir
    checkpoint.save_checkpoint(folder, make_checkpoint(checkpoint.result_options(run_options)))
    path = checkpoint.checkpoint_path(folder)
    damage(path)
    before = folder_listing(folder)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_checkpoint(folder)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith('--resume %s: %s %s' % (folder, path, expected)), message
    assert info.value.exit_code == EXIT_USAGE
    assert folder_listing(folder) == before  # loading writes, renames and deletes nothing


def test_a_missing_folder_file_or_a_file_for_a_folder(tmp_path):
    missing = str(tmp_path / 'missing')
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_checkpoint(missing)
    assert str(info.value) == '--resume %s: no such folder' % missing
    assert not os.path.exists(missing)

    a_file = tmp_path / 'a_file'
    a_file.write_bytes(b'x')
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_checkpoint(str(a_file))
    assert str(info.value) == '--resume %s: no such folder' % a_file

    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_checkpoint(str(empty))
    assert str(info.value) == '--resume %s: no checkpoint there (%s not found)' % (
        empty, empty / 'checkpoint.npz')
    assert os.listdir(empty) == []


# ----------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------

def parser_dests():
    """Every dest the real parser sets (but --help's)."""
    parser = cli.build_parser('conv4_2', [('conv1_1', 1.0)])
    return {action.dest for action in parser._actions
            if not isinstance(action, argparse._HelpAction)}


def test_every_option_is_either_result_shaping_or_changeable():
    """A new option must be sorted into one list: a test that fails until it is."""
    result, changeable = set(checkpoint.RESULT_OPTIONS), set(checkpoint.CHANGEABLE_OPTIONS)
    assert len(result) == len(checkpoint.RESULT_OPTIONS)
    assert len(changeable) == len(checkpoint.CHANGEABLE_OPTIONS)
    assert result.isdisjoint(changeable)
    dests = parser_dests()
    assert dests - result - changeable == set()  # no option is left unsorted
    # The lists name no option the parser lacks, but the two being added alongside.
    assert (result | changeable) - dests <= {'max_memory', 'resume'}
    assert 'width' in result and 'save_every' in changeable  # the parser is the one we think


def test_result_options_are_json_able_and_hash_the_images(run_options, inputs):
    values = checkpoint.result_options(run_options)
    assert json.loads(json.dumps(values)) == values
    assert values['style_layers'] == [['conv1_1', 0.5], ['conv3_1', 0.25]]
    assert values['stage_iterations'] == [3, 2]
    assert values['width'] == 64 and values['seed'] == 3 and values['initial'] is None
    assert values['content_sha256'] == hashlib.sha256(b'content bytes').hexdigest()
    assert values['style_sha256'] == [hashlib.sha256(b'style one').hexdigest(),
                                      hashlib.sha256(b'style two').hexdigest()]
    assert values['initial_sha256'] is None
    assert set(values) == set(checkpoint.RESULT_OPTIONS) | {
        'content_sha256', 'style_sha256', 'initial_sha256', 'settings'}
    # The changeable settings (not where the output goes, nor --resume itself).
    assert set(values['settings']) == set(checkpoint.CHANGEABLE_OPTIONS) - {'output_dir',
                                                                            'resume'}


def test_result_options_of_a_missing_image_is_an_image_error(tmp_path, inputs):
    options = parse('--content', inputs['content'], '--style', str(tmp_path / 'nope.jpg'))
    with pytest.raises(ImageError) as info:
        checkpoint.result_options(options)
    assert '\n' not in str(info.value) and str(tmp_path / 'nope.jpg') in str(info.value)


def test_file_digest_reads_past_its_chunks(tmp_path):
    data = np.random.default_rng(0).bytes(5 * 1024 * 1024 // 2 + 7)  # 2.5 chunks
    path = tmp_path / 'big'
    path.write_bytes(data)
    assert checkpoint.file_digest(str(path)) == hashlib.sha256(data).hexdigest()


@pytest.fixture
def saved_run(run_dir, run_options):
    """(folder, options saved): a checkpoint of run_options, saved and loaded back."""
    folder = run_dir
    checkpoint.save_checkpoint(folder, make_checkpoint(checkpoint.result_options(run_options)))
    return folder, checkpoint.load_checkpoint(folder).options


def test_resumed_options_are_the_saved_ones(saved_run, run_options):
    folder, saved = saved_run
    now = parse('--save-every', '5')  # the defaults differ from the run's: --width 400, ...
    resumed = checkpoint.resumed_options(saved, now, {'save_every'}, folder)
    for dest in checkpoint.RESULT_OPTIONS:
        assert getattr(resumed, dest) == getattr(run_options, dest), dest
    assert resumed.style_layers == [('conv1_1', 0.5), ('conv3_1', 0.25)]  # tuples, as parsed
    assert resumed.width == 64 != now.width
    assert resumed.save_every == 5 != run_options.save_every  # changeable: taken from now
    assert resumed.output_dir == folder
    assert now.width == parse().width  # the Namespace parsed now is left alone


def test_changeable_settings_not_given_are_the_saved_ones(run_dir, run_options):
    """`--resume DIR` alone goes on with the run's --print-every; given anew, it changes."""
    run_options = argparse.Namespace(**vars(run_options))
    run_options.print_every, run_options.max_memory = 7, 3 * 2 ** 30
    checkpoint.save_checkpoint(run_dir, make_checkpoint(checkpoint.result_options(run_options)))
    saved = checkpoint.load_checkpoint(run_dir).options
    resumed = checkpoint.resumed_options(saved, parse(), set(), run_dir)
    assert (resumed.print_every, resumed.max_memory) == (7, 3 * 2 ** 30)
    resumed = checkpoint.resumed_options(saved, parse('--print-every', '2'), {'print_every'},
                                         run_dir)
    assert (resumed.print_every, resumed.max_memory) == (2, 3 * 2 ** 30)


def test_a_given_output_dir_is_kept(saved_run, tmp_path):
    folder, saved = saved_run
    elsewhere = str(tmp_path / 'elsewhere')
    resumed = checkpoint.resumed_options(saved, parse('--output-dir', elsewhere),
                                         {'output_dir'}, folder)
    assert resumed.output_dir == elsewhere


def test_result_options_given_again_with_the_same_values_pass(saved_run, inputs, monkeypatch):
    """The same values, however written: 64 for 64, 1.5 as 1.50, a path from another folder."""
    folder, saved = saved_run
    monkeypatch.chdir(os.path.dirname(inputs['content']))
    now = parse('--width', '64', '--learning-rate', '1.50', '--content', './content.jpg',
                '--style-layers', 'conv1_1:0.5,conv3_1:0.250', '--seed', '3')
    given = {'width', 'learning_rate', 'content', 'style_layers', 'seed'}
    resumed = checkpoint.resumed_options(saved, now, given, folder)
    assert resumed.content == inputs['content']  # the saved path


@pytest.mark.parametrize('args, dest, problem', [
    (['--width', '800'], 'width', 'made with --width 64, not 800'),
    (['--learning-rate', '2'], 'learning_rate', 'made with --learning-rate 1.5, not 2.0'),
    (['--style-layers', 'conv1_1:1'], 'style_layers',
     'made with --style-layers conv1_1:0.5,conv3_1:0.25, not conv1_1:1.0'),
    (['--stage-iterations', '3,3'], 'stage_iterations',
     'made with --stage-iterations 3,2, not 3,3'),
    (['--start-width', '40'], 'start_width', 'made with --start-width 32, not 40'),
    (['--preserve-colors'], 'preserve_colors', 'made without --preserve-colors'),
    (['--optimizer', 'lbfgs'], 'optimizer', 'made with --optimizer adam, not lbfgs'),
])
def test_a_given_result_option_that_differs_is_refused(saved_run, args, dest, problem):
    folder, saved = saved_run
    with pytest.raises(CheckpointError) as info:
        checkpoint.resumed_options(saved, parse(*args), {dest}, folder)
    assert str(info.value) == ('--resume %s: the checkpoint was %s (start a new run in another '
                               '--output-dir)' % (folder, problem))
    assert info.value.exit_code == EXIT_USAGE


def test_an_option_saved_unset_and_given_now_is_refused(tmp_path, inputs):
    options = parse('--content', inputs['content'], '--style', inputs['style1'])
    folder = str(tmp_path)
    saved = checkpoint.result_options(options)
    assert saved['seed'] is None
    with pytest.raises(CheckpointError) as info:
        checkpoint.resumed_options(saved, parse('--seed', '5'), {'seed'}, folder)
    assert str(info.value) == ('--resume %s: the checkpoint was made without --seed, not '
                               '--seed 5 (start a new run in another --output-dir)' % folder)


def test_a_result_option_not_given_is_not_compared(saved_run):
    """Defaults of this command line that differ from the run's are not the user's doing."""
    folder, saved = saved_run
    resumed = checkpoint.resumed_options(saved, parse('--width', '800'), set(), folder)
    assert resumed.width == 64


def test_a_changed_content_image_is_refused(saved_run, inputs):
    folder, saved = saved_run
    with open(inputs['content'], 'wb') as f:
        f.write(b'content bytes, edited')
    with pytest.raises(CheckpointError) as info:
        checkpoint.resumed_options(saved, parse(), set(), folder)
    assert str(info.value) == ('--resume %s: the content image %s has changed since the '
                               'checkpoint' % (folder, inputs['content']))


def test_an_image_rewritten_with_the_same_bytes_passes(saved_run, inputs):
    """The bytes are compared, not the time they were written."""
    folder, saved = saved_run
    os.remove(inputs['style2'])
    with open(inputs['style2'], 'wb') as f:
        f.write(b'style two')
    os.utime(inputs['style2'], (1, 1))
    checkpoint.resumed_options(saved, parse(), set(), folder)


def test_a_missing_style_image_is_refused(saved_run, inputs):
    folder, saved = saved_run
    os.remove(inputs['style2'])
    with pytest.raises(CheckpointError) as info:
        checkpoint.resumed_options(saved, parse(), set(), folder)
    assert str(info.value) == '--resume %s: the style image %s is missing' % (
        folder, inputs['style2'])


def test_a_changed_initial_image_is_refused(tmp_path, inputs):
    options = parse('--content', inputs['content'], '--style', inputs['style1'],
                    '--initial', inputs['initial'])
    saved = checkpoint.result_options(options)
    assert saved['initial_sha256'] == hashlib.sha256(b'initial bytes').hexdigest()
    checkpoint.resumed_options(saved, parse(), set(), str(tmp_path))  # unchanged: passes
    with open(inputs['initial'], 'ab') as f:
        f.write(b'!')
    with pytest.raises(CheckpointError, match='the initial image .* has changed since'):
        checkpoint.resumed_options(saved, parse(), set(), str(tmp_path))


def test_a_saved_path_no_file_system_takes_is_refused(tmp_path, inputs):
    """A saved path with a lone surrogate (JSON's \\ud800) or a NUL cannot be opened at all:
    one line naming it, not a traceback."""
    saved = checkpoint.result_options(parse('--content', inputs['content'], '--style',
                                            inputs['style1']))
    for path in ['a\ud800.jpg', 'a\x00.jpg']:
        with pytest.raises(CheckpointError, match='the content image .* cannot be read'):
            checkpoint.resumed_options(dict(saved, content=path), parse(), set(), str(tmp_path))


# ----------------------------------------------------------------------------------------------
# Saved options: valid only if the command line could have given them
# ----------------------------------------------------------------------------------------------

def build_parser():
    return cli.build_parser('conv4_2', [('conv1_1', 1.0)])


def set_saved_option(dest, value):
    """A damage: the saved option dest (or 'settings.<dest>') set to value in the file."""
    def change(meta):
        options = meta['options']
        if dest.startswith('settings.'):
            options, dest_there = options['settings'], dest[len('settings.'):]
        else:
            dest_there = dest
        options[dest_there] = value
    return rewritten(edit_meta(change))


# (saved option, value written into the file, what the message says after 'is damaged (')
BAD_OPTIONS = [
    ('width', 'abc', "the saved --width: 'abc' is not a whole number"),
    ('width', 64.5, "the saved --width: '64.5' is not a whole number"),
    ('width', -5, "the saved --width: '-5' must be greater than 0"),
    ('width', '64', "the saved --width: '64', where the command line gives 64"),
    ('width', True, "the saved --width: 'True' is not a whole number"),
    ('width', None, 'the saved --width: null, but every run has one'),
    ('iterations', 'x', "the saved --iterations: 'x' is not a whole number"),
    ('iterations', -1, "the saved --iterations: '-1' must be greater than 0"),
    ('learning_rate', 'x', "the saved --learning-rate: 'x' is not a number"),
    ('learning_rate', -1, "the saved --learning-rate: '-1' must be greater than 0"),
    ('content_layer', 'nope', "the saved --content-layer: unknown layer 'nope' (one of "),
    ('style_layers', [['nope', 1]], "the saved --style-layers: unknown layer 'nope' (one of "),
    ('style_layers', 'conv1_1', "the saved --style-layers: 'conv1_1' needs a weight"),
    ('style_layers', [['conv1_1', '0.5']],
     "the saved --style-layers: [['conv1_1', '0.5']], where the command line gives "
     "[['conv1_1', 0.5]]"),
    ('stage_iterations', [3, 0], "the saved --stage-iterations: '3,0' is not a list of positive"),
    ('style_blend_weights', [], 'the saved --style-blend-weights: none, but it takes one or'),
    ('pooling', 'median', "the saved --pooling: 'median' is not one of avg, max"),
    ('precision', 'float16',
     "the saved --precision: 'float16' is not one of float32, bfloat16, auto"),
    ('optimizer', 'sgd', "the saved --optimizer: 'sgd' is not one of adam, lbfgs"),
    ('seed', 2 ** 40, "the saved --seed: '%d' must be at most %d" % (2 ** 40, 2 ** 32 - 1)),
    ('preserve_colors', 'yes', "the saved --preserve-colors: 'yes' is neither True nor False"),
    ('settings', [1, 2], 'the settings are [1, 2], not options and their values'),
    ('settings.save_every', 'x', "the saved --save-every: 'x' is not a whole number"),
    ('settings.save_every', -3, "the saved --save-every: '-3' must be at least 0"),
    ('settings.max_memory', '6G',
     "the saved --max-memory: '6G', where the command line gives %d" % (6 * 2 ** 30)),
    ('settings.no_tune', 1, 'the saved --no-tune: 1 is neither True nor False'),
]


@pytest.mark.parametrize('dest, value, expected', BAD_OPTIONS,
                         ids=['%s=%r' % (dest, value) for dest, value, _ in BAD_OPTIONS])
def test_a_saved_option_no_command_line_gives_is_a_one_line_error(run_dir, run_options, dest,
                                                                 value, expected):
    checkpoint.save_checkpoint(run_dir, make_checkpoint(checkpoint.result_options(run_options)))
    path = checkpoint.checkpoint_path(run_dir)
    checkpoint.load_checkpoint(run_dir, build_parser())  # passes before the damage
    set_saved_option(dest, value)(path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_checkpoint(run_dir, build_parser())
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith('--resume %s: %s is damaged (%s' % (run_dir, path, expected)), \
        message
    assert message.endswith(')')
    assert info.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize('args', [
    (),
    ('--seed', str(2 ** 32 - 1), '--max-memory', '1.5G', '--style-layers',
     'conv1_1:1e-300,conv5_1:0.1', '--optimizer', 'lbfgs', '--precision', 'auto'),
    ('--max-memory', '0.3K', '--stage-iterations', '3,2', '--start-width', '10',
     '--scale-factor', '1.0000001', '--noise-ratio', '0', '--average', '0.999',
     '--pooling', 'max', '--preserve-colors', '--no-tune', '--no-download', '--save-every', '0'),
])
def test_the_options_of_any_command_line_pass(run_dir, inputs, args):
    """What the parser gives, saved and loaded back, is taken: nothing valid is refused (the
    sizes of --max-memory are saved in bytes; floats of every size)."""
    options = parse('--content', inputs['content'], '--style', inputs['style1'], *args)
    saved = make_checkpoint(checkpoint.result_options(options))
    checkpoint.save_checkpoint(run_dir, saved)
    loaded = checkpoint.load_checkpoint(run_dir, build_parser())
    assert loaded.options == saved.options


def test_a_saved_option_without_an_action_is_not_checked(saved_run):
    """Options the parser has no action for (an older or newer parser) are left alone."""
    folder, saved = saved_run
    parser = build_parser()
    parser._actions = [action for action in parser._actions if action.dest != 'width']
    saved = dict(saved, width='abc')
    assert checkpoint.options_problem(saved, parser) is None
    assert 'the saved --width' in checkpoint.options_problem(saved, build_parser())


@pytest.mark.parametrize('dest, value, expected', [
    ('width', 'abc', "the saved --width: 'abc' is not a whole number"),
    ('settings.max_memory', '6G', "the saved --max-memory: '6G', where the command line"),
])
def test_resume_with_a_damaged_option_exits_2_with_one_line(saved_run, capsys, dest, value,
                                                           expected):
    """art_generation.py --resume DIR: nst.cli.parse_options loads the checkpoint with its
    parser, and the error is one line, exit code 2 (never a traceback)."""
    folder, _ = saved_run
    path = checkpoint.checkpoint_path(folder)
    set_saved_option(dest, value)(path)
    capsys.readouterr()
    outcome = cli.Outcome()
    with cli.exit_codes(outcome):
        cli.parse_options('conv4_2', [('conv1_1', 1.0)], ['--resume', folder])
    err = capsys.readouterr().err
    assert outcome.code == EXIT_USAGE, err
    assert err.startswith('error: --resume %s: %s is damaged (%s' % (folder, path, expected))
    assert err.count('\n') == 1 and err.endswith(')\n')
