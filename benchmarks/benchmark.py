"""Speed benchmark of the style transfer (issues 4 and 10): time per iteration against a PyTorch
loop and against this machine's GEMM peaks, start-up time (first use, with the tuning
measurement, and later runs), peak memory, and the bfloat16 mode.

What it runs: the project's own code path (nst.weights.read_vgg_weights, nst.vgg,
art_generation.build_style_transfer, then nst.optimize.optimise's Adam loop itself, timed at
the end of each iteration through its stop request) on the course's problem at 400x300: the
repo's content and style images and a full-width VGG-19 in the MatConvNet layout with random
weights (see benchmark_problem.py; the weight files are written once into a git-ignored cache
folder).

What it prints:
- the minimal work of one iteration, computed from the layer shapes of the built graph: the
  forward convolutions up to the deepest layer the cost uses (conv5_1) plus the gradient with
  respect to the input back through them (2 FLOPs per multiply-add), about 174 GFLOP;
- per precision: median seconds per iteration over the timed iterations after warm-up, and
  the achieved GFLOP/s;
- the machine: CPU model and the flags that matter (avx2, avx512f, avx512_bf16, amx_bf16), and
  whether TensorFlow runs its oneDNN kernels;
- this machine's fp32 GEMM peaks, best of several sizes: NumPy's BLAS, TensorFlow with oneDNN
  (this process) and TensorFlow without it (a child process with TF_ENABLE_ONEDNN_OPTS=0), and
  the ratio achieved / the best of them;
- the PyTorch baseline (pytorch_baseline.py, same problem) in the same run, when torch is
  installed, and our time as a fraction of its: --rounds pairs of fresh processes, which goes
  first alternating, and the median of the rounds' ratios (on a shared machine one pair alone
  gave anything from 0.82 to 1.00 within an hour);
- start-up time beyond `import tensorflow`: from just after that import to the end of the first
  training iteration, reading the real-size (575 MB) weight file; once with an empty tuning
  cache (first use: the fast paths are measured) and with the cache that run left, in each
  round and in --startup-runs more fresh processes (the median of all; each a few seconds); by
  stage: reading, the fast paths, the VGG graph with its weights loaded, the content and style
  passes, the graph of the costs, gradient and Adam, the fixed inputs folded, the first
  iteration;
- peak resident memory (ru_maxrss) of a real run: the command line itself
  (art_generation.py --model <that file> --iterations 5, printing and saving as usual) in a
  child process, read with os.wait4; the benchmark's own processes are reported too;
- with --precision both: the bfloat16 speed-up, the bf16 matmul peak (the most bfloat16
  arithmetic gives on this CPU: its ratio to the fp32 peak bounds the speed-up), and with
  --quality the cost after 200 iterations of each precision from the same initial image;
- a table of the figures next to the targets of issue 4;
- where a step's time goes (step_profile.py): the ops of a few traced steps by kind, the
  convolutions (forward, input gradient) with their GFLOP/s, the Gram matrices, the rest.

Each precision is measured in a fresh Python process (this script with --worker), so start-up is
cold in-process and no figure is polluted by this process (which runs the matmul peak test,
before and after the runs: the best is kept, as other load on the machine only lowers it).
Other work on the machine skews every figure: the table shows the load average at the start,
and a warning is printed when the matmul peak moved by more than 15 % during the run.

Run (from the repo root; a few minutes, the first run also writes about 655 MB of weight files):

    python benchmarks/benchmark.py                          # fp32
    python benchmarks/benchmark.py --precision both         # fp32 and bf16, speed-up
    python benchmarks/benchmark.py --precision both --quality --json bench.json
                                    # + cost after 200 iterations of each (5-15 minutes more)
"""

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import benchmark_problem as problem
import step_profile
from benchmark_problem import cli, optimize, runtime, vgg
from nst import tuning

# Targets of issues 4 and 10 (on 2-core machines at 400x300).
TARGET_PYTORCH_RATIO = 0.80  # our time per iteration / the PyTorch loop's, on every CPU kind
TARGET_PEAK_RATIO = 0.85     # fp32 achieved GFLOP/s / the best fp32 GEMM peak (AVX-512)
TARGET_BF16_PEAK_RATIO = 0.85  # bf16 achieved / bf16 matmul peak, where bf16 is used
TARGET_RSS_BYTES = 1.2e9     # peak resident memory
TARGET_STARTUP_S = 3.0       # beyond `import tensorflow`, real-size file, later runs
TARGET_FIRST_STARTUP_S = 8.0  # the same on first use, with the tuning measurement
TARGET_BF16_SPEEDUP = 1.7    # fp32 time / bf16 time (issue 4; possible only with AMX)
TARGET_BF16_COST = 0.02      # relative difference of the cost after 200 iterations
KEY_FLAGS = tuning.KEY_FLAGS  # the CPU flags that change which kernels run

