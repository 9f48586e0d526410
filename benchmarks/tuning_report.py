"""What nst.tuning measures and chooses on this machine, as a table.

For the course's network at full width (VGG-19, widths 64, 128, 256, 512, 512, with random
He-scaled weights made in memory) at --size (400x300): the tuner is run with an empty cache of
its own (a temp folder; the user's cache is not touched), and the report gives

- the machine: CPU model, the flags the cache is keyed by, usable cores, TensorFlow, oneDNN on
  or off, the load average (other work on the machine skews every figure);
- per distinct layer shape: its layers, each candidate path's time (forward with bias and ReLU
  plus the input gradient; best of the timed runs), the choice, the untuned default, and how
  long that shape's measurement took; the same for the average-pool gradient;
- the tuning's total time, and the share of the CPUs other processes used meanwhile (above
  nst.tuning.BUSY_SHARE the tuner does not cache what it measured);
- with --step: a whole training step of the network (forward to conv5_4 and the gradient of a
  cost on every layer with respect to the input) with the default paths and with the tuned ones,
  both graphs built first and then run in turn, median of --repeats after a warm-up: what the
  tuning is worth.

TensorFlow's oneDNN kernels are on by default (nst.runtime); --onednn off runs with
TF_ENABLE_ONEDNN_OPTS=0, --onednn both runs the report twice, each in a fresh process.
--inter-op N gives every session of the process N inter-op threads (TensorFlow keeps the first
session's pool for the whole process, so compare values in separate runs; 0 = TensorFlow's own).

Run (from the repo root; about 10 s per report, 40 s with --step; on a quiet machine):

    python benchmarks/tuning_report.py
    python benchmarks/tuning_report.py --onednn both --step
    python benchmarks/tuning_report.py --step --inter-op 0     # against the default, 1
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

from nst import fast_ops, runtime, tuning, vgg  # noqa: E402  (TensorFlow is imported later)
from nst.config import VGG19_BLOCK_DEPTHS, VGG19_CONV_LAYERS, VGG19_WIDTHS  # noqa: E402

from benchmark_problem import onednn_text, run_size  # noqa: E402  (the project's modules)


def real_width_weights(seed=0):
    """{name: (W, b)} of all 16 conv layers at the real widths, He-scaled random kernels."""
    rng = np.random.default_rng(seed)
    weights, channels = {}, 3
    names = iter(VGG19_CONV_LAYERS)
    for width, depth in zip(VGG19_WIDTHS, VGG19_BLOCK_DEPTHS):
        for _, name in zip(range(depth), names):
            kernel = rng.standard_normal((3, 3, channels, width), dtype=np.float32)
            kernel *= np.float32(np.sqrt(2.0 / (9 * channels)))
            weights[name] = kernel, np.zeros(width, np.float32)
            channels = width
    return weights


def machine():
    flags = runtime.cpu_flags()
    tf = runtime.import_tf()
    return {'cpu': runtime.cpu_model(),
            'flags': [flag for flag in tuning.KEY_FLAGS if flag in flags],
            'usable_cpus': len(os.sched_getaffinity(0)),
            'tensorflow': tf.version.VERSION, 'onednn': runtime.onednn_enabled(),
            'onednn_isa_limit': runtime.onednn_isa_limit(),
            'load_average': os.getloadavg()[0]}


def tune(weights, height, width, precision):
    """Run the tuner with an empty cache; returns (paths, seconds, per-shape records)."""
    records = []
    measure_conv, measure_pool = tuning.measure_conv, tuning.measure_pool

    def recorded(measure, what):
        def run(shape, precision, *winograd):
            start = time.perf_counter()
            times = measure(shape, precision, *winograd)
            records.append({'what': what, 'shape': shape, 'times': times,
                            'seconds': time.perf_counter() - start})
            return times
        return run

    tuning.measure_conv = recorded(measure_conv, 'conv')
    tuning.measure_pool = recorded(measure_pool, 'pool')
    try:
        with tempfile.TemporaryDirectory() as cache_dir:
            load = tuning.load_sample()
            paths = tuning.choose_paths(weights, height, width, precision, enabled=True,
                                        cache_dir=cache_dir, log=print)
            seconds = time.perf_counter() - load[2]
            others = tuning.others_share(load)
    finally:
        tuning.measure_conv, tuning.measure_pool = measure_conv, measure_pool
    return paths, seconds, others, records


def step_times(weights, height, width, precision, variants, repeats):
    """{name: median seconds of one forward + input-gradient step of the whole network} for
    variants {name: Paths}, and the share of the CPUs other processes used meanwhile. The graphs
    are built first and then run in turn, so that a change of load falls on all alike."""
    tf = runtime.import_tf()
    steps = {}
    for name, paths in variants.items():
        graph = tf.Graph()
        with graph.as_default():
            sess = tf.Session(config=runtime.session_config())
            model = vgg.build_vgg_graph(weights, height, width, 'avg', precision, sess, paths)
            cost = tf.add_n([tf.reduce_mean(tensor) for key, tensor in model.items()
                             if key != 'input'])
            gradient, = tf.gradients(cost, model['input'])
            sess.run(model['input'].assign(tf.random.uniform([1, height, width, 3], -20, 20)))
            sess.run(gradient.op)  # warm-up
        steps[name] = sess, gradient.op
    times = {name: [] for name in variants}
    start = tuning.load_sample()
    for _ in range(repeats):
        for name, (sess, op) in steps.items():
            begin = time.perf_counter()
            sess.run(op)
            times[name].append(time.perf_counter() - begin)
    others = tuning.others_share(start)
    for sess, _ in steps.values():
        sess.close()
    return {name: statistics.median(t) for name, t in times.items()}, others


def ms(seconds):
    return '%.1f' % (seconds * 1e3)


def print_report(info, height, width, precision, weights, paths, seconds, others, records,
                 steps):
    shapes = tuning.conv_shapes(weights, *tuning.measured_size(height, width))
    full_shapes = tuning.conv_shapes(weights, height, width)
    print()
    print('Machine: %s [%s], %d usable CPUs, TensorFlow %s, oneDNN %s, load average %.2f'
          % (info['cpu'], ' '.join(info['flags']) or 'no AVX2', info['usable_cpus'],
             info['tensorflow'], onednn_text(info['onednn'], info['onednn_isa_limit']),
             info['load_average']))
    print('Problem: VGG-19 at full width, %dx%d, %s; measured at %dx%d'
          % ((width, height, precision) + tuple(tuning.measured_size(height, width))[::-1]))
    print()
    columns = (('direct', 'tf'), ('transposed', 'tf'), ('direct', 'matmul'),
               ('winograd', 'winograd'), ('winograd_stored', 'winograd'))
    header = '%-17s %-18s %10s %13s %14s %9s %9s   %-24s %-14s %6s' % (
        'layers', 'shape HxW Cin->Cout', 'direct/tf', 'transposed/tf', 'direct/matmul',
        'winograd', 'wino/st.', 'choice', 'default', 'took')
    print(header)
    print('-' * len(header))
    for record in records:
        times = record['times']
        if record['what'] == 'conv':
            shape = record['shape']
            names = [name for name, s in shapes.items() if s == shape]
            confirming = not names  # a direct path's win measured again, larger
            if confirming:
                names = [name for name, s in shapes.items()
                         if tuning.confirmation_shape(s, full_shapes[name]) == shape]
            layers = names[0] if len(names) == 1 else '%s-%s' % (names[0], names[-1])
            layers += ' (again)' if confirming else ''
            cells = [ms(times[c]) if c in times else '-' for c in columns]
            choice = '/'.join(paths.conv[names[0]])
            default = '/'.join(fast_ops.default_conv_path(shape[2]))
            print('%-17s %-18s %10s %13s %14s %9s %9s   %-24s %-14s %5.2fs' % (
                layers, '%dx%d %d->%d' % shape, *cells, choice, default, record['seconds']))
    print('(milliseconds, best of the timed runs: the forward pass and the input gradient, the '
          'gradient timed where candidates with the same forward pass differ in it, else '
          'estimated by a forward pass of its kind)')
    for record in records:
        if record['what'] == 'pool':
            times = record['times']
            print('Average pools 1-%d, forward + gradient: tf %s ms, broadcast %s ms; choice %s, '
                  'default %s (took %.2f s)' % (
                      len(record['shape']), ms(times['tf']), ms(times['broadcast']),
                      paths.pool_gradient, fast_ops.Paths().pool_gradient, record['seconds']))
    print()
    print('Tuning took %.2f s (TensorFlow imported before); other processes used %d %% of the '
          'CPUs meanwhile.' % (seconds, round(100 * others)))
    if steps:
        print('Whole step (forward + input gradient), median: default paths %.3f s, tuned '
              '%.3f s (%.2fx)' % (steps['default'], steps['tuned'],
                                  steps['default'] / steps['tuned']))
        if steps['others_share'] > tuning.BUSY_SHARE:
            print('  (other processes used %d %% of the CPUs meanwhile: the step times are '
                  'not reliable)' % round(100 * steps['others_share']))


def report(args):
    if args.inter_op is not None:
        config = runtime.session_config
        runtime.session_config = lambda inter_op_threads=args.inter_op: config(inter_op_threads)
    info = machine()
    width, height = args.size
    weights = real_width_weights()
    paths, seconds, others, records = tune(weights, height, width, args.precision)
    steps = None
    if args.step:
        steps, step_others = step_times(weights, height, width, args.precision,
                                        {'default': fast_ops.Paths(), 'tuned': paths},
                                        args.repeats)
        steps['others_share'] = step_others
    print_report(info, height, width, args.precision, weights, paths, seconds, others, records,
                 steps)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': info, 'size': [width, height], 'precision': args.precision,
                       'inter_op': args.inter_op, 'tuning_seconds': seconds,
                       'tuning_others_share': others,
                       'shapes': [{'what': r['what'], 'shape': list(r['shape']),
                                   'seconds': r['seconds'],
                                   'times': {'/'.join(c) if isinstance(c, tuple) else c: t
                                             for c, t in r['times'].items()}}
                                  for r in records],
                       'paths': {'conv': {k: list(v) for k, v in paths.conv.items()},
                                 'pool_gradient': paths.pool_gradient},
                       'steps': steps}, f, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=run_size, default=(400, 300), metavar='WxH')
    parser.add_argument('--precision', choices=('float32', 'bfloat16'), default='float32')
    parser.add_argument('--onednn', choices=('on', 'off', 'both'), default='on')
    parser.add_argument('--inter-op', type=int, default=None, metavar='N',
                        help='inter-op threads of every session (default: the project\'s, 1)')
    parser.add_argument('--step', action='store_true',
                        help='also time a whole step with the default and the tuned paths')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed steps of each (with --step)')
    parser.add_argument('--json', metavar='FILE', help='also write the figures as JSON')
    args = parser.parse_args(argv)
    if args.onednn == 'both':  # each in a fresh process: the setting is read at import
        for setting in ('on', 'off'):
            command = [sys.executable, os.path.abspath(__file__), '--onednn', setting,
                       '--size', '%dx%d' % args.size, '--precision', args.precision,
                       '--repeats', str(args.repeats)]
            command += ['--step'] if args.step else []
            command += ['--inter-op', str(args.inter_op)] if args.inter_op is not None else []
            if args.json:
                root, ext = os.path.splitext(args.json)
                command += ['--json', '%s-onednn-%s%s' % (root, setting, ext)]
            subprocess.run(command, check=True)
        return
    if 'tensorflow' in sys.modules:
        raise SystemExit('TensorFlow is already imported: --onednn cannot take effect')
    os.environ['TF_ENABLE_ONEDNN_OPTS'] = '1' if args.onednn == 'on' else '0'
    if args.precision == 'bfloat16' and runtime.bfloat16_support() is None:
        parser.error('--precision bfloat16: %s, so nothing runs in bfloat16 to measure'
                     % runtime.no_bfloat16_reason())
    report(args)


if __name__ == '__main__':
    main()
