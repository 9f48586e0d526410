"""Choosing the VGG graph's fast paths (and --precision auto) by measuring them on this machine.

Which way of computing a convolution or a pool gradient is fastest depends on the CPU, on
TensorFlow's kernels (oneDNN or Eigen) and on the layer's shape: on an AVX-512 Xeon with oneDNN
the direct and transposed forward paths tie below 256 input channels, on an AVX2 EPYC with
oneDNN the transposed one wins from conv1_2 on and a Winograd convolution (nst.winograd) from
conv2_1 on (1.3-2.1x as fast there; never offered at the input's full resolution), and with
Eigen (oneDNN off) the direct one beats the transposed one (the untuned defaults in
nst.fast_ops follow these, without Winograd).
choose_paths times each candidate path of each distinct layer shape of the run (forward with
bias and ReLU, and the gradient with respect to the input where candidates with the same
forward pass differ in it, as a training step runs them) in a small graph of its own, keeps
the fastest, and caches the choice in a JSON file, keyed by the machine (CPU model and flags,
usable cores, TensorFlow's version, oneDNN on or off and any cap on its instruction set), the
precision and the shape: each is measured once, about 3.7 s at 400x300 on 2 AVX2 cores
(benchmarks/tuning_report.py prints what it measures and chooses).

NST_TUNE=0 (or enabled=False, the command line's --no-tune) turns it off: the defaults run.
The cache is $NST_CACHE_DIR/tuning.json, else $XDG_CACHE_HOME/nst-style-transfer/tuning.json
(~/.cache/...); delete it to measure again. A damaged or unwritable cache is ignored, never
fatal. Measurements taken while other processes kept the CPUs busy are used for the run but
not cached.

The measuring sessions use nst.runtime.session_config(), as the run does: TensorFlow keeps the
inter-op thread pool of a process's first session for all later ones. That setting (one op at a
time) is not tuned: a whole step at 400x300 on 2 AVX2 cores took 1.35 s with it against 1.44 s
with TensorFlow's default (median of three processes each), and measuring it needs whole steps
in separate processes, far beyond the few seconds tuning may take.
"""

import json
import math
import os
import time

from nst import fast_ops, runtime
from nst.config import VGG19_CONV_LAYERS
from nst.files import atomic_write

CACHE_FILE = 'tuning.json'
CACHE_FORMAT = 8  # 2: Winograd among the candidates; 3, 4: its tiles gathered, its kernel
# transforms one axis at a time (faster each); 5: sessions without grappler, 6: nor the
# session's own optimiser; 7: Winograd's forward matmuls read the transform transposed
# (faster on AVX2); 8: both layouts are candidates (as stored is faster on AVX-512 Zen 4):
# re-measure
# The CPU flags that change which kernels TensorFlow and oneDNN run.
KEY_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16')
# --precision auto takes bfloat16 only when its matmul beats float32's by this much: the Gram
# matrices and costs stay in float32 and the casts cost time, so a whole run gains less.
BF16_MIN_SPEEDUP = 1.2
MATMUL_SIZE = 2048
# Measurements taken while other processes kept more than this share of the CPUs busy are used
# for the run but not cached (measured again next run): under load the times, hence the
# choices, are mostly noise.
BUSY_SHARE = 0.25

# Timing: one warm-up run of each candidate (TensorFlow prunes and optimises the graph and oneDNN
# creates its kernels on a first run), then rounds of one run of each candidate in turn, so that
# a change of load on the machine falls on all of them alike: at least MIN_ROUNDS, more while the
# shape's rounds have taken less than ROUND_BUDGET seconds, at most MAX_ROUNDS. A candidate's
# time is its best run (other load only ever adds time). So the smallest shapes are timed five
# times and the large ones once: at 400x300 with the real widths one run of every candidate of
# every shape takes about 0.9 s on 2 AVX2 cores (oneDNN), the warm-up as long again, and
# building and filling the small graphs about 1 s more.
MIN_ROUNDS = 1
# Runs larger than this are measured at this many pixels (measured_size): 400x300, the course's.
MAX_MEASURED_PIXELS = 400 * 300
MAX_ROUNDS = 5
ROUND_BUDGET = 0.1