MATMUL_SIZES = (2048, 3072, 4096)
BUSY_SPREAD = 0.15  # a larger change of the matmul peak during the run means a busy machine
RSS_ITERATIONS = 5  # of the command-line run whose peak memory is reported
PROFILED_STEPS = 3  # traced after the timed ones, for where a step's time goes


# ----------------------------------------------------------------------------------------------
# 1. The minimal work of one iteration
# ----------------------------------------------------------------------------------------------

def print_work(rows):
    print('Minimal work per iteration (2 FLOPs per multiply-add):')
    print('  %-8s %-9s %-16s %10s %15s' % ('layer', 'map', 'kernel', 'forward', 'backward-data'))
    for name, (height, width), kernel, flops in rows:
        print('  %-8s %-9s %-16s %9.2fG %14.2fG' % (name, '%dx%d' % (height, width),
                                                   'x'.join(map(str, kernel)), flops / 1e9,
                                                   flops / 1e9))
    one_way = sum(row[3] for row in rows)
    print('  %-35s %9.2fG %14.2fG   = %.1f GFLOP' % ('total', one_way / 1e9, one_way / 1e9,
                                                    2 * one_way / 1e9))
    return 2 * one_way


# ----------------------------------------------------------------------------------------------
# 2. One run, in a fresh process
# ----------------------------------------------------------------------------------------------

