"""The optimisation: the training graph around a cost J, and the loop of the course's model_nn
(art_generation.py) over the steps of Adam or L-BFGS-B, whole or in tiles, with the progress
bar, checkpoints and Ctrl-C.

The costs themselves are the course's graded functions (art_generation.py); this module takes
the tensors they built.
"""

import contextlib
import io
import math
import queue
import signal
import sys
import threading
from typing import NamedTuple

import numpy as np

from nst import fast_ops
from nst.config import MEANS
from nst.errors import Terminated
from nst.runtime import import_tf

STYLE_TRANSFER_COLLECTION = 'style_transfer'
INPUT_SETTER_COLLECTION = 'input_setter'
# tf.train.AdamOptimizer's defaults, which the course uses; the tiled loop's Adam (NumPy, at
# full size) takes the same steps.
ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8
REPORT_WAIT = 0.2  # seconds: how long the loop waits for L-BFGS-B's thread between signal checks


class FixedInputs:
    """Arrays a cost reads that stay fixed during the run (the content's and the styles'
    activations), held as placeholders.

    prepare() evaluates once everything of the graph that depends on them alone (the course's
    style Gram matrices G_S, for instance) and feeds those values to every step, so a cost
    written as the course writes it, compute_layer_style_cost(a_S, a_G), costs no more per
    step than one given G_S as a constant, and the graph holds no copy of the activations.
    """

    def __init__(self):
        self.values = {}  # placeholder -> array

    def hold(self, array):
        """A placeholder that stands for array (any shape) in the graph."""
        tf = import_tf()
        array = np.asarray(array)
        placeholder = tf.placeholder(tf.as_dtype(array.dtype), array.shape, name='fixed')
        self.values[placeholder] = array
        return placeholder

    def evaluated(self, sess, tensors):
        """Evaluate tensors in sess now and hold their values (hold, in the order given); return
        a stand-in for sess whose run(fetches) gives the placeholders of any of those tensors
        (one, or a list, tuple or dict of them), as the course's compute_style_cost reads a
        style's activations through sess.run. The cost built on them reads placeholders, not
        constants: no copy of the activations in the graph, and tiles feed each their own.

        The passes of every style run before any style cost is built: a session keeps the ops
        it has seen as they were, and prepare then rewires the Gram matrices' users
        (fast_ops.use_fast_grams)."""
        tensors = list(tensors)
        values = sess.run(tensors)
        return _EvaluatedSession({tensor.name: self.hold(value)
                                  for tensor, value in zip(tensors, values)})


class _EvaluatedSession:
    """A session on which some tensors have run (FixedInputs.evaluated): run() gives their
    held placeholders."""

    def __init__(self, held):
        self.held = held  # tensor name -> placeholder

    def run(self, fetches, feed_dict=None):
        if isinstance(fetches, dict):
            return {key: self.run(value) for key, value in fetches.items()}
        if isinstance(fetches, (list, tuple)):
            return type(fetches)(self.run(value) for value in fetches)
        name = getattr(fetches, 'name', fetches)
        if feed_dict or name not in self.held:
            raise ValueError('%s was not evaluated for the style cost: its session gives the '
                             'style layers\' activations only' % name)
        return self.held[name]


def total_variation_cost(image):
    """Squared total variation: the sum of squared differences between neighbouring pixels.

    image: (1, n_H, n_W, 3) tensor. A small weight of it smooths high-frequency noise
    (Mahendran and Vedaldi, 2015, with beta = 2).
    """
    tf = import_tf()
    down = image[:, 1:, :, :] - image[:, :-1, :, :]   # (1, n_H - 1, n_W, 3)
    right = image[:, :, 1:, :] - image[:, :, :-1, :]  # (1, n_H, n_W - 1, 3)
    return tf.reduce_sum(tf.square(down)) + tf.reduce_sum(tf.square(right))


class InputSetter:
    """Sets the model's input variable through one placeholder and one assign op, so the graph
    does not grow with each image set (model['input'].assign(image) adds a constant a call).

    InputSetter.of(model) gives the one setter of a model: each op set run in a session costs
    TensorFlow a graph optimisation (10-20 ms at start-up), so the passes and the loop share it.
    """

    def __init__(self, model):
        tf = import_tf()
        self.variable = model['input']
        self.feed = tf.placeholder(tf.float32, self.variable.shape, name='input_feed')
        self.assign = self.variable.assign(self.feed)

    @classmethod
    def of(cls, model):
        """The setter of model['input'], made on first use (kept in its graph)."""
        graph = model['input'].graph
        for setter in graph.get_collection(INPUT_SETTER_COLLECTION):
            if setter.variable is model['input']:
                return setter
        setter = cls(model)
        graph.add_to_collection(INPUT_SETTER_COLLECTION, setter)
        return setter

    def __call__(self, sess, image):
        sess.run(self.assign, {self.feed: image})