def cache_path(cache_dir=None):
    """The cache file: in cache_dir, else $NST_CACHE_DIR, else the user's cache folder
    ($XDG_CACHE_HOME/nst-style-transfer, ~/.cache/nst-style-transfer); None when there is no
    home folder to put it in (then nothing is cached beyond this process)."""
    cache_dir = cache_dir or os.environ.get('NST_CACHE_DIR')
    if not cache_dir:
        base = os.environ.get('XDG_CACHE_HOME')
        if not base:
            if os.environ.get('HOME') == '':  # Python would take / for the home folder
                return None
            home = os.path.expanduser('~')
            if home == '~':  # no HOME and no user entry: not a folder named '~' here
                return None
            base = os.path.join(home, '.cache')
        cache_dir = os.path.join(base, 'nst-style-transfer')
    return os.path.join(cache_dir, CACHE_FILE)


# NST_TUNE's values, in any case (empty or unset is on; the command line refuses any other).
TUNE_OFF = ('0', 'false', 'no', 'off')
TUNE_ON = ('1', 'true', 'yes', 'on')


def tuning_enabled(enabled=None):
    """enabled as given, else NST_TUNE (0, false, no or off turn it off; on by default)."""
    if enabled is not None:
        return bool(enabled)
    return os.environ.get('NST_TUNE', '1').strip().lower() not in TUNE_OFF


# ----------------------------------------------------------------------------------------------
# The run's layer shapes and each shape's candidates
# ----------------------------------------------------------------------------------------------