def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@contextlib.contextmanager
def staged(module, name, before=None, after=None):
    """Within the block, module.name calls before() when it is called and after() when it
    returns: the start-up's stages inside problem.build, timed without changing the code."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        if before:
            before()
        result = original(*args, **kwargs)
        if after:
            after()
        return result

    setattr(module, name, wrapped)
    try:
        yield
    finally:
        setattr(module, name, original)


def run_worker(spec):
    """Measure one precision in this (fresh) process; returns a dict of plain numbers.

    spec: weights, precision, width, seed, warmup, iterations, quality_iterations,
    save_final (a .npy path for the final image, or None), evaluate (.npy images to cost).
    """
    # Not timed: start-up is measured beyond this import. Through the project's import, so
    # that oneDNN is on as in a run (it must be set before TensorFlow is imported).
    runtime.import_tf()

    start = time.perf_counter()
    stages = {}

    def stage(name):
        stages[name] = time.perf_counter() - start

    tf = runtime.import_tf()
    weights = problem.read_weights(spec['weights'])
    stage('read weights')
    content_image, style_image = problem.load_images(spec['width'])
    x0 = problem.initial_image(content_image, spec['seed'])
    stage('read images')
    result = {'precision': spec['precision']}
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess, \
            staged(tuning, 'choose_paths', after=lambda: stage('fast paths (tuning)')), \
            staged(vgg, 'build_vgg_graph', after=lambda: stage('VGG graph, weights loaded')), \
            staged(optimize, 'prepare', before=lambda: stage('content and style passes')), \
            staged(optimize, 'fold_fixed', before=lambda: stage('costs, gradient, Adam'),
                   after=lambda: stage('fixed inputs folded')):
        nst = problem.build(sess, weights, content_image, style_image, spec['precision'])
        result['conv_shapes'] = problem.conv_shapes(nst.model, weights)
        del weights  # as art_generation.run does: the graph holds its own copy
        # The project's Adam loop itself, timed at the end of each iteration (its stop check).
        total = 1 + spec['warmup'] + spec['iterations']
        recorder, _ = problem.run_recorded(sess, nst, x0, total)
        ends = [elapsed for elapsed, _ in recorder.records]
        if len(ends) < total:
            raise RuntimeError('the run stopped after %d of %d iterations' % (len(ends), total))
        stages['initialise'] = recorder.entered - start  # optimise's set-up before its loop
        stages['first iteration'] = stages['initialise'] + ends[0]
        result['startup_s'] = stages['first iteration']
        result['startup_stages'] = stages
        result['iteration_s'] = list(np.diff(ends)[spec['warmup']:])
        result['peak_rss_after_timing'] = peak_rss_bytes()
        if spec.get('profile', True):
            # Where a step's time goes: a few more steps, traced (the timed ones were not).
            result['step_profile'] = step_profile.profile_step(sess, nst, PROFILED_STEPS)

        if spec['quality_iterations']:
            result['quality'] = quality_run(sess, nst, x0, spec)
        result['evaluated'] = [problem.evaluate_costs(sess, nst, np.load(path))
                               for path in spec['evaluate']]
    result['peak_rss_bytes'] = peak_rss_bytes()
    return result


def quality_run(sess, nst, x0, spec):
    """The course's loop (nst.optimize.optimise) for quality_iterations from x0; the costs of
    the final image. It restarts from x0 with fresh Adam state (optimise initialises)."""
    start = time.perf_counter()
    run = optimize.optimise(sess, nst, x0, spec['quality_iterations'], progress=False)
    seconds = time.perf_counter() - start
    if spec['save_final']:
        np.save(spec['save_final'], run.image)
    return {'iterations': run.iterations, 'diverged': run.diverged, 'seconds': seconds,
            'costs': problem.evaluate_costs(sess, nst, run.image)}


def measure(spec):
    """Run run_worker(spec) in a fresh Python process; returns its dict."""
    command = [sys.executable, os.path.abspath(__file__), '--worker', json.dumps(spec)]
    env = dict(os.environ)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # quiet TensorFlow's own start-up log
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in process.stdout.splitlines() if line.startswith('RESULT ')]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stderr[-5000:])
        raise SystemExit('the %s measurement failed (exit code %d)'
                         % (spec['precision'], process.returncode))
    return json.loads(lines[-1][len('RESULT '):])


def command_line_peak_rss(weights, precision, seed, iterations=RSS_ITERATIONS):
    """Peak resident memory (bytes) of `art_generation.py` run as a user runs it, in a child
    process: default images, this weights file, a few iterations, printing and saving."""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [sys.executable, os.path.join(problem.PROJECT_DIR, 'art_generation.py'),
                   '--model', weights, '--no-download', '--precision', precision,
                   '--iterations', str(iterations), '--seed', str(seed),
                   '--output-dir', output_dir, '--no-progress']
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 cwd=problem.PROJECT_DIR)
        errors = child.stderr.read()
        child.stderr.close()
        _, status, usage = os.wait4(child.pid, 0)  # the rusage of that child alone
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.stderr.write(errors.decode(errors='replace')[-5000:])
        raise SystemExit('art_generation.py failed (exit code %d)' % child.returncode)
    return usage.ru_maxrss * 1024  # Linux: KiB


# ----------------------------------------------------------------------------------------------
# 3. This machine's matmul peak (fp32, and bf16 for the bfloat16 mode)
# ----------------------------------------------------------------------------------------------

def matmul_peak(sizes=MATMUL_SIZES, repeats=5, dtype='float32'):
    """GFLOP/s of TensorFlow matmuls (tf.compat.v1 graph), best of `repeats` per size.

    The operands are variables (no constant folding) and only the op is run (no copy of the
    result), so the time is that of the matmul. dtype 'bfloat16' gives the ceiling of the
    bfloat16 mode: oneDNN's best bfloat16 kernel on this CPU. Returns {size: GFLOP/s}.
    """
    tf = runtime.import_tf()
    rates = {}
    for n in sizes:
        with tf.Graph().as_default(), tf.Session() as sess:
            a = tf.Variable(tf.cast(tf.random.uniform((n, n)), dtype))
            b = tf.Variable(tf.cast(tf.random.uniform((n, n)), dtype))
            product = tf.matmul(a, b).op
            sess.run(tf.global_variables_initializer())
            sess.run(product)  # warm-up
            best = float('inf')
            for _ in range(repeats):
                begin = time.perf_counter()
                sess.run(product)
                best = min(best, time.perf_counter() - begin)
        rates[n] = 2.0 * n ** 3 / best / 1e9
    return rates


# ----------------------------------------------------------------------------------------------
# 4. The machine and the report
# ----------------------------------------------------------------------------------------------

def numpy_matmul_peak(sizes=MATMUL_SIZES, repeats=5):
    """GFLOP/s of NumPy's BLAS (float32 matmul), best of `repeats` per size: {size: GFLOP/s}."""
    rates = {}
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        out = np.empty((n, n), np.float32)
        np.matmul(a, b, out=out)  # warm-up
        best = float('inf')
        for _ in range(repeats):
            begin = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - begin)
        rates[n] = 2.0 * n ** 3 / best / 1e9
    return rates