class StyleTransfer(NamedTuple):
    """What the optimisation loop needs of a built graph (see prepare)."""
    model: dict
    J: object             # scalar tensors ...
    J_content: object
    J_style: object
    train_step: object    # the Adam update op
    stepped_input: object  # the input read after train_step: fetching it runs one step
    gradient: object      # dJ/d(input), for L-BFGS and tiles
    set_input: InputSetter
    initializer: list     # initialises the input and Adam's moments
    feeds: dict           # tensor -> array, fed to every run (the fixed inputs, folded)
    fixed: list = []      # the FixedInputs' placeholders, in the order they were held
    sources: dict = {}    # each fed tensor -> the placeholders (of fixed) it depends on
    adam: object = None   # AdamVariables of train_step when prepare built it, else None
    learning_rate: float = 2.0  # Adam's, for the tiled loop's steps

    def run(self, sess, fetches):
        return sess.run(fetches, self.feeds)


class AdamVariables(NamedTuple):
    """The variables of a tf.train.AdamOptimizer's state for the input (for checkpoints)."""
    m: object
    v: object
    beta1_power: object  # ADAM_BETA1 ** steps taken
    beta2_power: object


def prepare(model, J, J_content, J_style, *, learning_rate=2.0, train_step=None, fixed=None,
            sess=None):
    """The training graph around J: Adam's step (train_step, or a new AdamOptimizer), the
    gradient for L-BFGS, the input setter and the initializer; registered in the graph so that
    model_nn(sess, image) finds it. The Gram matrices are computed without copying the
    activations (fast_ops.use_fast_grams), and with a faster gradient unless train_step was
    built already, computed when the backward pass reaches them (defer_gram_gradients).

    fixed: the FixedInputs the costs read; what depends on them alone is evaluated here, once,
    in sess (default: the default session).
    """
    tf = import_tf()
    image = model['input']
    fast_ops.use_fast_grams(image.graph)
    adam = None
    if train_step is None:
        optimizer = tf.train.AdamOptimizer(learning_rate, ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON)
        # minimize() in two halves, so that L-BFGS can use the same gradient tensor. Ungated:
        # gating makes each op's gradients wait for one another (a tuple of identities and a
        # group each, a sixth of the gradient's ops), which only orders a run, never changes it.
        [(gradient, _)] = optimizer.compute_gradients(
            J, var_list=[image], gate_gradients=tf.train.Optimizer.GATE_NONE)
        train_step = optimizer.apply_gradients([(gradient, image)])
        adam = AdamVariables(optimizer.get_slot(image, 'm'), optimizer.get_slot(image, 'v'),
                             *optimizer._get_beta_accumulators())
    else:
        [gradient] = tf.gradients(J, [image])
    fast_ops.defer_gram_gradients(image.graph)
    with tf.control_dependencies([train_step]):
        stepped_input = tf.identity(image)
    set_input = InputSetter.of(model)
    # A list of the initializers, not tf.global_variables_initializer(): its group op would
    # mark input/Assign, which the session has already seen, and TF warns of such changes.
    initializer = [variable.initializer for variable in tf.global_variables()]
    feeds, sources = {}, {}
    if fixed is not None and fixed.values:
        sess = sess or tf.get_default_session()
        feeds, sources = fold_fixed(sess, fixed.values)
    nst = StyleTransfer(model, J, J_content, J_style, train_step, stepped_input, gradient,
                        set_input, initializer, feeds,
                        list(fixed.values) if fixed is not None else [], sources, adam,
                        learning_rate)
    tf.add_to_collection(STYLE_TRANSFER_COLLECTION, nst)
    return nst


def fold_fixed(sess, values):
    """Evaluate once the tensors that depend only on the placeholders in values (and on
    constants) and are read by the rest of the graph; return them with their values, to feed,
    and with the placeholders each depends on: ({tensor: array}, {tensor: frozenset}).

    Feeding a tensor prunes what computes it, so each step skips that work. An op is 'fixed'
    when all its inputs are fixed or constant and at least one is fixed; stateful ops, variables
    and other placeholders are never fixed. Ops are visited in creation order, which is a
    topological order.
    """
    depends = {}  # fixed op -> the placeholders it depends on
    constant = set()
    placeholders = {tensor.op: tensor for tensor in values}
    for op in sess.graph.get_operations():
        if op in placeholders:
            depends[op] = frozenset([placeholders[op]])
            continue
        inputs = [t.op for t in op.inputs] + list(op.control_inputs)
        if op.op_def.is_stateful or not inputs:
            if op.type == 'Const':
                constant.add(op)
            continue
        if all(i in depends or i in constant for i in inputs):
            if any(i in depends for i in inputs):
                depends[op] = frozenset().union(*(depends.get(i, ()) for i in inputs))
            else:
                constant.add(op)
    frontier = [t for op in depends for t in op.outputs
                if any(c not in depends for c in t.consumers())]
    return (dict(zip(frontier, sess.run(frontier, values))),
            {t: depends[t.op] for t in frontier})


