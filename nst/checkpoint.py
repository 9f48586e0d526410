"""Checkpoints: `art_generation.py --resume DIR` continues a run killed by Ctrl-C or SIGKILL.

One file, DIR/checkpoint.npz, replaced atomically (nst.files.atomic_write): a process killed at
any moment leaves the previous checkpoint or the new one. It holds NumPy arrays only, so it is
read with allow_pickle=False; everything that is not an array (counts, the random state, the
options) is one JSON text stored as a 0-d unicode array.

The options that shape the result are saved with the checkpoint, with the SHA-256 of the input
images, so that a resumed run continues the run it claims to continue, or says why it cannot;
each saved option must be one the command line could have given (options_problem).
"""

import argparse
import hashlib
import json
import operator
import os
from typing import NamedTuple

import numpy as np

from nst.errors import CheckpointError, ImageError, WriteError, one_line
from nst.files import atomic_write

CHECKPOINT_NAME = 'checkpoint.npz'
FORMAT_VERSION = 1

# Option dests (nst/cli.py build_parser) whose values shape the result: a resumed run takes
# them from the checkpoint, and refuses a different value given on the command line.
RESULT_OPTIONS = (
    'content', 'style', 'style_blend_weights', 'initial', 'width', 'content_layer',
    'style_layers', 'pooling', 'precision', 'alpha', 'beta', 'tv_weight', 'optimizer',
    'iterations', 'learning_rate', 'noise_ratio', 'seed', 'preserve_colors', 'start_width',
    'scale_factor', 'stage_iterations', 'style_scale', 'average')

# Option dests that only say where, how fast or how verbosely: given anew on each resume.
CHANGEABLE_OPTIONS = (
    'output_dir', 'model', 'no_download', 'no_tune', 'save_every', 'print_every', 'no_progress',
    'max_memory', 'resume')

# The changeable options a resumed run takes from the checkpoint unless they are given anew.
_RESUMED_SETTINGS = tuple(dest for dest in CHANGEABLE_OPTIONS
                          if dest not in ('output_dir', 'resume'))

# The input images whose bytes are hashed: (option dest, its digest's key, name in messages).
_INPUT_FILES = (('content', 'content_sha256', 'content image'),
                ('style', 'style_sha256', 'style image'),
                ('initial', 'initial_sha256', 'initial image'))
_DIGEST_KEYS = tuple(key for _, key, _ in _INPUT_FILES)

# The bit generators whose state a checkpoint may hold (checked by setting it on a fresh one).
_BIT_GENERATORS = ('PCG64', 'PCG64DXSM', 'Philox', 'SFC64', 'MT19937')

_DIGEST_CHUNK = 1 << 20


class AdamState(NamedTuple):
    """Adam's state at full image size (the TF1 optimizer keeps it in slot variables)."""
    m: np.ndarray        # (1, H, W, 3) float32, the first moment
    v: np.ndarray        # (1, H, W, 3) float32, the second moment
    step: int            # the step count t (beta1_power = beta1 ** t)


class Checkpoint(NamedTuple):
    """Where a run was, and all it needs to go on from there exactly."""
    stage: int             # 0-based index of the stage the run was in
    iteration: int         # iterations completed in that stage (its count: the stage is done)
    completed: int         # iterations completed over the whole run (the number of the next)
    image: np.ndarray      # (1, H, W, 3) float32, mean-subtracted, the stage's size
    adam: object           # AdamState, or None (L-BFGS: its history starts afresh)
    average: object        # None, or (sum (1, H, W, 3) float64, weight float) of --average
    rng_state: dict        # rng_state(generator): JSON-able, restored with set_rng_state
    options: dict          # result_options(options) at save time (JSON-able)
    history: np.ndarray    # (n, 4) float64 rows (iteration, J, J_content, J_style), whole run
    stage_starts: list     # [(stage index, first iteration number)] of the stages begun


def checkpoint_path(directory):
    """DIR/checkpoint.npz."""
    return os.path.join(directory, CHECKPOINT_NAME)