def child_matmul_peak(onednn):
    """TensorFlow's fp32 matmul peak in a child process with TF_ENABLE_ONEDNN_OPTS=onednn
    (the setting is read once, when TensorFlow is imported). Returns ({size: GFLOP/s}, whether
    oneDNN was on there)."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='1' if onednn else '0')
    output = subprocess.run([sys.executable, os.path.abspath(__file__), '--matmul-worker'],
                            env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.splitlines()[-1])
    return {int(n): rate for n, rate in result['rates'].items()}, result['onednn']


def torch_installed():
    import importlib.util
    return importlib.util.find_spec('torch') is not None


def pytorch_seconds(args):
    """Median seconds per iteration of pytorch_baseline.py (same problem), in a fresh process."""
    print('Measuring the PyTorch loop (pytorch_baseline.py) ...', file=sys.stderr, flush=True)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pytorch_baseline.py')
    output = subprocess.run([sys.executable, script, '--iterations', str(args.iterations),
                             '--warmup', str(args.warmup), '--width', str(args.width)],
                            capture_output=True, text=True, check=True).stdout
    line = output.strip().splitlines()[-1]
    print('  ' + line, file=sys.stderr)
    return float(line.split('median ')[1].split(' s')[0])


def compare_rounds(args, spec, first_run):
    """Our fp32 loop against the PyTorch loop in args.rounds rounds of fresh processes.

    Round 1 pairs first_run (already measured, with the start-up and the step profile) with a
    PyTorch run right after it; each later round runs both again, PyTorch first in every
    other one, so that a change in the machine's speed during the benchmark (our machines are
    shared: the same loop's median moves by 10-20 % between minutes) weighs on both sides
    alike. Returns [{'ours': [seconds of each timed iteration], 'startup_s': ...,
    'torch_s': median seconds}, ...]; the report takes the median of the rounds' ratios.
    """
    rounds = []
    for index in range(args.rounds):
        round_ = {}
        order = ('torch', 'ours') if index % 2 else ('ours', 'torch')
        for side in order:
            if side == 'torch':
                round_['torch_s'] = pytorch_seconds(args)
                continue
            run = first_run
            if index > 0:
                print('Measuring float32 again (round %d of %d) ...' % (index + 1, args.rounds),
                      file=sys.stderr, flush=True)
                run = measure(dict(spec, profile=False, quality_iterations=0, save_final=None,
                                   evaluate=[]))
            round_['ours'], round_['startup_s'] = run['iteration_s'], run['startup_s']
        rounds.append(round_)
    return rounds


def round_ratios(rounds):
    """Each round's median seconds per iteration, ours over PyTorch's."""
    return [float(np.median(r['ours'])) / r['torch_s'] for r in rounds]


def startup_runs(spec, count):
    """The later-run start-up of count more fresh processes (each times one iteration, no
    profile): our machines' speed moves by 10-20 % between minutes, so the report takes the
    median of these and the rounds' start-ups, not of three alone. Returns [seconds, ...]."""
    startups = []
    for index in range(count):
        print('Measuring the float32 start-up again (%d of %d) ...' % (index + 1, count),
              file=sys.stderr, flush=True)
        startups.append(measure(dict(spec, warmup=0, iterations=1, quality_iterations=0,
                                     save_final=None, evaluate=[], profile=False))['startup_s'])
    return startups


def machine(bf16_support):
    import tensorflow
    flags = runtime.cpu_flags()
    return {'cpu': runtime.cpu_model(), 'logical_cpus': os.cpu_count(),
            'usable_cpus': len(os.sched_getaffinity(0)),
            'flags': [flag for flag in KEY_FLAGS if flag in flags],
            'avx512f': 'avx512f' in flags, 'onednn': runtime.onednn_enabled(),
            'onednn_isa_limit': runtime.onednn_isa_limit(),
            'bf16': bf16_support,
            'tensorflow': tensorflow.__version__, 'python': platform.python_version()}


def relative(a, b):
    return abs(a - b) / abs(b)


def verdict(ok):
    return 'ok' if ok else 'MISSED'