class TiledTargets(NamedTuple):
    """What a tiled stage feeds its one-tile graph: the fixed inputs of each tile."""
    tiling: object        # nst.tiles.Tiling
    style_feeds: dict     # fed tensor -> array: the style targets, the same for every tile
    content_feeds: dict   # (top, left) -> {fed tensor: array}: each tile's content target
    rng: object           # numpy Generator placing the seams at each step


def tile_targets(sess, nst, tiling, content_image, style_images, content_layer, style_layers,
                 rng):
    """The fixed inputs of every tile of a stage, for nst built on a tile-size model by
    art_generation.build_style_transfer (its fixed inputs held in that order: the content's
    activations, then each style's at each style layer).

    content_image, style_images[k]: (1, H, W, 3) mean-subtracted, the stage's full size.
    A tile's content target is the content tile's activations at the same place. The style
    targets are Gram matrices (the course's compute_layer_style_cost folds a_S into G_S): the
    Gram matrix of a whole feature map is the sum of those of its parts, so each style image is
    run tile by tile, each tile's Gram summed over the feature cells it owns
    (tiles.owned_masks), and the sum scaled to a tile's cells: G_S / cells * tile cells, which
    the course's normalisation by the tile's n_H n_W turns back into the whole image's.
    """
    from nst import tiles

    layer_names = [name for name, _ in style_layers]
    expected = 1 + len(style_images) * len(layer_names)
    if len(nst.fixed) != expected:
        raise ValueError('tiles: %d fixed inputs in the graph, expected %d (the content, then '
                         'each style at each layer)' % (len(nst.fixed), expected))
    model = nst.model
    content_holder, style_holders = nst.fixed[0], nst.fixed[1:]

    def folded(holder, value):
        """The fed tensors that depend on holder alone, evaluated with holder = value."""
        tensors = [t for t, sources in nst.sources.items() if holder in sources]
        if any(len(nst.sources[t]) > 1 for t in tensors):
            raise ValueError('tiles: a cost mixes two fixed inputs; tiles need each style '
                             "layer's cost to read one style's activations")
        return dict(zip(tensors, sess.run(tensors, {holder: value})))

    content_feeds = {}
    for place in tiling.tiles():
        nst.set_input(sess, tiles.crop(content_image, *place, tiling.tile_size))
        content_feeds[place] = folded(content_holder, sess.run(model[content_layer]))

    style_feeds = {}
    masks = {name: tiles.owned_masks(tiling, _layer_factor(model, name))
             for name in layer_names}
    for k, style_image in enumerate(style_images):
        holders = dict(zip(layer_names, style_holders[k * len(layer_names):]))
        sums, cells = {}, dict.fromkeys(layer_names, 0.0)
        for place in tiling.tiles():
            nst.set_input(sess, tiles.crop(style_image, *place, tiling.tile_size))
            activations = sess.run({name: model[name] for name in layer_names})
            for name in layer_names:
                mask = masks[name][place]  # (1, rows, cols, 1): the cells this tile owns
                cells[name] += float(mask.sum())
                for tensor, value in folded(holders[name], activations[name] * mask).items():
                    sums[tensor] = sums.get(tensor, 0) + value.astype(np.float64)
        for name in layer_names:
            tile_cells = np.prod(model[name].get_shape().as_list()[1:3])
            for tensor in [t for t in sums if holders[name] in nst.sources[t]]:
                style_feeds[tensor] = (sums[tensor] * (tile_cells / cells[name])).astype(
                    tensor.dtype.as_numpy_dtype)
    return TiledTargets(tiling, style_feeds, content_feeds, rng)