# ----------------------------------------------------------------------------------------------
# The random state
# ----------------------------------------------------------------------------------------------

def rng_state(generator):
    """The state of a numpy.random.Generator, a RandomState or the numpy.random module itself
    (the legacy global one np.random.seed seeds), as a JSON-able dict.

    PCG64's state holds ints above 2**64 (JSON keeps them exact); MT19937's key array becomes
    a list (set_rng_state takes it back as it is).
    """
    if isinstance(generator, np.random.Generator):
        state = generator.bit_generator.state
    else:
        state = generator.get_state(legacy=False)
    return _json_value(state)


def set_rng_state(generator, state):
    """Give generator (as for rng_state) the state rng_state returned: it then draws what the
    saved one would have drawn next."""
    if isinstance(generator, np.random.Generator):
        generator.bit_generator.state = state
    else:
        generator.set_state(state)


def _check_rng_state(state):
    """Set state on a fresh generator of its kind; ValueError if it cannot be one."""
    if not isinstance(state, dict) or state.get('bit_generator') not in _BIT_GENERATORS:
        raise ValueError('not the state of a known bit generator')
    try:
        if 'has_gauss' in state:  # RandomState's legacy=False form
            np.random.RandomState().set_state(state)
        else:
            getattr(np.random, state['bit_generator'])().state = state
    except (TypeError, KeyError, IndexError, OverflowError) as error:
        raise ValueError(one_line(error)) from None


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------

def save_checkpoint(directory, checkpoint):
    """Write checkpoint to DIR/checkpoint.npz, replacing the previous one atomically.

    A checkpoint that breaks the rules load_checkpoint checks is a bug of the caller:
    ValueError, before anything is written. Raises WriteError (exit 1) when the file cannot be
    written (disk full, permissions); the previous checkpoint is then kept.
    """
    checkpoint = _normalised(checkpoint)
    problem = _problem(checkpoint)
    if problem:
        raise ValueError('checkpoint to save: %s' % problem)
    meta = {
        'stage': checkpoint.stage,
        'iteration': checkpoint.iteration,
        'completed': checkpoint.completed,
        'adam_step': None if checkpoint.adam is None else checkpoint.adam.step,
        'average_weight': None if checkpoint.average is None else checkpoint.average[1],
        'rng_state': checkpoint.rng_state,
        'options': checkpoint.options,
        'stage_starts': [list(start) for start in checkpoint.stage_starts],
    }
    arrays = {
        'format_version': np.array(FORMAT_VERSION, np.int64),
        'meta': np.array(json.dumps(meta, allow_nan=False, sort_keys=True)),
        'image': checkpoint.image,
        'history': checkpoint.history,
    }
    if checkpoint.adam is not None:
        arrays['adam_m'] = checkpoint.adam.m
        arrays['adam_v'] = checkpoint.adam.v
    if checkpoint.average is not None:
        arrays['average_sum'] = checkpoint.average[0]

    def write(temp_path):
        # A file object, not the path: np.savez would add '.npz' to a path without it.
        with open(temp_path, 'wb') as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())  # the bytes on disk before the rename makes them the checkpoint

    path = checkpoint_path(directory)
    try:
        atomic_write(path, write)
    except OSError as error:
        raise WriteError('%s: cannot be written (%s)' % (path, one_line(error))) from None


