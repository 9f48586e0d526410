"""Tests of nst.tuning: the fast paths (and --precision auto) chosen by measurement, cached.

Tiny random weights (widths 4, 8, 8, 16, 16) at small sizes keep each measurement well under a
second. Every test points the cache at its own folder; the measuring function is replaced by one
that fails where a test checks that nothing is measured.
"""

import json
import os
import threading

import numpy as np
import pytest

from nst import fast_ops, runtime, tuning, vgg
from nst.config import VGG19_BLOCK_DEPTHS, VGG19_CONV_LAYERS
from nst.runtime import import_tf

tf = import_tf()

TINY_WIDTHS = (4, 8, 8, 16, 16)
HEIGHT, WIDTH = 12, 16


def random_weights(widths=TINY_WIDTHS, depth=len(VGG19_CONV_LAYERS), seed=0):
    """{name: (W, b)} of the first `depth` conv layers, He-scaled normal kernels."""
    rng = np.random.default_rng(seed)
    weights, channels = {}, 3
    names = iter(VGG19_CONV_LAYERS[:depth])
    for width, block_depth in zip(widths, VGG19_BLOCK_DEPTHS):
        for _, name in zip(range(block_depth), names):
            kernel = rng.normal(0, np.sqrt(2.0 / (9 * channels)), (3, 3, channels, width))
            weights[name] = (kernel.astype(np.float32),
                             rng.normal(0, 0.1, width).astype(np.float32))
            channels = width
    return weights