def _layer_factor(model, name):
    """Pixels of the input per feature cell of model[name] along an axis (2^pools before it)."""
    input_height = model['input'].get_shape().as_list()[1]
    layer_height = model[name].get_shape().as_list()[1]
    factor = 1
    while -(-input_height // factor) > layer_height:
        factor *= 2
    return factor


class RunResult(NamedTuple):
    image: np.ndarray       # (1, H, W, 3) the latest finite image, mean-subtracted
    history: list           # [(iteration, total, content, style), ...]
    interrupted: bool       # stopped by Ctrl-C or SIGTERM (StopRequest)
    diverged: object        # False, or why it stopped: 'cost' (not finite) or 'gradient'
                            # (Adam's moments overflowed float32)
    iterations: int         # iterations completed


class StopRequest:
    """Turns Ctrl-C (SIGINT) into a request to stop at the end of the current iteration, and
    SIGTERM likewise (what `timeout`, `kill`, `docker stop` and systemd send first).

    signal_number: the signal that asked (SIGINT or SIGTERM), once requested.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.signal_number = None
        self._previous = {}
        self._depth = 0  # entered this many times: the handlers go at the outermost exit

    def __enter__(self):
        self._depth += 1
        if self._depth == 1:
            try:
                self._previous = {number: signal.signal(number, self._handle)
                                  for number in self.SIGNALS}
            except ValueError:  # not the main thread: leave the signals alone
                self._previous = {}
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second one: stop now
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested = True
        self.signal_number = signum

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            for number, previous in self._previous.items():
                signal.signal(number, previous)
            self._previous = {}
        return False

    def covering(self, items):
        """Yield items with Ctrl-C turned into this request throughout, between them too (a
        stage's graph being built): a Ctrl-C there stops the next optimise after its first
        iteration, and the run ends as an interrupted one."""
        with self:
            yield from items


class LoopSnapshot(NamedTuple):
    """The state of an optimisation after some iterations, for a checkpoint."""
    iterations: int         # iterations completed in this optimise call
    image: np.ndarray       # (1, H, W, 3) float32: the latest iterate (not the average)
    adam: object            # nst.checkpoint.AdamState, or None for L-BFGS
    average: object         # (sum, weight) of --average's moving average, or None
    rng_state: object       # the tiles' seam generator's state, or None
    history: list           # [(iteration, J, J_content, J_style), ...] of this call


class Continuation(NamedTuple):
    """What an optimisation continues from (a checkpoint): Adam's state and the average."""
    adam: object = None     # nst.checkpoint.AdamState, or None: Adam starts afresh
    average: object = None  # (sum, weight), or None


class Optimisation:
    """The minimisation of nst.J from input_image, an iteration at a time: the loop of the
    course's model_nn (art_generation.py), which prints and saves as the course does.

        with Optimisation(sess, nst, input_image, num_iterations, **options) as run:
            for i in run.iterations():      # one training step each
                run.generated_image()       # the image after it
                run.costs()                 # (J, J_content, J_style) of the model's input
        run.result                          # a RunResult

    Entering initialises Adam's variables and assigns input_image to the model's input (the
    course's first two session runs), turns Ctrl-C and SIGTERM into a request to stop after the
    current iteration (stop, a StopRequest) and shows the progress bar (what is printed meanwhile
    goes above it). Each iteration is one step of the optimizer: Adam's train_step, or with tiled
    (TiledTargets: nst is built on one tile) an Adam step at full size over every tile, or an
    iteration of L-BFGS-B (optimizer='lbfgs'). The loop ends early on a stop request, or when
    the cost or the image stops being finite (the last finite image is kept).

    Options: progress (True or False for a bar of this run alone, or a Progress shared by the
    stages of a run); first_iteration (the number of the first iteration: later stages of a run
    go on counting); average (the decay of an exponential moving average of the iterates, 0:
    off; the average is the generated image); resume (a Continuation to go on from);
    checkpoint (called with a LoopSnapshot every checkpoint_every iterations, after the
    iteration's body, and when a stop request ends the run); finished (called with the
    RunResult on leaving, after the body).
    """

    def __init__(self, sess, nst, input_image, num_iterations, *, optimizer='adam',
                 progress=True, stop=None, first_iteration=0, average=0.0, tiled=None,
                 resume=None, checkpoint=None, checkpoint_every=20, finished=None):
        if optimizer not in ('adam', 'lbfgs') or (tiled is not None and optimizer != 'adam'):
            raise ValueError('optimizer must be adam%s, not %r'
                             % ('' if tiled is not None else ' or lbfgs', optimizer))
        self.sess, self.nst = sess, nst
        self.input_image = np.asarray(input_image, dtype=np.float32)
        self.num_iterations, self.optimizer, self.tiled = num_iterations, optimizer, tiled
        self.stop = stop or StopRequest()
        self.resume = resume or Continuation()
        self.first_iteration, self.average = first_iteration, average
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.finished = finished
        self.progress = progress
        self.result = None  # the RunResult, once left
        self._state = None
        self._exits = None
        self._running = None  # the iterations() under way
        self._checkpointed = None  # the iterations completed at the last checkpoint written

    def __enter__(self):
        sess, nst = self.sess, self.nst
        if self.tiled is None:  # in one run (one graph optimisation): Adam's state, the input
            setter = nst.set_input
            others = [op for op in nst.initializer if op is not setter.variable.initializer]
            sess.run(others + [setter.assign], {setter.feed: self.input_image})
        else:
            sess.run(nst.initializer)
        with contextlib.ExitStack() as exits:
            if not isinstance(self.progress, Progress):  # a bar of this run alone
                self.progress = exits.enter_context(
                    Progress([self.num_iterations], enabled=self.progress))
                self.progress.start_stage(0)
            # Printed lines go above the progress bar, not through it.
            lines = _LinesAboveTheBar(sys.stdout)
            exits.enter_context(contextlib.redirect_stdout(lines))
            exits.callback(lines.flush)  # what the body printed last, before stdout is back
            exits.enter_context(self.stop)
            state = _LoopState(sess, nst, self.num_iterations, self.progress,
                               self.first_iteration, self.average)
            state.tiled = self.tiled
            if self.resume.average is not None:
                state.average, state.average_weight = self.resume.average
            state.last_image = self.input_image
            self._state, self._exits = state, exits.pop_all()
        return self

    def iterations(self):
        """Take the steps: yield the number of each iteration (first_iteration on) once it is
        done, until num_iterations are or the loop ends early. A checkpoint due is written
        when the body of the iteration has run (after its image is saved)."""
        self._running = self._iterate()
        return self._running

    def _iterate(self):
        state, stop = self._state, self.stop
        if self.tiled is not None:
            steps = _tiled_adam_steps(state, self.resume.adam)
        elif self.optimizer == 'adam':
            steps = _adam_steps(state, self.resume.adam)
        else:
            steps = _lbfgs_steps(state)
        with contextlib.closing(steps):
            for image, costs in steps:
                i = state.completed  # of this call; number: of the run
                if not state.after_iteration(i, image, costs):
                    return
                number = self.first_iteration + i
                yield number
                sys.stdout.flush()  # the lines it printed, at once and in one piece
                stopping = stop.requested  # read once an iteration (benchmarks time it)
                due = self.checkpoint_every and number % self.checkpoint_every == 0
                if (self.checkpoint is not None and (due or stopping)
                        and not self._save_checkpoint()):
                    return
                if stopping:  # its checkpoint written before model_nn's last save
                    return

    def _save_checkpoint(self):
        """Checkpoint the latest iterate, unless that was done already; False (and no
        checkpoint) when Adam's state has overflowed (then the run has diverged)."""
        state = self._state
        if self._checkpointed == state.completed:
            return True
        snapshot = state.snapshot()  # Adam's state read once, checked and saved
        if _adam_overflowed(snapshot.adam):
            state.diverged = 'gradient'
            return False
        self.checkpoint(snapshot)
        self._checkpointed = state.completed
        return True

    def generated_image(self):
        """The image of the run so far: the latest iterate (the last finite one), or with
        average the average of the iterates. (1, H, W, 3) float32, mean-subtracted."""
        return self._state.result()

    def costs(self):
        """(J, J_content, J_style) of the model's input: the latest iterate's (tiled: of the
        image before the latest step, which the step computed)."""
        return self._state.costs()

    def __exit__(self, kind, error, trace):
        try:
            if self._running is not None:
                self._running.close()  # L-BFGS-B's thread ended, if the body raised
        finally:
            self._exits.close()  # stdout, the signals given back; a bar of its own closed
        if kind is not None:
            return False
        state = self._state
        interrupted = self.stop.requested  # also by a Ctrl-C after the loop (the last save)
        if not state.diverged:  # Adam's state checked once: as it is saved, or now
            if interrupted and self.checkpoint is not None:
                self._save_checkpoint()
            elif self._checkpointed != state.completed and state.adam_overflowed():
                state.diverged = 'gradient'
        self.result = RunResult(state.result(), state.history, interrupted, state.diverged,
                                state.completed)
        if self.finished is not None:
            self.finished(self.result)
        return False


def optimise(sess, nst, input_image, num_iterations, **options):
    """All the iterations of an Optimisation (its options), with nothing printed or saved
    (model_nn, in art_generation.py, is the loop that prints and saves): its RunResult."""
    with Optimisation(sess, nst, input_image, num_iterations, **options) as run:
        for _ in run.iterations():
            pass
    return run.result


class Progress:
    """One progress bar for a whole run, of one stage or several (tqdm.auto: a widget in
    Jupyter, text on a terminal).

    stages: the iterations of each stage; work: the pixels of each stage. The bar counts work
    (an iteration's cost grows with its pixels), so its remaining time is that of the whole
    run, not of the current stage. It appears when the first stage starts, so that what is
    printed while the graph is built does not cut through it.
    """

    def __init__(self, stages, work=None, enabled=True):
        self.stages = list(stages)
        self.work = list(work or [1] * len(self.stages))
        self.enabled = enabled
        self.bar = None
        self.stage = 0
        self.done = 0  # iterations done in the current stage
        self.name = None
        self.tiles = None     # (done, count) of a tiled step's tiles
        self.step_work = 0.0  # work counted by the current step's tiles so far

    def start_stage(self, index, name=None):
        self.stage, self.done, self.name = index, 0, name
        if self.bar is None:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=sum(n * w for n, w in zip(self.stages, self.work)),
                            desc=self._description(), disable=not self.enabled,
                            file=sys.stderr, dynamic_ncols=True,
                            bar_format='{desc}: {percentage:3.0f}%|{bar}| '
                                       '[{elapsed}<{remaining}{postfix}]')
        self.bar.set_description_str(self._description(), refresh=False)

    def tile(self, done, count):
        """Tile done of count of the current step is done: the bar moves by its share."""
        self.tiles = done, count
        share = self.work[self.stage] * done / count - self.step_work
        self.step_work += share
        self.bar.set_description_str(self._description(), refresh=False)
        self._advance(share)

    def step(self, costs):
        self.done += 1
        self.tiles = None
        self.bar.set_description_str(self._description(), refresh=False)
        self.bar.set_postfix_str('J=%.3g content=%.3g style=%.3g' % tuple(costs), refresh=False)
        self._advance(self.work[self.stage] - self.step_work)
        self.step_work = 0.0

    def _advance(self, work):
        # Never past the total: a step's tiles' shares, rounded, can add up to a hair more
        # than the step (tqdm then warns on stderr and shows a negative time left).
        self.bar.update(min(work, self.bar.total - self.bar.n))

    def close(self):
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()  # also when the run fails: the bar's line is ended before the error
        return False

    def _description(self):
        counted = '%d/%d it' % (self.done, self.stages[self.stage])
        if self.tiles is not None:
            counted += ', tile %d/%d' % self.tiles
        return '%s, %s' % (self.name, counted) if self.name else counted


class _LinesAboveTheBar(io.TextIOBase):
    """Standard output while a progress bar shows: what is printed is held until flushed (the
    loop flushes after each iteration), then written in one piece through tqdm.write, which
    clears the bars of the terminal first and draws them again below. (tqdm.write clears them
    only when writing to sys.stdout or sys.stderr, which this file replaces meanwhile.)"""

    def __init__(self, stream):
        self.stream = stream
        self.held = []

    def writable(self):
        return True

    def write(self, text):
        self.held.append(text)
        return len(text)

    def flush(self):
        from tqdm.auto import tqdm
        text, self.held = ''.join(self.held), []
        if text:
            with contextlib.redirect_stdout(self.stream):
                tqdm.write(text, file=self.stream, end='')
        self.stream.flush()


class _LoopState:
    """Bookkeeping shared by the optimisers: the latest images, their costs, the progress bar,
    the average of the iterates."""

    def __init__(self, sess, nst, num_iterations, progress, first_iteration, average):
        self.sess, self.nst = sess, nst
        self.num_iterations, self.progress = num_iterations, progress
        self.first_iteration = first_iteration
        self.history = []
        self.completed = 0
        self.diverged = False
        self.last_image = None
        self.previous_image = None  # the last image before last_image
        self.decay = average
        self.average = None          # sum of decay^k-weighted iterates ...
        self.average_weight = 0.0    # ... and of the weights: the bias-corrected average
        self.tiled = None            # TiledTargets, or None
        self.adam = None             # () -> AdamState of the latest iterate (the Adam loops)
        self.last_costs = None       # the tiled loop's costs of its latest step

    def snapshot(self):
        """A LoopSnapshot of the latest iterate."""
        return LoopSnapshot(self.completed, self.last_image,
                            self.adam() if self.adam is not None else None,
                            None if self.average is None else (self.average,
                                                               self.average_weight),
                            self.tiled.rng.bit_generator.state if self.tiled else None,
                            list(self.history))

    def costs(self):
        if self.tiled is not None:  # a full pass over the tiles costs a step: the step's own
            return self.last_costs
        return self.nst.run(self.sess, [self.nst.J, self.nst.J_content, self.nst.J_style])

    def result(self):
        """The image of the run so far: the average of the iterates, or the last one."""
        if self.average is None:
            return self.last_image
        return (self.average / self.average_weight).astype(np.float32)

    def after_iteration(self, i, image, costs):
        """Record iteration i (of this stage) whose result is image; costs are (J, J_content,
        J_style) of some recent image, used for the history and the progress bar. False when
        the cost or the image is not finite (then the last finite image is kept)."""
        if not all(math.isfinite(c) for c in costs) or not np.all(np.isfinite(image)):
            self.diverged = 'cost'
            self._keep_last_finite()
            return False
        self.previous_image = self.last_image
        self.last_image = image
        if self.decay:
            # An exponential moving average, bias-corrected as Adam's moments are: with
            # weights decay^k on the k-th latest iterate, divided by their sum.
            self.average = image.astype(np.float64) + (
                0 if self.average is None else self.decay * self.average)
            self.average_weight = 1.0 + self.decay * self.average_weight
        self.completed = i + 1
        self.history.append((self.first_iteration + i,) + tuple(float(c) for c in costs))
        self.progress.step(costs)
        return True

    def adam_overflowed(self):
        """_adam_overflowed of the latest iterate's Adam state (False without Adam)."""
        return self.adam is not None and _adam_overflowed(self.adam())

    def _keep_last_finite(self):
        """On divergence, make last_image the last image whose cost is finite.

        The non-finite costs may be those of last_image itself (Adam fetches the costs of the
        image before its step), so its cost is evaluated; if it is not finite, the image before
        it (whose costs were finite) is kept instead.
        """
        if self.last_image is None or self.previous_image is None:
            return
        if self.tiled is not None:  # the image before the step is the one with finite costs
            self.last_image = self.previous_image
            self.completed -= 1
            return
        self.nst.set_input(self.sess, self.last_image)
        if not all(math.isfinite(c) for c in self.costs()):
            self.last_image = self.previous_image
            self.completed -= 1


def _adam_overflowed(adam):
    """Whether Adam's moments (an AdamState, or None) have left float32: v holds the squared
    gradient, so a gradient above about 1.8e19, from cost weights far too large. The image then
    stops moving (m / sqrt(v) is 0) while the cost stays finite, and no checkpoint could hold
    it. Checked when a checkpoint is due and at the end, not at every step."""
    return adam is not None and not (np.isfinite(adam.m).all() and np.isfinite(adam.v).all())


def _adam_steps(state, resume_adam=None):
    """Adam's train_step, once per iteration: yields (the image after the step, the costs of
    the image before it)."""
    nst, sess = state.nst, state.sess
    adam = nst.adam
    steps = 0
    if resume_adam is not None:
        # Adam's moments and its step count, as saved, and the powers of beta1 and beta2 the
        # next step uses, as TF has them after that many steps.
        adam.m.load(resume_adam.m, sess)
        adam.v.load(resume_adam.v, sess)
        adam.beta1_power.load(_float32_power(ADAM_BETA1, resume_adam.step + 1), sess)
        adam.beta2_power.load(_float32_power(ADAM_BETA2, resume_adam.step + 1), sess)
        steps = resume_adam.step
    if adam is not None:
        from nst.checkpoint import AdamState
        state.adam = lambda: AdamState(*sess.run([adam.m, adam.v]), steps + state.completed)
    # One session run per iteration: the step, the image after it, and the costs of the image
    # before it (free: the step computes them anyway).
    fetches = [nst.stepped_input, nst.J, nst.J_content, nst.J_style]
    for _ in range(state.num_iterations):
        image, Jt, Jc, Js = nst.run(sess, fetches)
        yield image, (Jt, Jc, Js)


def _float32_power(base, exponent):
    """base ** exponent as tf.train.AdamOptimizer reaches it: a float32 variable starting at
    base and multiplied by base in float32 after each step (base ** n in float64 differs in
    the last bits, and an Adam step amplifies that where the gradient is small)."""
    power = np.float32(base)
    for _ in range(exponent - 1):
        power = np.float32(power * np.float32(base))
    return power


def _tiled_adam_steps(state, resume_adam=None):
    """Adam at full size over the tiles, yielding (image, costs) as _adam_steps: each step runs
    the one-tile graph on every tile, blends the tiles' gradients (tiles.blend_weights, seams at
    new places each step) into one full-size gradient and takes Adam's step
    (tf.train.AdamOptimizer's, in NumPy).

    A tile's costs are normalised by its own size, so its gradient is that of the whole
    picture's times (picture pixels / tile pixels): it is scaled back by the tile's share.
    The costs reported are the tiles', weighted by the pixels each one's blend covers.
    """
    from nst import tiles
    from nst.checkpoint import AdamState

    nst, sess, tiled = state.nst, state.sess, state.tiled
    tiling = tiled.tiling
    image = state.last_image.copy()             # (1, H, W, 3) float32, the full picture
    if resume_adam is not None:
        m, v, steps = resume_adam.m.copy(), resume_adam.v.copy(), resume_adam.step
    else:
        m, v, steps = np.zeros_like(image), np.zeros_like(image), 0
    state.adam = lambda: AdamState(m, v, steps)  # saved at once, before the next step
    work = np.empty_like(image)  # Adam's temporaries, in place: full-size arrays are large
    share = tiling.pixel_share()
    fetches = [nst.J, nst.J_content, nst.J_style, nst.gradient]
    # What each tile's run is fed: the folded fixed inputs, with the tiles' own targets.
    feeds = {place: {**nst.feeds, **tiled.style_feeds, **tiled.content_feeds[place]}
             for place in tiling.tiles()}
    for _ in range(state.num_iterations):
        weights = tiles.blend_weights(tiling, tiled.rng)
        gradient = np.zeros_like(image)
        costs = np.zeros(3)
        for k, place in enumerate(tiling.tiles()):
            weight = weights[place]  # (th, tw, 1)
            nst.set_input(sess, tiles.crop(image, *place, tiling.tile_size))
            Jt, Jc, Js, tile_gradient = sess.run(fetches, feeds[place])
            top, left = place
            region = gradient[:, top:top + tiling.tile_height, left:left + tiling.tile_width]
            region += tile_gradient * (weight * share)
            costs += np.array([Jt, Jc, Js]) * (weight.sum() / (tiling.height * tiling.width))
            state.progress.tile(k + 1, tiling.count)
        # tf.train.AdamOptimizer's update (ApplyAdam), in place at full size.
        steps += 1
        rate = (nst.learning_rate * math.sqrt(1 - ADAM_BETA2 ** steps)
                / (1 - ADAM_BETA1 ** steps))
        m += (gradient - m) * (1 - ADAM_BETA1)
        np.square(gradient, out=work)
        v += (work - v) * (1 - ADAM_BETA2)
        np.sqrt(v, out=work)
        work += ADAM_EPSILON
        np.divide(m, work, out=work)
        work *= rate
        image = image - work  # a new array: the loop state keeps the last one
        state.last_costs = tuple(costs)
        yield image, state.last_costs


def _lbfgs_steps(state):
    """L-BFGS-B through scipy on the session's cost and gradient, yielding (image, costs) as
    _adam_steps after each of its iterations; the model's input holds the image meanwhile.

    The box constraints keep every pixel in the valid range [0, 255] (minus the mean), so the
    result needs no clipping. scipy drives its own loop and calls back after each iteration, so
    it runs in a thread of its own that waits in that callback until the loop asks for the next
    iteration: one of the two threads runs at a time. Closing the generator ends the thread
    (after the session run under way, if any).
    """
    import scipy.optimize

    if state.num_iterations <= 0:
        return  # (scipy would take one all the same)
    nst, sess = state.nst, state.sess
    variable = nst.model['input']
    shape = variable.get_shape().as_list()
    means = np.broadcast_to(MEANS, shape)
    bounds = scipy.optimize.Bounds((0.0 - means).ravel(), (255.0 - means).ravel())
    latest = {}
    reports = queue.Queue()  # from scipy's thread: ('iterate', x, costs), ('done' | 'failed', .)
    go_on = queue.Queue()    # to it, after each iterate: True for the next iteration, or False
    ending = threading.Event()

    def cost_and_gradient(x):
        if ending.is_set():  # the loop ended during a line search
            raise _LbfgsEnded
        nst.set_input(sess, x.reshape(shape).astype(np.float32))
        J, Jc, Js, grad = nst.run(sess, [nst.J, nst.J_content, nst.J_style, nst.gradient])
        latest['costs'] = (J, Jc, Js)
        return float(J), grad.ravel().astype(np.float64)

    def callback(intermediate_result):
        reports.put(('iterate', intermediate_result.x, latest['costs']))
        if not go_on.get():
            raise StopIteration  # scipy ends the minimisation

    def minimise(x0):
        try:
            scipy.optimize.minimize(cost_and_gradient, x0, jac=True, method='L-BFGS-B',
                                    bounds=bounds, callback=callback,
                                    options={'maxiter': state.num_iterations,
                                             'maxfun': 4 * state.num_iterations})
        except _LbfgsEnded:
            pass
        except BaseException as error:  # raised again in the loop's thread
            reports.put(('failed', error, None))
            return
        reports.put(('done', None, None))

    x0 = np.clip(sess.run(variable), bounds.lb.reshape(shape), bounds.ub.reshape(shape))
    worker = threading.Thread(target=minimise, args=(x0.ravel().astype(np.float64),),
                              name='L-BFGS-B', daemon=True)
    worker.start()
    try:
        while True:
            kind, value, costs = _next_report(reports)
            if kind == 'failed':
                raise value
            if kind == 'done':  # converged, or scipy's own limits reached
                return
            image = value.reshape(shape).astype(np.float32)
            nst.set_input(sess, image)
            yield image, costs
            if state.completed >= state.num_iterations:
                return
            go_on.put(True)
    finally:
        ending.set()
        go_on.put(False)
        worker.join()


def _next_report(reports):
    """The next item of the queue, waiting in short spells: a signal may reach another thread
    (scipy's, or TensorFlow's), and Python runs its handler in this one only once it wakes, so
    a second Ctrl-C ("stop now") takes effect within a spell, not after the next iteration."""
    while True:
        try:
            return reports.get(timeout=REPORT_WAIT)
        except queue.Empty:
            pass


class _LbfgsEnded(Exception):
    """Raised in scipy's thread when the loop has ended: it stops the minimisation."""


def latest_style_transfer(graph):
    """The StyleTransfer that prepare() built last in graph, or None."""
    built = graph.get_collection(STYLE_TRANSFER_COLLECTION)
    return built[-1] if built else None