def load_checkpoint(directory, parser=None):
    """The Checkpoint in DIR/checkpoint.npz; reads only.

    parser: the command line's (nst.cli.build_parser); given, each saved option must also be a
    value that command line could give (options_problem).

    Raises CheckpointError (exit 2), one line naming DIR: no such folder, no checkpoint there,
    unreadable, damaged (truncated, not a checkpoint, arrays of the wrong shape, kind or
    values, options no command line gives), or written by another format version.
    """
    def fail(problem):
        return CheckpointError('--resume %s: %s' % (directory, problem))

    if not os.path.isdir(directory):
        raise fail('no such folder')
    path = checkpoint_path(directory)
    if not os.path.lexists(path):
        raise fail('no checkpoint there (%s not found)' % path)
    try:
        f = open(path, 'rb')
    except OSError as error:
        raise fail('%s cannot be read (%s)' % (path, one_line(error))) from None
    with f:
        try:
            with np.load(f, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except Exception:  # noqa: BLE001
            # The zip and .npy readers raise a dozen types on damaged input (BadZipFile,
            # ValueError, EOFError, zlib.error, struct.error, ...): all mean the same here.
            # np.load of a plain .npy returns an ndarray, which has no .files: the same too.
            raise fail('%s is damaged (truncated or not a checkpoint)' % path) from None

    version = arrays.get('format_version')
    if version is None or version.shape != () or version.dtype.kind not in 'iu':
        raise fail('%s is damaged (no format version: not a checkpoint)' % path)
    if int(version) != FORMAT_VERSION:
        raise fail('%s was written by format version %d; this program reads %d'
                   % (path, int(version), FORMAT_VERSION))
    try:
        checkpoint = _from_arrays(arrays)
    except ValueError as error:
        raise fail('%s is damaged (%s)' % (path, error)) from None
    problem = _problem(checkpoint)
    if problem is None and parser is not None:
        problem = options_problem(checkpoint.options, parser)
    if problem:
        raise fail('%s is damaged (%s)' % (path, problem))
    return checkpoint


def _from_arrays(arrays):
    """A Checkpoint from the arrays of a format-1 file; ValueError names what is missing."""
    for name in ('meta', 'image', 'history'):
        if name not in arrays:
            raise ValueError('no %r array' % name)
    meta_array = arrays['meta']
    if meta_array.shape != () or meta_array.dtype.kind != 'U':
        raise ValueError("'meta' is not a text")
    try:
        meta = json.loads(meta_array.item())
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        raise ValueError("'meta' is not JSON") from None
    keys = ('stage', 'iteration', 'completed', 'adam_step', 'average_weight', 'rng_state',
            'options', 'stage_starts')
    if not isinstance(meta, dict) or any(key not in meta for key in keys):
        raise ValueError("'meta' lacks some of %s" % ', '.join(keys))

    adam = None
    if meta['adam_step'] is not None:
        if 'adam_m' not in arrays or 'adam_v' not in arrays:
            raise ValueError('an Adam step count but no adam_m or adam_v array')
        adam = AdamState(arrays['adam_m'], arrays['adam_v'], meta['adam_step'])
    average = None
    if meta['average_weight'] is not None:
        if 'average_sum' not in arrays:
            raise ValueError('an average weight but no average_sum array')
        average = (arrays['average_sum'], meta['average_weight'])
    starts = meta['stage_starts']
    if not isinstance(starts, list) or not all(
            isinstance(start, list) and len(start) == 2 for start in starts):
        raise ValueError("'stage_starts' is not a list of pairs")
    return Checkpoint(meta['stage'], meta['iteration'], meta['completed'], arrays['image'],
                      adam, average, meta['rng_state'], meta['options'], arrays['history'],
                      [tuple(start) for start in starts])


def _normalised(checkpoint):
    """checkpoint with the dtypes and Python types the file holds (so that what is loaded equals
    what was saved): arrays as float32 or float64, counts as int, the weight as float."""
    adam = checkpoint.adam
    if adam is not None:
        adam = AdamState(np.asarray(adam.m, np.float32), np.asarray(adam.v, np.float32),
                         _count(adam.step))
    average = checkpoint.average
    if average is not None:
        average = (np.asarray(average[0], np.float64), float(average[1]))
    history = np.asarray(checkpoint.history, np.float64)
    if history.size == 0:
        history = history.reshape(0, 4)  # an empty list has shape (0,)
    return checkpoint._replace(
        stage=_count(checkpoint.stage), iteration=_count(checkpoint.iteration),
        completed=_count(checkpoint.completed), image=np.asarray(checkpoint.image, np.float32),
        adam=adam, average=average, history=history,
        stage_starts=[(_count(index), _count(first)) for index, first in checkpoint.stage_starts])


def _count(value):
    """A NumPy or Python integer as int (a float is refused: it is a bug, not a count)."""
    return operator.index(value)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _problem(checkpoint):
    """What breaks a checkpoint's rules, in a few words; None when nothing does."""
    for name in ('stage', 'iteration', 'completed'):
        if not _is_count(getattr(checkpoint, name)):
            return '%s is %r, not a count' % (name, getattr(checkpoint, name))
    if checkpoint.iteration > checkpoint.completed:
        return 'iteration %d of the stage is past %d completed in all' % (
            checkpoint.iteration, checkpoint.completed)
    image = checkpoint.image
    if (image.dtype != np.float32 or image.ndim != 4 or image.shape[0] != 1
            or image.shape[3] != 3 or image.size == 0):
        return 'the image is %s %s, not (1, H, W, 3) float32' % (image.dtype, image.shape)
    if not np.isfinite(image).all():
        return 'the image is not finite'
    if checkpoint.adam is not None:
        m, v, step = checkpoint.adam
        for name, moment in (('m', m), ('v', v)):
            if moment.dtype != np.float32 or moment.shape != image.shape:
                return "Adam's %s is %s %s, not %s float32 as the image" % (
                    name, moment.dtype, moment.shape, image.shape)
            if not np.isfinite(moment).all():
                return "Adam's %s is not finite" % name
        if (v < 0).any():
            return "Adam's v is negative"
        if not _is_count(step):
            return "Adam's step is %r, not a count" % (step,)
        if step > checkpoint.iteration:
            # Adam starts afresh at each stage, so its step is the stage's iteration; a resumed
            # run replays that many steps (nst.optimize._float32_power): no more than were run.
            return "Adam's step %d is past the stage's iteration %d" % (
                step, checkpoint.iteration)
    if checkpoint.average is not None:
        total, weight = checkpoint.average
        if total.dtype != np.float64 or total.shape != image.shape:
            return 'the average is %s %s, not %s float64 as the image' % (
                total.dtype, total.shape, image.shape)
        if not np.isfinite(total).all():
            return 'the average is not finite'
        if not isinstance(weight, float) or not np.isfinite(weight) or weight < 0:
            return "the average's weight is %r, not a non-negative number" % (weight,)
    history = checkpoint.history
    if history.dtype != np.float64 or history.ndim != 2 or history.shape[1] != 4:
        return 'the history is %s %s, not (n, 4) float64' % (history.dtype, history.shape)
    if not all(_is_count(index) and _is_count(first) for index, first in checkpoint.stage_starts):
        return 'the stage starts are not pairs of counts'
    if any(index > checkpoint.stage for index, _ in checkpoint.stage_starts):
        return 'the stage starts name a stage after stage %d, the one it is at' % checkpoint.stage
    try:
        _check_rng_state(checkpoint.rng_state)
    except ValueError as error:
        return 'the random state: %s' % error
    options = checkpoint.options
    missing = [key for key in RESULT_OPTIONS + _DIGEST_KEYS
               if not isinstance(options, dict) or key not in options]
    if missing:
        return 'the options lack %s' % ', '.join(missing)
    for dest, key, _ in _INPUT_FILES:
        if not _digests_match(options[dest], options[key]):
            return 'the options hold no digest for each of the %s paths' % _option(dest)
    return None


def options_problem(options, parser):
    """What makes saved options (result_options, checked by _problem) ones that no command line
    of parser gives, in a few words; None when each one could be given.

    A saved option is valid only if the command line could have produced it, so each one, and
    each saved setting, is written back as text and parsed by its own argparse action (its
    type, which checks kind and range, and its choices): the rules are the parser's, not a copy
    that could drift from them. Checks that need several options (nst.cli.check_options) are
    made on the resumed options as on any others.
    """
    settings = options.get('settings', {})
    if not isinstance(settings, dict):
        return 'the settings are %r, not options and their values' % (settings,)
    actions = {action.dest: action for action in parser._actions}
    saved = [(dest, options[dest]) for dest in RESULT_OPTIONS] + [
        (dest, value) for dest, value in settings.items() if dest in _RESUMED_SETTINGS]
    for dest, value in saved:
        problem = _given_problem(actions[dest], value) if dest in actions else None
        if problem:
            return 'the saved %s: %s' % (_option(dest), problem)
    return None


def _given_problem(action, value):
    """Why value (JSON) is not what action gives for any command line; None if it is."""
    if action.nargs == 0:  # a flag: its const when given, its default when not
        if value is action.const or value is action.default:
            return None
        return '%r is neither %r nor %r' % (value, action.const, action.default)
    if value is None:  # unset: only where the option's default is
        return None if action.default is None else 'null, but every run has one'
    many = action.nargs == '+'
    if many and value == []:
        return 'none, but it takes one or more'
    parsed = []
    for item in value if many and isinstance(value, list) else [value]:
        try:
            text = _text(item)
            if action.dest == 'max_memory' and type(item) is int:
                text = '%rK' % (item / 1024)  # saved in bytes; the command line needs a unit
            item = action.type(text) if action.type else text
        except (argparse.ArgumentTypeError, TypeError, ValueError, OverflowError) as error:
            return one_line(error)
        if action.choices is not None and item not in action.choices:
            return '%r is not one of %s' % (item, ', '.join(map(str, action.choices)))
        parsed.append(_json_value(item))
    parsed = parsed if many else parsed[0]
    if parsed != value:  # e.g. the text '64' for --width, which gives the number 64
        return '%r, where the command line gives %r' % (value, parsed)
    return None


def _text(value, separators=',:'):
    """value written as on the command line: a list as N,N,..., of pairs as name:weight,..."""
    if isinstance(value, list) and separators:
        return separators[0].join(_text(item, separators[1:]) for item in value)
    return value if isinstance(value, str) else repr(value)


def _digests_match(paths, digests):
    """Whether digests (as result_options makes them) go with paths: one string per path."""
    if not paths:
        return digests is None
    if isinstance(paths, list):
        return (isinstance(digests, list) and len(digests) == len(paths)
                and all(isinstance(item, str) for item in paths + digests))
    return isinstance(paths, str) and isinstance(digests, str)


# ----------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------

def file_digest(path):
    """The SHA-256 of a file's bytes, hex; read in chunks (a photo may be large)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_DIGEST_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def result_options(options):
    """The options that shape the result (RESULT_OPTIONS of an argparse Namespace), JSON-able
    (lists for tuples: style_layers as [[name, weight], ...]), and the SHA-256 of the input
    images ('content_sha256', 'style_sha256' a list, 'initial_sha256' or None), so that a
    different file under the same path is caught on resume.

    Raises ImageError if an input image cannot be read.
    """
    values = {dest: _json_value(getattr(options, dest)) for dest in RESULT_OPTIONS}
    for dest, key, _ in _INPUT_FILES:
        # Absolute, so that a run resumed from another folder finds its images.
        values[dest] = _map_paths(values[dest], os.path.abspath)
        values[key] = _map_paths(getattr(options, dest), _readable_digest)
    # The other settings too, so that `--resume DIR` alone goes on as the run went.
    values['settings'] = {dest: _json_value(getattr(options, dest, None))
                          for dest in _RESUMED_SETTINGS}
    if values['settings']['model']:
        values['settings']['model'] = os.path.abspath(values['settings']['model'])
    return values


def _readable_digest(path):
    try:
        return file_digest(path)
    except OSError as error:
        raise ImageError('%s: cannot be read (%s)' % (path, one_line(error))) from None


def _map_paths(value, function):
    """function of a path, of each of a list of paths, or None for no path (--initial)."""
    if not value:
        return None
    if isinstance(value, (list, tuple)):
        return [function(path) for path in value]
    return function(value)


def _json_value(value):
    """value with tuples as lists and NumPy scalars and arrays as Python numbers and lists."""
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError('%r cannot be saved in a checkpoint' % (value,))


def _parsed_value(dest, value):
    """A saved (JSON) value as argparse gives it: style_layers as [(name, weight)]."""
    if dest == 'style_layers':
        return [(name, weight) for name, weight in value]
    return value


def resumed_options(checkpoint_options, options, given, directory):
    """The options of a resumed run: the saved value of every RESULT_OPTION, the current one of
    every other; output_dir is DIR unless given.

    checkpoint_options: the dict saved (result_options); options: the Namespace parsed now;
    given: the dests the user gave on this command line. Raises CheckpointError, one line, when
    a given result option differs from the saved one, or an input image (at its saved path)
    has changed or is missing.
    """
    def fail(problem):
        return CheckpointError('--resume %s: %s' % (directory, problem))

    for dest in RESULT_OPTIONS:
        if dest not in given:
            continue
        saved = checkpoint_options[dest]
        current = _json_value(getattr(options, dest))
        if _comparable(dest, current) != _comparable(dest, saved):
            raise fail('the checkpoint was made %s%s (start a new run in another --output-dir)'
                       % (_made_with(dest, saved), _instead(dest, saved, current)))
    for dest, key, kind in _INPUT_FILES:
        paths = checkpoint_options[dest]
        digests = checkpoint_options[key]
        if not paths:
            continue
        if not isinstance(paths, list):
            paths, digests = [paths], [digests]
        for path, digest in zip(paths, digests):
            try:
                unchanged = file_digest(path) == digest
            except FileNotFoundError:
                raise fail('the %s %s is missing' % (kind, path)) from None
            except (OSError, UnicodeError, ValueError) as error:  # a lone surrogate, a NUL
                raise fail('the %s %r cannot be read (%s)' % (kind, path, one_line(error))) \
                    from None
            if not unchanged:
                raise fail('the %s %s has changed since the checkpoint' % (kind, path))

    values = vars(options).copy()
    for dest in RESULT_OPTIONS:
        values[dest] = _parsed_value(dest, checkpoint_options[dest])
    for dest, value in checkpoint_options.get('settings', {}).items():
        if dest in _RESUMED_SETTINGS and dest not in given:
            values[dest] = value
    if 'output_dir' not in given:
        values['output_dir'] = directory
    return argparse.Namespace(**values)


def _comparable(dest, value):
    """A path compared as the file it names from here (images/x.jpg and ./images/x.jpg)."""
    if dest in ('content', 'style', 'initial'):
        return _map_paths(value, os.path.abspath)
    return value


def _option(dest):
    return '--' + dest.replace('_', '-')


def _shown(dest, value):
    """A value as it is written on the command line."""
    if dest == 'style_layers':
        return ','.join('%s:%r' % (name, weight) for name, weight in value)
    if dest == 'stage_iterations':
        return ','.join(str(count) for count in value)
    if isinstance(value, list):  # nargs='+'
        return ' '.join(str(item) for item in value)
    return str(value)


def _made_with(dest, saved):
    """'with --width 1920', 'without --seed', 'with --preserve-colors'."""
    if saved is None or saved is False:
        return 'without %s' % _option(dest)
    if saved is True:
        return 'with %s' % _option(dest)
    return 'with %s %s' % (_option(dest), _shown(dest, saved))


def _instead(dest, saved, current):
    """', not 800' after 'with --width 1920'; ', not --seed 5' after 'without --seed'; nothing
    after a flag (given, it can only be the opposite of the saved one)."""
    if isinstance(current, bool) or current is None:
        return ''
    if saved is None or isinstance(saved, bool):
        return ', not %s %s' % (_option(dest), _shown(dest, current))
    return ', not %s' % _shown(dest, current)