# conv1_1 ... conv2_2: four shapes (conv1_1 and conv1_2 with the matmul candidate), two pools.
WEIGHTS = random_weights(depth=4)
# conv1_1 and conv1_2: two shapes and one pool.
SMALL = random_weights(depth=2)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test's cache folder (also where the user's would be); nothing measured before;
    the machine taken as quiet (other tests may run beside these)."""
    monkeypatch.setattr(tuning, '_measured', {})
    monkeypatch.setattr(tuning, 'others_share', lambda start: 0.0)
    monkeypatch.delenv('NST_TUNE', raising=False)
    monkeypatch.setenv('NST_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


@pytest.fixture
def count_measurements(monkeypatch):
    """The calls of tuning.time_candidates (each measures one shape's candidates)."""
    calls = []
    measure = tuning.time_candidates

    def counted(sess, targets):
        calls.append(sorted(targets))
        return measure(sess, targets)
    monkeypatch.setattr(tuning, 'time_candidates', counted)
    return calls


@pytest.fixture
def no_measuring(monkeypatch):
    def fail(sess, targets):
        raise AssertionError('measured %s' % sorted(targets))
    monkeypatch.setattr(tuning, 'time_candidates', fail)


def assert_valid_paths(paths, weights=WEIGHTS):
    assert set(paths.conv) == set(weights)
    for name, (kernel, _) in weights.items():
        assert paths.conv[name] in tuning.conv_candidates(kernel.shape[2]), name
    assert paths.pool_gradient in fast_ops.POOL_GRADIENT


# ----------------------------------------------------------------------------------------------
# Shapes and candidates
# ----------------------------------------------------------------------------------------------

def test_layer_shapes_at_the_runs_size():
    weights = random_weights()
    shapes = tuning.conv_shapes(weights, 300, 401)
    assert shapes['conv1_1'] == (300, 401, 3, 4)
    assert shapes['conv1_2'] == (300, 401, 4, 4)
    assert shapes['conv2_1'] == (150, 201, 4, 8)
    assert shapes['conv3_4'] == (75, 101, 8, 8)
    assert shapes['conv4_1'] == (38, 51, 8, 16)
    assert shapes['conv5_4'] == (19, 26, 16, 16)
    assert tuning.pool_shapes(weights, 300, 401) == [
        (300, 401, 4), (150, 201, 8), (75, 101, 8), (38, 51, 16), (19, 26, 16)]
    # only the layers present: conv1_1 ... conv2_1 has one pool (conv2_2, its block's last,
    # is missing)
    three = random_weights(depth=3)
    assert list(tuning.conv_shapes(three, 30, 40)) == ['conv1_1', 'conv1_2', 'conv2_1']
    assert tuning.pool_shapes(three, 30, 40) == [(30, 40, 4)]


@pytest.mark.parametrize('onednn', [True, False])
def test_candidates_by_width_kernels_and_precision(monkeypatch, onednn):
    """Narrow layers: both forward paths and the matmul gradient. Wide ones: the transposed
    path, the direct one only without oneDNN, Winograd only in float32."""
    monkeypatch.setattr(tuning.runtime, 'onednn_enabled', lambda: onednn)
    for precision in ('float32', 'bfloat16'):
        assert tuning.conv_candidates(3, precision) == [
            ('direct', 'tf'), ('transposed', 'tf'), ('direct', 'matmul')]
    for channels in (64, 512):
        wide = [('direct', 'tf')] if not onednn else []
        wide += [('transposed', 'tf')]
        assert tuning.conv_candidates(channels, 'bfloat16') == wide
        assert tuning.conv_candidates(channels) == wide + [('winograd', 'winograd'),
                                                           ('winograd_stored', 'winograd')]
        assert tuning.conv_candidates(channels, winograd=False) == wide


def test_no_winograd_at_the_inputs_full_resolution(own_cache, monkeypatch):
    """Where Winograd is always the fastest, every layer below the first block takes it and
    none of the full-resolution ones is even offered it (its temporaries there would exceed
    what nst.memory allows for the largest layer), at the measured size and in a larger run."""
    offered = {}

    def measure_conv(shape, precision='float32', winograd=True):
        offered[shape] = winograd
        times = dict.fromkeys(tuning.conv_candidates(shape[2], precision, winograd), 2.0)
        if winograd:
            times['winograd', 'winograd'] = 1.0
        return times
    monkeypatch.setattr(tuning, 'measure_conv', measure_conv)
    monkeypatch.setattr(tuning, 'measure_pool', lambda shapes, precision: {'broadcast': 1.0,
                                                                            'tf': 2.0})
    weights = random_weights(depth=7)  # conv1_1 ... conv3_3
    for height, width in ((30, 40), (900, 1200)):  # the second measured at 300x400
        offered.clear()
        paths = tuning.choose_paths(weights, height, width, enabled=True)
        full = tuning.measured_size(height, width)
        assert offered and all(winograd == (shape[0] < full[0])  # (larger: confirmations)
                               for shape, winograd in offered.items())
        for name, path in paths.conv.items():
            assert (path == ('winograd', 'winograd')) == (not name.startswith('conv1_')), name


def test_untuned_forward_path_follows_the_kernels(monkeypatch):
    """Transposed with oneDNN (its backward-data convolution is the faster and the steadier),
    direct with Eigen; narrow layers keep their matmul gradient either way."""
    assert fast_ops.default_conv_path(64) == ('transposed', 'tf')  # oneDNN on (nst.runtime)
    assert fast_ops.default_conv_path(3) == ('direct', 'matmul')
    monkeypatch.setattr(fast_ops, 'onednn_enabled', lambda: False)
    assert fast_ops.default_conv_path(64) == ('direct', 'tf')
    assert fast_ops.default_conv_path(512) == ('direct', 'tf')
    assert fast_ops.default_conv_path(3) == ('direct', 'matmul')


def test_confirmation_shape_doubles_the_side_up_to_the_runs_own():
    assert tuning.confirmation_shape((75, 100, 8, 16), (75, 100, 8, 16)) is None
    assert tuning.confirmation_shape((75, 100, 8, 16), (270, 480, 8, 16)) == (150, 200, 8, 16)
    assert tuning.confirmation_shape((75, 100, 8, 16), (100, 133, 8, 16)) == (100, 133, 8, 16)


def small_wins_for_direct(monkeypatch):
    """A fake measure_conv: the direct paths win up to 400x300, the transposed one beyond
    (as oneDNN's im2col forward convolution does on AVX2 when the map grows); records shapes."""
    measured = []

    def measure_conv(shape, precision='float32', winograd=True):
        measured.append(shape)
        small = shape[0] * shape[1] <= 400 * 300
        times = {('direct', 'tf'): 1.0 if small else 3.0, ('transposed', 'tf'): 2.0}
        if shape[2] <= fast_ops.NARROW_CONV_MAX_CHANNELS:
            times['direct', 'matmul'] = 0.5 if small else 4.0
        return times
    monkeypatch.setattr(tuning, 'measure_conv', measure_conv)
    monkeypatch.setattr(tuning, 'measure_pool', lambda shapes, precision: {'broadcast': 1.0,
                                                                            'tf': 2.0})
    return measured


def test_a_direct_path_is_confirmed_before_a_larger_run_takes_it(monkeypatch):
    # Without oneDNN, where wide layers have a direct candidate too.
    monkeypatch.setattr(tuning.runtime, 'onednn_enabled', lambda: False)
    measured = small_wins_for_direct(monkeypatch)
    weights = random_weights(depth=7)  # conv1_1 ... conv3_3: conv3_1-conv3_3 of one shape
    paths = tuning.choose_paths(weights, 900, 1200, enabled=True)  # measured at 300x400
    at_300x400 = [(300, 400, 3, 4), (300, 400, 4, 4), (150, 200, 4, 8), (150, 200, 8, 8),
                  (75, 100, 8, 8)]
    # then each direct choice at twice the side, each shape once (conv3's is conv2_2's)
    assert measured == at_300x400 + [(600, 800, 3, 4), (600, 800, 4, 4), (300, 400, 4, 8),
                                     (300, 400, 8, 8)]
    # block 1 loses at twice the side; blocks 2 and 3 still win at up to 300x400
    assert paths.conv == dict({'conv1_1': ('transposed', 'tf'), 'conv1_2': ('transposed', 'tf'),
                               'conv2_1': ('direct', 'matmul')},
                              **{name: ('direct', 'tf')
                                 for name in ('conv2_2', 'conv3_1', 'conv3_2', 'conv3_3')})
    del measured[:]
    assert tuning.choose_paths(weights, 900, 1200, enabled=True) == paths  # all cached now
    small = tuning.choose_paths(weights, 300, 400, enabled=True)  # no larger: no confirmation
    assert small.conv == dict(paths.conv, conv1_1=('direct', 'matmul'),
                              conv1_2=('direct', 'matmul'))
    assert measured == []


# ----------------------------------------------------------------------------------------------
# Measuring once, then the cache
# ----------------------------------------------------------------------------------------------

def test_choice_is_a_candidate_and_round_trips_through_the_cache(own_cache, count_measurements,
                                                                 monkeypatch):
    lines = []
    paths = tuning.choose_paths(WEIGHTS, HEIGHT, WIDTH, enabled=True, log=lines.append)
    assert_valid_paths(paths)
    assert len(count_measurements) == 5  # four conv shapes and the pools
    assert len(lines) == 2 and 'tuning' in lines[0] and 'conv1_1' in lines[1], lines
    with open(own_cache / tuning.CACHE_FILE) as f:
        entries = json.load(f)['entries']
    assert len(entries) == 5
    for entry in entries.values():
        assert entry['choice'] and all(seconds > 0 for seconds in entry['seconds'].values())

    # A new process (nothing in memory) reads the same choice without measuring, silently.
    monkeypatch.setattr(tuning, '_measured', {})
    monkeypatch.setattr(tuning, 'time_candidates', fail_if_called)
    lines.clear()
    assert tuning.choose_paths(WEIGHTS, HEIGHT, WIDTH, enabled=True, log=lines.append) == paths
    assert lines == []


def fail_if_called(*args):
    raise AssertionError('measured again')


def test_only_the_shapes_not_cached_are_measured(count_measurements):
    tuning.choose_paths(SMALL, HEIGHT, WIDTH, enabled=True)
    assert len(count_measurements) == 3  # conv1_1, conv1_2, the pool
    del count_measurements[:]
    paths = tuning.choose_paths(WEIGHTS, HEIGHT, WIDTH, enabled=True)
    assert_valid_paths(paths)
    assert len(count_measurements) == 3  # conv2_1, conv2_2 and the pools (now two)


def test_cache_key_changes_with_precision_shape_and_machine(monkeypatch):
    machine = tuning.machine_key()
    shape = (12, 16, 3, 4)
    assert tuning.conv_key(machine, 'float32', shape) != tuning.conv_key(machine, 'bfloat16',
                                                                          shape)
    assert tuning.conv_key(machine, 'float32', shape) != tuning.conv_key(machine, 'float32',
                                                                          (12, 17, 3, 4))
    assert tuning.conv_key(machine, 'float32', shape) != tuning.conv_key(machine, 'float32',
                                                                          (12, 16, 3, 8))
    assert (tuning.pool_key(machine, 'float32', [(12, 16, 4)])
            != tuning.pool_key(machine, 'float32', [(12, 16, 4), (6, 8, 8)]))
    monkeypatch.setattr(tuning, 'tf_version', lambda: '9.99.0')
    assert tuning.machine_key() != machine
    monkeypatch.undo()
    onednn = runtime.onednn_enabled()
    monkeypatch.setattr(runtime, 'onednn_enabled', lambda: not onednn)
    assert tuning.machine_key() != machine
    monkeypatch.undo()
    flags = runtime.cpu_flags()
    monkeypatch.setattr(runtime, 'cpu_flags', lambda: flags ^ {'avx512_bf16'})
    assert tuning.machine_key() != machine
    monkeypatch.setattr(runtime, 'cpu_model', lambda: 'Another CPU')
    assert tuning.machine_key() != machine


@pytest.mark.parametrize('variable', ['ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA'])
def test_cache_key_names_a_cap_on_onednn_instruction_set(monkeypatch, variable):
    """ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 CPU runs other kernels: its choices are measured
    and cached apart; unset or ALL, the key is the uncapped one."""
    for name in ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA'):
        monkeypatch.delenv(name, raising=False)
    machine = tuning.machine_key()
    monkeypatch.setenv(variable, 'avx2')
    capped = tuning.machine_key()
    assert capped != machine and capped.endswith('up to AVX2')
    monkeypatch.setenv(variable, 'ALL')
    assert tuning.machine_key() == machine
    if variable == 'DNNL_MAX_CPU_ISA':  # the newer name wins
        monkeypatch.setenv(variable, 'AVX2')
        monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX512_CORE')
        assert tuning.machine_key().endswith('up to AVX512_CORE')


def test_a_new_tensorflow_version_measures_again(count_measurements, monkeypatch):
    weights = random_weights(depth=1)
    tuning.choose_paths(weights, HEIGHT, WIDTH, pooling='max', enabled=True)
    tuning.choose_paths(weights, HEIGHT, WIDTH, pooling='max', enabled=True)
    assert len(count_measurements) == 1  # conv1_1 only: max pooling has no choice
    monkeypatch.setattr(tuning, 'tf_version', lambda: '9.99.0')
    tuning.choose_paths(weights, HEIGHT, WIDTH, pooling='max', enabled=True)
    tuning.choose_paths(weights, HEIGHT, WIDTH, pooling='max', precision='bfloat16',
                        enabled=True)
    assert len(count_measurements) == 3


# ----------------------------------------------------------------------------------------------
# A damaged, unreadable or unwritable cache
# ----------------------------------------------------------------------------------------------

def wrong_choices():
    """The file with every key of SMALL's run present but holding choices no layer has."""
    machine = tuning.machine_key()
    shapes = set(tuning.conv_shapes(SMALL, HEIGHT, WIDTH).values())
    entries = {tuning.conv_key(machine, 'float32', shape): {'choice': ['transposed', 'matmul']}
               for shape in shapes}
    entries[tuning.pool_key(machine, 'float32', tuning.pool_shapes(SMALL, HEIGHT, WIDTH))] = {
        'choice': {'not': 'a name'}}
    return json.dumps({'format': tuning.CACHE_FORMAT, 'entries': entries})


DAMAGED = {
    'garbage': b'\x00\xff{{ not json',
    'empty': b'',
    'a list': b'[1, 2, 3]',
    'entries not a dict': b'{"format": 1, "entries": [1]}',
    'another format': b'{"format": 999, "entries": {}}',
    'not utf-8': '{"format": 1, "entries": {"\u00e9": 1}}'.encode('latin-1'),
    'nested too deep': b'[' * 200000,   # RecursionError in the JSON decoder
}


@pytest.mark.parametrize('content', list(DAMAGED) + ['wrong choices'])
def test_a_damaged_cache_is_measured_again_and_rewritten(content, own_cache, count_measurements):
    own_cache.mkdir()
    path = own_cache / tuning.CACHE_FILE
    path.write_bytes(wrong_choices().encode() if content == 'wrong choices' else DAMAGED[content])
    paths = tuning.choose_paths(SMALL, HEIGHT, WIDTH, enabled=True)
    assert_valid_paths(paths, SMALL)
    assert len(count_measurements) == 3
    entries = tuning.read_cache(str(path))
    assert len(entries) == 3
    assert all(entry['choice'] != ['transposed', 'matmul'] for entry in entries.values())


def test_a_named_pipe_in_place_of_the_cache_file_is_not_read(own_cache):
    """Opening a FIFO for reading waits for a writer: the run would hang before its first
    step."""
    own_cache.mkdir()
    fifo = own_cache / tuning.CACHE_FILE
    os.mkfifo(fifo)
    results = []
    reader = threading.Thread(target=lambda: results.append(tuning.read_cache(str(fifo))),
                              daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # blocked in open(): give it a writer, so that the test ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
        pytest.fail('read_cache waited for a writer on a named pipe')
    assert results == [{}]


def test_a_folder_in_place_of_the_cache_file(own_cache):
    (own_cache / tuning.CACHE_FILE).mkdir(parents=True)
    lines = []
    assert_valid_paths(tuning.choose_paths(SMALL, HEIGHT, WIDTH, enabled=True,
                                           log=lines.append), SMALL)
    assert 'cannot write the cache' in lines[-1], lines
    assert os.listdir(own_cache / tuning.CACHE_FILE) == []
    assert os.listdir(own_cache) == [tuning.CACHE_FILE]  # no temp file left behind


def test_an_unwritable_cache_folder_measures_once_per_process(tmp_path, monkeypatch):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    monkeypatch.setenv('NST_CACHE_DIR', str(blocker / 'cache'))  # cannot be made
    lines = []
    paths = tuning.choose_paths(SMALL, HEIGHT, WIDTH, enabled=True, log=lines.append)
    assert_valid_paths(paths, SMALL)
    assert 'cannot write the cache' in lines[-1], lines
    monkeypatch.setattr(tuning, 'time_candidates', fail_if_called)
    assert tuning.choose_paths(SMALL, HEIGHT, WIDTH, enabled=True) == paths


def test_busy_machine_measures_but_does_not_cache(own_cache, monkeypatch):
    monkeypatch.setattr(tuning, 'others_share', lambda start: 0.8)
    lines = []
    paths = tuning.choose_paths(SMALL, HEIGHT, WIDTH, enabled=True, log=lines.append)
    assert_valid_paths(paths, SMALL)
    assert 'busy' in lines[-1] and '80 %' in lines[-1], lines
    assert not (own_cache / tuning.CACHE_FILE).exists()
    monkeypatch.setattr(tuning, 'time_candidates', fail_if_called)  # kept for this process
    assert tuning.choose_paths(SMALL, HEIGHT, WIDTH, enabled=True) == paths


def test_load_of_other_processes_is_a_share():
    start = tuning.load_sample()
    sum(range(10 ** 5))
    assert 0.0 <= tuning.others_share(start) <= 1.5


def test_no_home_folder_means_no_cache_file(monkeypatch):
    monkeypatch.delenv('NST_CACHE_DIR')
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    monkeypatch.setattr(os.path, 'expanduser', lambda path: path)
    assert tuning.cache_path() is None
    monkeypatch.undo()
    monkeypatch.delenv('NST_CACHE_DIR', raising=False)
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    monkeypatch.setenv('HOME', '')  # Python's expanduser would give '/': /.cache
    assert tuning.cache_path() is None
    assert tuning.read_cache(None) == {}
    assert tuning.write_cache(None, {'key': {'choice': 'tf'}}) is not None


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv('NST_CACHE_DIR')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert tuning.cache_path() == str(tmp_path / 'xdg' / 'nst-style-transfer' / 'tuning.json')
    assert tuning.cache_path(str(tmp_path / 'mine')) == str(tmp_path / 'mine' / 'tuning.json')
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert tuning.cache_path() == str(tmp_path / 'home' / '.cache' / 'nst-style-transfer'
                                      / 'tuning.json')


# ----------------------------------------------------------------------------------------------
# Off switch and precision
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('switch', ['enabled=False', 'NST_TUNE=0', 'NST_TUNE=off'])
def test_off_switch_gives_the_defaults_without_measuring(switch, own_cache, no_measuring,
                                                         monkeypatch):
    enabled = None
    if switch == 'enabled=False':
        enabled = False
    else:
        monkeypatch.setenv('NST_TUNE', switch.split('=')[1])
    monkeypatch.setattr(runtime, 'cpu_flags', lambda: {'avx512f', 'avx512_bf16', 'amx_bf16'})
    assert tuning.choose_paths(WEIGHTS, HEIGHT, WIDTH, enabled=enabled) == fast_ops.Paths()
    assert tuning.choose_precision(enabled=enabled) == 'float32'
    assert not own_cache.exists()


def test_precision_is_float32_without_bfloat16_arithmetic(no_measuring, monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_flags', lambda: {'avx2', 'fma', 'avx512f'})
    assert runtime.bfloat16_support() is None
    assert tuning.choose_precision(enabled=True) == 'float32'


@pytest.mark.parametrize('bf16_seconds, expected', [(0.5, 'bfloat16'), (2.0, 'float32'),
                                                     (0.95, 'float32')])
def test_precision_measured_once_where_bfloat16_runs(bf16_seconds, expected, own_cache,
                                                     monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_flags', lambda: {'avx512f', 'avx512_bf16', 'amx_bf16'})
    calls = []

    def measure_matmul():
        calls.append(1)
        return {'float32': 1.0, 'bfloat16': bf16_seconds}
    monkeypatch.setattr(tuning, 'measure_matmul', measure_matmul)
    lines = []
    assert tuning.choose_precision(enabled=True, log=lines.append) == expected
    assert len(lines) == 2 and expected in lines[1]
    monkeypatch.setattr(tuning, '_measured', {})
    lines.clear()
    assert tuning.choose_precision(enabled=True, log=lines.append) == expected
    assert calls == [1] and lines == []


def test_bfloat16_speedup_is_the_measured_ratio_from_the_cache(own_cache, monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_flags', lambda: {'avx512f', 'avx512_bf16'})
    assert tuning.bfloat16_speedup() is None  # not measured yet
    monkeypatch.setattr(tuning, 'measure_matmul', lambda: {'float32': 1.0, 'bfloat16': 0.4})
    assert tuning.choose_precision(enabled=True) == 'bfloat16'
    assert tuning.bfloat16_speedup() == pytest.approx(2.5)
    monkeypatch.setattr(tuning, '_measured', {})  # a later run: from the file
    assert tuning.bfloat16_speedup() == pytest.approx(2.5)
    key = tuning.precision_key(tuning.machine_key())
    for damaged in ({'seconds': {'float32': 1.0}}, {'seconds': {'float32': 'x', 'bfloat16': 1}},
                    {'seconds': {'float32': 1.0, 'bfloat16': 0}}, {'seconds': [1, 2]},
                    {'seconds': {'float32': 10 ** 400, 'bfloat16': 1}},
                    {'seconds': {'float32': float('nan'), 'bfloat16': 1}},
                    {'seconds': {'float32': float('inf'), 'bfloat16': 1}},
                    {'seconds': {'float32': -1, 'bfloat16': 1}}):
        tuning.write_cache(tuning.cache_path(), {key: damaged})
        assert tuning.bfloat16_speedup() is None


def test_precision_is_float32_when_bfloat16_matmul_fails(monkeypatch):
    monkeypatch.setattr(runtime, 'cpu_flags', lambda: {'avx512f', 'avx512_bf16'})

    def measure_matmul():
        raise tf.errors.InvalidArgumentError(None, None, 'no bfloat16 MatMul kernel')
    monkeypatch.setattr(tuning, 'measure_matmul', measure_matmul)
    lines = []
    assert tuning.choose_precision(enabled=True, log=lines.append) == 'float32'
    assert 'failed' in lines[-1]


@pytest.mark.parametrize('onednn', [True, False])
def test_a_wide_layer_times_only_its_forward_passes(monkeypatch, onednn):
    """A wide layer's forward passes are timed and its gradients estimated by the forward pass
    of their kind (TensorFlow's backward-data convolution by the transposed forward, Winograd's
    by Winograd's); a narrow layer's candidates with the same forward differ in their gradient,
    timed too. Each candidate's seconds are the sum of the parts it takes."""
    monkeypatch.setattr(tuning.runtime, 'onednn_enabled', lambda: onednn)
    timed = []

    def fake_times(sess, targets):
        timed.append(sorted(targets))
        sess.run(list(targets.values()))  # each target runs in the layer's graph
        return {part: {'forward': 1.0, 'gradient': 10.0}[part[0]] * (1 + index)
                for index, part in enumerate(sorted(targets))}
    monkeypatch.setattr(tuning, 'time_candidates', fake_times)
    wide = tuning.measure_conv((6, 8, 8, 4))
    forwards = (['direct'] if not onednn else []) + ['transposed', 'winograd', 'winograd_stored']
    assert timed[-1] == [('forward', forward) for forward in forwards]
    forward = {name: 1.0 + index for index, name in enumerate(forwards)}  # as fake_times
    expected = {('transposed', 'tf'): 2 * forward['transposed'],
                ('winograd', 'winograd'): 2 * forward['winograd'],
                # its gradient (which reads the transforms transposed either way) as Winograd's
                ('winograd_stored', 'winograd'): forward['winograd_stored'] + forward['winograd']}
    if not onednn:
        expected['direct', 'tf'] = forward['direct'] + forward['transposed']
    assert wide == expected
    # No Winograd in bfloat16: the same forward passes but Winograd's.
    bf16 = {('direct', 'tf'): 1.0 + 2.0, ('transposed', 'tf'): 2.0 + 2.0} if not onednn else \
        {('transposed', 'tf'): 1.0 + 1.0}
    assert tuning.measure_conv((6, 8, 8, 4), 'bfloat16') == bf16
    narrow = tuning.measure_conv((6, 8, 3, 4))
    assert timed[-1] == [('forward', 'direct'), ('forward', 'transposed'),
                         ('gradient', 'matmul'), ('gradient', 'tf')]
    assert narrow == {('direct', 'tf'): 1.0 + 40.0, ('transposed', 'tf'): 2.0 + 40.0,
                      ('direct', 'matmul'): 1.0 + 30.0}


def test_matmul_measurement_runs():
    times = tuning.measure_matmul(size=64)
    assert set(times) == {'float32', 'bfloat16'} and all(t > 0 for t in times.values())


# ----------------------------------------------------------------------------------------------
# The tuned graph computes what the default one does
# ----------------------------------------------------------------------------------------------

def activations_and_gradient(weights, height, width, paths, image):
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        model = vgg.build_vgg_graph(weights, height, width, 'avg', 'float32', sess, paths)
        names = sorted(name for name in model if name != 'input')
        # a cost that reaches every layer: a weighted sum of all activations
        rng = np.random.default_rng(1)
        cost = tf.add_n([tf.reduce_sum(model[name] * rng.normal(
            size=model[name].get_shape().as_list()).astype(np.float32)) for name in names])
        gradient, = tf.gradients(cost, model['input'])
        sess.run(model['input'].assign(image))
        values = sess.run([model[name] for name in names] + [gradient])
    return dict(zip(names + ['gradient'], values))


def test_tuned_graph_matches_the_default_graph():
    weights = random_weights(seed=3)
    height, width = 13, 18  # odd sizes: padded pool windows
    tuned = tuning.choose_paths(weights, height, width, enabled=True)
    assert_valid_paths(tuned, weights)
    other = fast_ops.Paths(  # every layer on a path that is not its default
        conv={name: ('transposed', 'tf') if fast_ops.default_conv_path(w.shape[2])[0] == 'direct'
              else ('direct', 'tf') for name, (w, _) in weights.items()}, pool_gradient='tf')
    winograd = fast_ops.Paths(  # every wide layer a Winograd convolution, both ways
        conv={name: ('winograd', 'winograd') for name, (w, _) in weights.items()
              if w.shape[2] > fast_ops.NARROW_CONV_MAX_CHANNELS})
    image = np.random.default_rng(2).normal(0, 50, (1, height, width, 3)).astype(np.float32)
    expected = activations_and_gradient(weights, height, width, fast_ops.Paths(), image)
    # Of the largest value; Winograd's transforms cost float32 a few bits (nst.winograd).
    for paths, tolerance in ((tuned, 5e-5), (other, 1e-5), (winograd, 5e-5)):
        got = activations_and_gradient(weights, height, width, paths, image)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-4,
                                       atol=tolerance * np.abs(value).max(), err_msg=name)