def measured_size(height, width, pixels=MAX_MEASURED_PIXELS):
    """The size at which a run of height x width is measured: itself up to `pixels` pixels,
    else scaled down to about that many, keeping the aspect. Which path is fastest no longer
    changes with the size by then, and measuring a 4K run at full size would take minutes."""
    if height * width <= pixels:
        return height, width
    scale = math.sqrt(pixels / (height * width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def conv_shapes(weights, height, width):
    """{conv layer name: (H, W, C_in, C_out)} for the layers in weights, at the run's size.

    Block b (conv<b>_<i>) works at ceil(H / 2^(b-1)) x ceil(W / 2^(b-1)): each SAME 2x2 pool
    before it rounds up.
    """
    shapes = {}
    for name in VGG19_CONV_LAYERS:
        if name in weights:
            scale = 2 ** (int(name[4]) - 1)
            kernel = weights[name][0]
            shapes[name] = (-(-height // scale), -(-width // scale),
                            int(kernel.shape[2]), int(kernel.shape[3]))
    return shapes


def pool_shapes(weights, height, width):
    """[(H, W, C)] of the pools' inputs: one after each block whose last layer is in weights."""
    shapes = []
    for block in range(1, 6):
        last = [name for name in VGG19_CONV_LAYERS if name.startswith('conv%d_' % block)][-1]
        if last not in weights:
            break
        scale = 2 ** (block - 1)
        shapes.append((-(-height // scale), -(-width // scale), int(weights[last][0].shape[3])))
    return shapes


def conv_candidates(channels_in, precision='float32', winograd=True):
    """The (forward, input_gradient) paths worth timing for a layer with this many inputs.

    The matmul input gradient holds nine planes per input channel: only for narrow layers.
    A wide layer's direct forward path is timed only without oneDNN: with it, that path was
    never faster than the transposed one on either kind of CPU measured (a tie on the AVX-512
    Xeon below 256 channels; 1.1-3x slower on the AVX2 EPYC, and an im2col GEMM there whose
    speed collapses on large maps). Winograd convolutions (nst.winograd) are for float32 only,
    and only where winograd is true: not at the input's full resolution (see choose_paths);
    each with its kernels' transforms read transposed and as stored (which is faster depends
    on the CPU, nst.winograd.conv2d_same).
    """
    if channels_in <= fast_ops.NARROW_CONV_MAX_CHANNELS:
        return [('direct', 'tf'), ('transposed', 'tf'), ('direct', 'matmul')]
    candidates = [('transposed', 'tf')]
    if not runtime.onednn_enabled():
        candidates.insert(0, ('direct', 'tf'))
    if precision == 'float32' and winograd:  # both layouts of the kernels' transforms
        candidates += [('winograd', 'winograd'), ('winograd_stored', 'winograd')]
    return candidates


# ----------------------------------------------------------------------------------------------
# Cache keys and the cache file
# ----------------------------------------------------------------------------------------------

def tf_version():
    return runtime.import_tf().version.VERSION


def machine_key():
    """What the measurements depend on besides the shape and precision: the CPU, its usable
    cores, TensorFlow's version, whether its oneDNN kernels run and the instruction set they are
    capped at (ONEDNN_MAX_CPU_ISA, named only when set: the keys of uncapped runs stay as they
    were)."""
    flags = runtime.cpu_flags()
    onednn = 'on' if runtime.onednn_enabled() else 'off'
    limit = runtime.onednn_isa_limit()
    if limit:
        onednn += ' up to %s' % limit
    return '%s [%s] %d cores, TF %s, oneDNN %s' % (
        runtime.cpu_model(), ' '.join(flag for flag in KEY_FLAGS if flag in flags) or '-',
        len(usable_cpus()), tf_version(), onednn)


def conv_key(machine, precision, shape):
    return '%s | %s | conv %dx%d %d->%d' % ((machine, precision) + tuple(shape))


def pool_key(machine, precision, shapes):
    return '%s | %s | avg pool %s' % (machine, precision,
                                      ' '.join('%dx%dx%d' % tuple(s) for s in shapes))


def precision_key(machine):
    return '%s | precision' % machine


def read_cache(path):
    """{key: entry} from the cache file; {} when it is missing, unreadable or damaged."""
    if path is None or not os.path.isfile(path):  # a folder, a named pipe (would block) ...
        return {}
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):  # deep nesting
        return {}
    if (not isinstance(data, dict) or data.get('format') != CACHE_FORMAT
            or not isinstance(data.get('entries'), dict)):
        return {}
    return {key: entry for key, entry in data['entries'].items() if isinstance(entry, dict)}


def write_cache(path, new_entries):
    """Add new_entries to the cache file (re-read first: another process may have added some).
    Returns None, or the error that kept it from being written."""
    if path is None:
        return OSError('no home folder for the cache')
    entries = read_cache(path)
    entries.update(new_entries)
    text = json.dumps({'format': CACHE_FORMAT, 'entries': entries}, indent=1, sort_keys=True)

    def write(temp_path):
        with open(temp_path, 'w', encoding='utf-8') as f:
            f.write(text + '\n')
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, write)
    except OSError as error:
        return error
    return None


# Entries measured in this process, by (cache file, key): with an unwritable cache a second
# graph of the same run is not measured again.
_measured = {}


def _cached_choice(entries, path, key, valid):
    """The entry's choice when it is one of valid (lists from JSON compared as tuples)."""
    entry = _measured.get((path, key)) or entries.get(key) or {}
    choice = entry.get('choice')
    choice = tuple(choice) if isinstance(choice, list) else choice
    return choice if choice in valid else None


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------

def usable_cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _busy_cpu_seconds(cpus):
    """CPU seconds these CPUs have spent so far on anything but idling and waiting for I/O
    (from /proc/stat, steal time included); None where there is no /proc/stat."""
    wanted = {'cpu%d' % cpu for cpu in cpus}
    busy = 0
    try:
        with open('/proc/stat') as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in wanted:
                    # user nice system idle iowait irq softirq steal
                    counts = [int(value) for value in fields[1:9]]
                    busy += sum(counts) - counts[3] - counts[4]
        return busy / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None


def load_sample():
    """(busy CPU seconds of the usable CPUs, this process's CPU seconds, wall clock)."""
    own = os.times()
    return _busy_cpu_seconds(usable_cpus()), own.user + own.system, time.perf_counter()


def others_share(start):
    """The share of this process's usable CPUs that other processes kept busy since start
    (a load_sample); 0 where it cannot be told."""
    busy, own, wall = load_sample()
    if busy is None or start[0] is None or wall <= start[2]:
        return 0.0
    others = (busy - start[0]) - (own - start[1])
    return max(0.0, others / ((wall - start[2]) * len(usable_cpus())))


def time_candidates(sess, targets):
    """{candidate: best seconds} of sess.run(targets[candidate]), see MIN_ROUNDS."""
    for ops in targets.values():
        sess.run(ops)  # warm-up
    times = {candidate: float('inf') for candidate in targets}
    begin = time.perf_counter()
    for rounds in range(1, MAX_ROUNDS + 1):
        for candidate, ops in targets.items():
            start = time.perf_counter()
            sess.run(ops)
            times[candidate] = min(times[candidate], time.perf_counter() - start)
        if rounds >= MIN_ROUNDS and time.perf_counter() - begin >= ROUND_BUDGET:
            break
    return times


def _random_variable(tf, shape, dtype, scale=1.0):
    """A variable of uniform values in [-scale, scale) (the speed of these ops does not depend
    on the values; uniform ones are the cheapest to make)."""
    return tf.Variable(tf.cast(tf.random.uniform(shape, -scale, scale), dtype), trainable=False)


def measure_conv(shape, precision='float32', winograd=True):
    """{(forward, input_gradient): seconds} for each of conv_candidates (winograd: whether it
    is one): what ranks the candidates, timed in one layer's graph.

    The forward passes are timed (conv, bias and ReLU, as a step runs them); the input
    gradients only where candidates with the same forward pass differ in it (the matmul
    gradient of narrow layers). Elsewhere a candidate's gradient is estimated by a forward
    pass of the same kind and size (channels swapped), timed anyway: TensorFlow's
    backward-data convolution of the kernel as stored (the direct and transposed paths'
    gradient, fast_ops.conv2d_same) by the transposed path's forward pass, which is one;
    Winograd's by Winograd's. That halves the measuring (at 400x300 on 2 AVX2 cores, 5.3 ->
    3.7 s in all).
    """
    tf = runtime.import_tf()
    height, width, channels_in, channels_out = shape
    dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32
    candidates = conv_candidates(channels_in, precision, winograd)
    gradients = sorted({gradient for forward, gradient in candidates if forward == 'direct'})
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        x = _random_variable(tf, [1, height, width, channels_in], dtype)
        kernel = _random_variable(tf, [3, 3, channels_in, channels_out], dtype,
                                  math.sqrt(6.0 / (9 * channels_in)))  # He scaling
        bias = _random_variable(tf, [channels_out], dtype, 0.01)
        rotated = tf.Variable(fast_ops.rotate_kernel(kernel), trainable=False)
        d_outputs = _random_variable(tf, [1, height, width, channels_out], dtype)
        parts = {}
        for forward, gradient in candidates:
            if ('forward', forward) not in parts:
                outputs = tf.nn.relu(fast_ops.conv2d_same(
                    x, kernel, rotated if forward == 'transposed' else None, forward,
                    gradient) + bias)
                parts['forward', forward] = outputs.op
        if len(gradients) > 1:
            for gradient in gradients:
                outputs = fast_ops.conv2d_same(x, kernel, None, 'direct', gradient)
                d_inputs, = tf.gradients(outputs, x, grad_ys=d_outputs)
                parts['gradient', gradient] = d_inputs.op
        sess.run([v.initializer for v in (x, kernel, bias, d_outputs)])
        sess.run(rotated.initializer)  # stored rotated, as VGGBuilder does with a session
        times = time_candidates(sess, parts)
    # A gradient not timed is estimated by the forward pass of its own kind: TensorFlow's
    # backward-data convolution by the transposed path's, Winograd's by Winograd's.
    estimate = {'tf': ('forward', 'transposed'), 'winograd': ('forward', 'winograd')}
    return {(forward, gradient):
            times['forward', forward] + times[('gradient', gradient)
                                              if ('gradient', gradient) in times
                                              else estimate[gradient]]
            for forward, gradient in candidates}


def measure_pool(shapes, precision='float32'):
    """{pool gradient: seconds} of every average pool of the run (forward and gradient)."""
    tf = runtime.import_tf()
    dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        inputs = [_random_variable(tf, [1] + list(shape), dtype) for shape in shapes]
        d_outputs = [_random_variable(tf, [1, -(-h // 2), -(-w // 2), c], dtype)
                     for h, w, c in shapes]
        targets = {}
        for gradient in fast_ops.POOL_GRADIENT:
            ops = []
            for x, d_y in zip(inputs, d_outputs):
                y = fast_ops.avg_pool_2x2(x, gradient=gradient)
                ops += [y.op, tf.gradients(y, x, grad_ys=d_y)[0].op]
            targets[gradient] = ops
        sess.run([v.initializer for v in inputs + d_outputs])
        return time_candidates(sess, targets)


def measure_matmul(size=MATMUL_SIZE):
    """{'float32': seconds, 'bfloat16': seconds} of a size x size matmul."""
    tf = runtime.import_tf()
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        targets = {}
        for precision in ('float32', 'bfloat16'):
            dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32
            a = _random_variable(tf, [size, size], dtype)
            b = _random_variable(tf, [size, size], dtype)
            targets[precision] = tf.matmul(a, b).op
        sess.run(tf.global_variables_initializer())
        return time_candidates(sess, targets)


# ----------------------------------------------------------------------------------------------
# The choices
# ----------------------------------------------------------------------------------------------

def _fastest(times):
    return min(times, key=times.get)


def _entry(choice, times):
    return {'choice': choice, 'seconds': {'/'.join(c) if isinstance(c, tuple) else c:
                                          round(t, 6) for c, t in times.items()}}


def _say(log, line):
    if log is not None:
        log(line)


def _describe(paths, shapes, pooling):
    """'conv1_1 direct/matmul, conv1_2-conv5_4 direct/tf, ...; avg pool gradient broadcast'."""
    runs = []
    for name in shapes:
        path = '/'.join(paths.conv[name])
        if runs and runs[-1][2] == path:
            runs[-1][1] = name
        else:
            runs.append([name, name, path])
    text = ', '.join((first if first == last else first + '-' + last) + ' ' + path
                     for first, last, path in runs)
    if pooling == 'avg':
        text += '; avg pool gradient ' + paths.pool_gradient
    return text


def choose_paths(weights, height, width, precision='float32', pooling='avg', enabled=None,
                 cache_dir=None, log=None):
    """The fast_ops.Paths of a VGG graph of these weights at height x width on this machine.

    Measured at measured_size(height, width) once per machine, precision and layer shape (see
    the module's doc), then read from the cache; a direct forward path that wins there is
    confirmed at a larger size first when the run is larger (confirmation_shape).
    enabled=False or NST_TUNE=0: the untuned fast_ops.Paths(). log: called with one line
    before measuring and one with the choice (nothing when all is cached).
    """
    if not tuning_enabled(enabled):
        return fast_ops.Paths()
    tf = runtime.import_tf()
    path = cache_path(cache_dir)
    entries = read_cache(path)
    machine = machine_key()
    shapes = conv_shapes(weights, *measured_size(height, width))
    full_shapes = conv_shapes(weights, height, width)
    pools = pool_shapes(weights, *measured_size(height, width)) if pooling == 'avg' else []
    new_entries = {}
    start = None

    def measuring():
        nonlocal start
        if start is None:
            _say(log, 'tuning the fast paths for this CPU (once, a few seconds)...')
            start = load_sample()

    # Winograd's temporaries are several maps of its layer's size: at the input's full
    # resolution, the largest maps, they would exceed what nst.memory allows for the largest
    # layer (a tiled 1920x1080 run with it went over its budget: 2.24 GB under 2 GiB). It was
    # no faster there anyway (a tie at 400x300 on the AVX2 EPYC).
    full_resolution = measured_size(height, width)

    def conv_choice(shape, measured=None):
        """The path of the run's layers of this shape, measured at `measured` (default: it)."""
        measured = measured or shape
        winograd = shape[:2] != full_resolution
        key = conv_key(machine, precision, measured)
        choice = _cached_choice(entries, path, key,
                                conv_candidates(measured[2], precision, winograd))
        if choice is None:
            measuring()
            times = measure_conv(measured, precision, winograd)
            choice = _fastest(times)
            new_entries[key] = entries[key] = _entry(choice, times)
        return choice

    conv_choices = {}
    pool_choice = fast_ops.Paths().pool_gradient
    try:
        for shape in sorted(set(shapes.values()), key=lambda s: (-s[0] * s[1], s[2], s[3])):
            conv_choices[shape] = conv_choice(shape)
        for name, shape in shapes.items():
            larger = confirmation_shape(shape, full_shapes[name])
            if conv_choices[shape][0] == 'direct' and larger is not None:
                conv_choices[shape] = conv_choice(shape, larger)
        if pools:
            key = pool_key(machine, precision, pools)
            pool_choice = _cached_choice(entries, path, key, fast_ops.POOL_GRADIENT)
            if not pool_choice:
                measuring()
                times = measure_pool(pools, precision)
                pool_choice = _fastest(times)
                new_entries[key] = _entry(pool_choice, times)
    except tf.errors.OpError as error:  # e.g. a kernel this build lacks: keep the defaults
        _say(log, 'tuning failed (%s); using the default paths'
             % ' '.join(str(error.message).split())[:200])
    paths = _paths(shapes, conv_choices, pool_choice or fast_ops.Paths().pool_gradient)
    if start is not None:
        note = _store(path, new_entries, start)
        _say(log, 'fast paths: %s (%s)' % (_describe(paths, shapes, pooling), note))
    return paths


def confirmation_shape(measured, full):
    """Where a direct forward path that won at the measured layer shape is measured again
    before a larger run takes it: twice the side (at most the run's own), or None when the run
    is no larger. On an AVX2 EPYC oneDNN runs that path as an im2col GEMM whose speed
    collapses on larger maps (256->256 channels: 0.10 s at 75x100, 0.85 s at 150x200, over 100
    s at 270x480, where the transposed path takes 0.85 s), so a choice measured small could be
    ruinous at full size."""
    height, width, channels_in, channels_out = measured
    if full[0] * full[1] <= height * width:
        return None
    return min(2 * height, full[0]), min(2 * width, full[1]), channels_in, channels_out


def _store(path, new_entries, start):
    """Keep what was measured since start (a load_sample) for this process, and in the cache
    unless the machine was busy. Returns a note for the log: the time taken, and why the
    choice is not cached when it is not."""
    share = others_share(start)
    note = 'measured in %.1f s' % (time.perf_counter() - start[2])
    for key, entry in new_entries.items():
        _measured[path, key] = entry
    if share > BUSY_SHARE:
        return note + ('; the machine was busy (other processes used %d %% of the CPUs): not '
                       'cached, measured again next run' % round(100 * share))
    error = write_cache(path, new_entries) if new_entries else None
    if error is not None:
        note += '; cannot write the cache %s: %s' % (path, ' '.join(str(error).split()))
    return note


def _paths(shapes, conv_choices, pool_choice):
    return fast_ops.Paths(
        conv={name: conv_choices.get(shape) or fast_ops.default_conv_path(shape[2])
              for name, shape in shapes.items()},
        pool_gradient=pool_choice)


def bfloat16_speedup(cache_dir=None):
    """How many times as fast as its float32 matmul this CPU's bfloat16 one ran when
    choose_precision measured them (as cached), or None where it has not measured them."""
    path = cache_path(cache_dir)
    key = precision_key(machine_key())
    entry = _measured.get((path, key)) or read_cache(path).get(key) or {}
    seconds = entry.get('seconds')
    try:
        speedup = float(seconds['float32']) / float(seconds['bfloat16'])
    except (TypeError, KeyError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return speedup if math.isfinite(speedup) and speedup > 0 else None


def choose_precision(enabled=None, cache_dir=None, log=None):
    """'bfloat16' where this CPU's bfloat16 matmul beats float32's by BF16_MIN_SPEEDUP, else
    'float32' (without measuring on CPUs without bfloat16 arithmetic), for --precision auto.
    Measured once per machine and cached like the paths; enabled=False or NST_TUNE=0: float32.
    """
    if not tuning_enabled(enabled) or runtime.bfloat16_support() is None:
        return 'float32'
    path = cache_path(cache_dir)
    key = precision_key(machine_key())
    choice = _cached_choice(read_cache(path), path, key, ('float32', 'bfloat16'))
    if choice:
        return choice
    _say(log, 'measuring bfloat16 against float32 on this CPU (once, a second)...')
    start = load_sample()
    try:
        times = measure_matmul()
    except runtime.import_tf().errors.OpError as error:  # no bfloat16 matmul in this build
        _say(log, 'precision: float32 (bfloat16 matmul failed: %s)'
             % ' '.join(str(error.message).split())[:200])
        return 'float32'
    speedup = times['float32'] / times['bfloat16']
    choice = 'bfloat16' if speedup >= BF16_MIN_SPEEDUP else 'float32'
    note = _store(path, {key: _entry(choice, times)}, start)
    _say(log, 'precision: %s (bfloat16 matmuls run at %.2fx the float32 speed; %s)'
         % (choice, speedup, note))
    return choice