def report(args, info, results, peaks, flops, bf16_rates=None):
    """The final table: each figure next to its target from issues 4 and 10.

    peaks: {name: {size: GFLOP/s}} of the fp32 GEMMs measured (NumPy, TensorFlow with and
    without oneDNN); the best of all is the machine's peak. With the PyTorch rounds
    (compare_rounds), the fp32 time is the median of all their timed iterations and the ratio
    the median of the rounds' ratios."""
    best_name, best_rates = max(peaks.items(), key=lambda item: max(item[1].values()))
    peak = max(best_rates.values())
    gb = 1e9
    print()
    bf16_text = {'amx': 'AMX-BF16', 'avx512': 'AVX512_BF16 (no AMX)', None: 'none'}
    print('Machine: %s, %d logical CPUs (%d usable), flags %s, bfloat16 arithmetic %s; '
          'TensorFlow %s with oneDNN %s, Python %s; load average %.1f at the start' % (
              info['cpu'], info['logical_cpus'], info['usable_cpus'],
              ' '.join(info['flags']) or 'none of ' + ' '.join(KEY_FLAGS), bf16_text[info['bf16']],
              info['tensorflow'], problem.onednn_text(info['onednn'], info['onednn_isa_limit']),
              info['python'],
              info['load_average_at_start']))
    print('Problem: VGG-19 full width (random weights), %dx%d, Adam 2.0; %d timed iterations '
          'after %d warm-up; weights file %s' % (
              args.width, args.height, args.iterations, args.warmup,
              'conv-only (--skip-startup)' if args.skip_startup else 'real-size (575 MB)'))
    rows = [('figure', 'value', 'target (issues 4, 10)', '')]
    fp32, bf16 = results.get('float32'), results.get('bfloat16')
    avx512 = info['avx512f']
    rounds = (fp32 or {}).get('rounds')
    for precision, run in (('fp32', fp32), ('bf16', bf16)):
        if run is None:
            continue
        iterations = list(run['iteration_s'])
        if precision == 'fp32' and rounds:
            iterations = [s for r in rounds for s in r['ours']]
        seconds = float(np.median(iterations))
        achieved = flops / seconds / 1e9
        rows.append(('%s s/iteration (median, min-max%s)'
                     % (precision, ', %d rounds' % len(rounds) if precision == 'fp32' and rounds
                        else ''),
                     '%.3f s (%.3f-%.3f)' % (seconds, min(iterations), max(iterations)), '', ''))
        rows.append(('%s achieved' % precision, '%.1f GFLOP/s' % achieved,
                     '(%.1f GFLOP / iteration)' % (flops / 1e9), ''))
        if precision == 'fp32':
            if rounds:
                ratios = round_ratios(rounds)
                ratio = float(np.median(ratios))
                rows.append(('PyTorch loop s/iteration (median of rounds)',
                             '%.3f s' % float(np.median([r['torch_s'] for r in rounds])), '', ''))
                for number, (r, round_ratio) in enumerate(zip(rounds, ratios), 1):
                    rows.append(('  round %d: ours, PyTorch, ratio' % number,
                                 '%.3f s, %.3f s, %.2f' % (float(np.median(r['ours'])),
                                                           r['torch_s'], round_ratio), '', ''))
                rows.append(('fp32 time / PyTorch time (median of rounds)', '%.2f' % ratio,
                             '<= %.2f' % TARGET_PYTORCH_RATIO,
                             verdict(ratio <= TARGET_PYTORCH_RATIO)))
            else:
                rows.append(('PyTorch loop', 'not measured (pip install torch)', '', ''))
            names = {'numpy': 'NumPy BLAS', 'tf_onednn': 'TensorFlow, oneDNN',
                     'tf_eigen': 'TensorFlow, no oneDNN (Eigen)'}
            for name, rates in peaks.items():
                rows.append(('fp32 GEMM peak, %s' % names[name],
                             '%.1f GFLOP/s' % max(rates.values()),
                             'best' if name == best_name else '', ''))
            rows.append(('fp32 achieved / best GEMM peak', '%.0f %%' % (100 * achieved / peak),
                         '>= %.0f %%' % (100 * TARGET_PEAK_RATIO) if avx512
                         else '(AVX-512 target; reported)',
                         verdict(achieved / peak >= TARGET_PEAK_RATIO) if avx512 else ''))
        if precision == 'bf16' and bf16_rates:
            ratio = achieved / max(bf16_rates.values())
            rows.append(('bf16 achieved / bf16 matmul peak', '%.0f %%' % (100 * ratio),
                         '>= %.0f %%' % (100 * TARGET_BF16_PEAK_RATIO),
                         verdict(ratio >= TARGET_BF16_PEAK_RATIO)))
    for precision, run in (('fp32', fp32), ('bf16', bf16)):
        if run is None:
            continue
        target = precision == 'fp32' or fp32 is None
        rows.append(('%s peak memory, art_generation.py run' % precision,
                     '%.2f GB' % (run['cli_peak_rss_bytes'] / gb),
                     '<= %.1f GB' % (TARGET_RSS_BYTES / gb) if target else '',
                     verdict(run['cli_peak_rss_bytes'] <= TARGET_RSS_BYTES) if target else ''))
        rows.append(('  benchmark process: after timing, at end',
                     '%.2f GB, %.2f GB' % (run['peak_rss_after_timing'] / gb,
                                           run['peak_rss_bytes'] / gb), '', ''))
        if args.skip_startup:
            continue
        stages = run['startup_stages']
        if 'first_use_startup_s' in run:
            rows.append(('%s start-up, first use (tuning measured)' % precision,
                         '%.2f s' % run['first_use_startup_s'],
                         '<= %.0f s' % TARGET_FIRST_STARTUP_S if target else '',
                         verdict(run['first_use_startup_s'] <= TARGET_FIRST_STARTUP_S)
                         if target else ''))
        startups = [run['startup_s']]
        if precision == 'fp32' and rounds:
            startups = [r['startup_s'] for r in rounds]
        startups += run.get('more_startups_s', [])
        startup = float(np.median(startups))
        rows.append(('%s start-up beyond import tensorflow (later runs%s)'
                     % (precision, ', median of %d' % len(startups) if len(startups) > 1
                        else ''),
                     '%.2f s' % startup, '<= %.0f s' % TARGET_STARTUP_S if target else '',
                     verdict(startup <= TARGET_STARTUP_S) if target else ''))
        if len(startups) > 1:
            rows.append(('  each run (the rounds\' first)',
                         ', '.join('%.2f s' % s for s in startups), '', ''))
            rows.append(('  stages of the first', '', '', ''))
        previous = 0.0
        for name, at in stages.items():
            rows.append(('  %s' % name, '%.2f s' % (at - previous), '', ''))
            previous = at
    if fp32 and bf16:
        speedup = float(np.median(fp32['iteration_s'])) / float(np.median(bf16['iteration_s']))
        rows.append(('bf16 speed-up over fp32', '%.2fx' % speedup,
                     '>= %.1fx' % TARGET_BF16_SPEEDUP, verdict(speedup >= TARGET_BF16_SPEEDUP)))
    if bf16_rates:
        # What bfloat16 arithmetic can give on this CPU at best: no convolution in it runs
        # faster than its best matmul, so a ratio under the target means the CPU cannot meet it.
        bf16_peak = max(bf16_rates.values())
        rows.append(('bf16 matmul peak (TF, best of %s)'
                     % '/'.join(str(n) for n in sorted(bf16_rates)),
                     '%.1f GFLOP/s' % bf16_peak, '', ''))
        peak = max((peaks.get('tf_onednn') or peaks['tf_eigen']).values())  # TF's fp32
        ceiling = bf16_peak / peak
        rows.append(('  bf16 / fp32 matmul peak: the speed-up ceiling', '%.2fx' % ceiling,
                     '>= %.1fx possible' % TARGET_BF16_SPEEDUP,
                     'ok' if ceiling >= TARGET_BF16_SPEEDUP else 'NOT ON THIS CPU'))
    for precision, run in (('fp32', fp32), ('bf16', bf16)):
        if run is not None and 'quality' in run:
            quality = run['quality']
            rows.append(('%s cost J after %d iterations' % (precision, quality['iterations']),
                         '%.6g' % quality['costs'][0],
                         '(%.0f s for the run)' % quality['seconds'],
                         'DIVERGED' if quality['diverged'] else ''))
    if fp32 and bf16 and 'quality' in fp32 and 'quality' in bf16:
        reference = fp32['quality']['costs'][0]
        difference = relative(bf16['quality']['costs'][0], reference)
        rows.append(('bf16 vs fp32 cost (each in its graph)', '%.2f %%' % (100 * difference),
                     'within %.0f %%' % (100 * TARGET_BF16_COST),
                     verdict(difference <= TARGET_BF16_COST)))
        if fp32['evaluated']:
            difference = relative(fp32['evaluated'][0][0], reference)
            rows.append(('bf16 result costed in fp32 vs fp32', '%.2f %%' % (100 * difference),
                         'within %.0f %%' % (100 * TARGET_BF16_COST),
                         verdict(difference <= TARGET_BF16_COST)))
    problem.print_table(rows)
    for precision, run in (('fp32', fp32), ('bf16', bf16)):
        if run is not None and run.get('step_profile'):
            print('\nWhere a %s step goes (%d traced steps after the timed ones; the ops run one '
                  'at a time, so their times add up to the step):' % (precision, PROFILED_STEPS))
            step_profile.print_profile(run['step_profile'], (flops / 2e9, flops / 2e9))


# ----------------------------------------------------------------------------------------------
# 5. Command line
# ----------------------------------------------------------------------------------------------

def at_least(minimum):
    """An argparse type: a whole number >= minimum (the command line's own checks)."""
    return cli._number(int, minimum, name='whole number')


def build_parser():
    parser = argparse.ArgumentParser(
        description='Benchmark one style-transfer iteration (issues 4, 10): time against a '
                    'PyTorch loop and the fp32 GEMM peaks, start-up, peak memory, bfloat16.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--precision', choices=('float32', 'bfloat16', 'both'), default='float32',
                        help='bfloat16: convolutions in bf16, Grams and costs in fp32; both: '
                             'each, and the speed-up')
    parser.add_argument('--iterations', type=at_least(10), default=10,
                        help='timed iterations (at least 10); the median is reported')
    parser.add_argument('--warmup', type=at_least(0), default=3,
                        help='untimed iterations after the first one')
    parser.add_argument('--width', type=at_least(16), default=problem.WIDTH,
                        help='image width; the height follows the content image (400x300 is '
                             'the course)')
    parser.add_argument('--cache', default=problem.DEFAULT_CACHE, metavar='DIR',
                        help='folder for the generated weight files (git-ignored by default)')
    parser.add_argument('--skip-startup', action='store_true',
                        help='use the conv-only weight file (no 575 MB file, no start-up '
                             'figure; memory is then lower than a real run)')
    parser.add_argument('--quality', action='store_true',
                        help='also run --quality-iterations of the course loop per precision '
                             'from the same start and compare the costs (minutes)')
    parser.add_argument('--quality-iterations', type=at_least(1), default=200,
                        help='iterations of the --quality runs')
    parser.add_argument('--seed', type=at_least(0), default=problem.SEED,
                        help='seed of the initial noise')
    parser.add_argument('--json', metavar='PATH', help='also write the numbers to this file')
    parser.add_argument('--skip-pytorch', action='store_true',
                        help='do not run the PyTorch baseline (it runs when torch is installed)')
    parser.add_argument('--rounds', type=at_least(1), default=3,
                        help='rounds of our fp32 loop and the PyTorch loop, each in fresh '
                             'processes, alternating which goes first; the ratio reported is '
                             'the median of the rounds\'')
    parser.add_argument('--startup-runs', type=at_least(0), default=4,
                        help='fresh processes that time only the fp32 start-up of a later run, '
                             'beside the rounds\' (the start-up reported is the median of all)')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    parser.add_argument('--matmul-worker', action='store_true', help=argparse.SUPPRESS)
    return parser


def precisions_to_run(requested, bf16_support):
    precisions = ['float32', 'bfloat16'] if requested == 'both' else [requested]
    if 'bfloat16' in precisions and bf16_support is None:
        print('bfloat16: %s, so the project falls back to float32; bfloat16 is not measured'
              % runtime.no_bfloat16_reason(), file=sys.stderr)
        precisions = ['float32']
    return precisions


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        print('RESULT ' + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    if args.matmul_worker:
        rates = matmul_peak()
        print(json.dumps({'rates': rates, 'onednn': runtime.onednn_enabled()}), flush=True)
        return 0
    args.height = problem.image_height(args.width)
    load_at_start = os.getloadavg()[0]  # other work on the machine skews every figure
    weights = problem.weights_file(args.cache, with_fc=not args.skip_startup)
    bf16_support = runtime.bfloat16_support()
    precisions = precisions_to_run(args.precision, bf16_support)

    print('Measuring the fp32 matmul peaks (TensorFlow, NumPy) ...', file=sys.stderr, flush=True)
    rates_before = matmul_peak()
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        # The fast paths are measured once per machine and cached: the first run below starts
        # from an empty cache (first use), the timed runs from the one it left (later runs).
        os.environ['NST_CACHE_DIR'] = os.path.join(scratch, 'tuning-cache')
        # bf16 first, so that the fp32 run can also cost the bf16 result in fp32.
        for precision in sorted(precisions):
            final = os.path.join(scratch, precision + '.npy')
            spec = {'weights': weights, 'precision': precision, 'width': args.width,
                    'seed': args.seed, 'warmup': args.warmup,
                    'iterations': args.iterations,
                    'quality_iterations': args.quality_iterations if args.quality else 0,
                    'save_final': final if args.quality else None,
                    'evaluate': [os.path.join(scratch, 'bfloat16.npy')]
                    if precision == 'float32' and args.quality and 'bfloat16' in results
                    else []}
            first_use = None
            if not args.skip_startup:
                print('Measuring the %s start-up on first use (empty tuning cache) ...'
                      % precision, file=sys.stderr, flush=True)
                first_use = measure(dict(spec, warmup=0, iterations=1, quality_iterations=0,
                                         save_final=None, evaluate=[]))['startup_s']
            print('Measuring %s in a fresh process (%d + %d iterations%s) ...'
                  % (precision, 1 + args.warmup, args.iterations,
                     ' + %d for the cost' % args.quality_iterations if args.quality else ''),
                  file=sys.stderr, flush=True)
            results[precision] = measure(spec)
            if first_use is not None:
                results[precision]['first_use_startup_s'] = first_use
            if precision == 'float32' and not args.skip_pytorch and torch_installed():
                results[precision]['rounds'] = compare_rounds(args, spec, results[precision])
            if precision == 'float32' and not args.skip_startup:
                results[precision]['more_startups_s'] = startup_runs(spec, args.startup_runs)
            print('Peak memory of art_generation.py (%s, %d iterations) ...'
                  % (precision, RSS_ITERATIONS), file=sys.stderr, flush=True)
            results[precision]['cli_peak_rss_bytes'] = command_line_peak_rss(
                weights, precision, args.seed)
        del os.environ['NST_CACHE_DIR']
    print('Measuring the fp32 matmul peaks again ...', file=sys.stderr, flush=True)
    rates_after = matmul_peak()
    rates = {n: max(rates_before[n], rates_after[n]) for n in rates_before}
    onednn = runtime.onednn_enabled()  # in this process, as in the runs
    peaks = {'numpy': numpy_matmul_peak(), 'tf_onednn' if onednn else 'tf_eigen': rates}
    other, _ = child_matmul_peak(onednn=not onednn)
    peaks['tf_eigen' if onednn else 'tf_onednn'] = other
    bf16_rates = None
    if 'bfloat16' in results:
        print('Measuring the bf16 matmul peak ...', file=sys.stderr, flush=True)
        bf16_rates = matmul_peak(dtype='bfloat16')
    busy = max(abs(rates_before[n] - rates_after[n]) / rates[n] for n in rates) > BUSY_SPREAD
    info = machine(bf16_support)
    info['load_average_at_start'] = load_at_start

    any_run = next(iter(results.values()))
    work = problem.work_per_iteration(any_run['conv_shapes'])
    print('Problem size %dx%d; layers up to %s' % (args.width, args.height, work[-1][0]))
    flops = print_work(work)
    print('fp32 matmul GFLOP/s, TensorFlow (oneDNN %s), before / after the runs: '
          % ('on' if info['onednn'] else 'off') + ', '.join(
              '%d: %.1f / %.1f' % (n, rates_before[n], rates_after[n]) for n in rates))
    for name in ('numpy', 'tf_eigen'):
        if name in peaks:
            print('fp32 matmul GFLOP/s, %s: ' % name + ', '.join(
                '%d: %.1f' % item for item in peaks[name].items()))
    if bf16_rates:
        print('bf16 matmul GFLOP/s: ' + ', '.join('%d: %.1f' % item for item in bf16_rates.items()))
    report(args, info, results, peaks, flops, bf16_rates)
    if busy:
        print('warning: the matmul peak changed by more than %.0f %% between the start and the '
              'end: other work was running, so these figures are not reliable; run again on a '
              'quiet machine' % (100 * BUSY_SPREAD))

    if args.json:
        data = {'machine': info, 'options': {k: v for k, v in vars(args).items()
                                             if k not in ('worker', 'matmul_worker')},
                'flops_per_iteration': flops, 'gemm_peaks_gflops': peaks,
                'matmul_gflops_before': rates_before, 'matmul_gflops_after': rates_after,
                'bf16_matmul_gflops': bf16_rates,
                'machine_busy': busy,
                'runs': results}
        problem.write_json(args.json, data)
    return 0


if __name__ == '__main__':
    sys.exit(main())
