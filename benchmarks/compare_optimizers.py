"""Adam against L-BFGS-B on the benchmark problem (issue 3's evidence).

The problem is benchmark.py's: the course's style transfer at 400x300 with a full-width VGG-19
of random weights (the cached conv-only file, see benchmark_problem.py). Both optimisers start
from the same initial image (content blended with noise, fixed seed) in the same graph, and run
through the project's own loop, nst.optimize.optimise (Adam with learning rate 2.0 as in the
course, and optimizer='lbfgs'), with no printing, saving or progress bar.

Each optimiser first runs one untimed iteration (TensorFlow prepares a step's kernels on its
first run). Each measured run goes on until it has done --iterations iterations and spent
--seconds of optimisation time. After every iteration the current image and the elapsed time
are recorded (the clock is paused while the image is copied; see
benchmark_problem.IterationRecorder). Afterwards the exact cost J of the recorded images is
evaluated, so both optimisers are judged on the same number:

- (a) J after the same number of iterations (--iterations, default 50);
- (b) J after the same wall time (--seconds, default 60): the last iterate finished within it.

An L-BFGS iteration may evaluate the cost and gradient several times (line search), so (b) is
the fairer comparison.

Run (from the repo root; about 5 minutes with the defaults on a 2-core machine):

    python benchmarks/compare_optimizers.py
    python benchmarks/compare_optimizers.py --iterations 10 --seconds 20     # quick check
"""

import argparse
import sys

import benchmark_problem as problem
from benchmark_problem import cli, runtime

OPTIMIZERS = (('adam', 'Adam (lr 2.0)'), ('lbfgs', 'L-BFGS-B'))


def run_optimizer(sess, nst, x0, optimizer, iterations, seconds):
    """Run nst.optimize.optimise until both budgets are spent; returns its records,
    [(seconds, image after that iteration), ...], and whether the cost diverged."""
    recorder, result = problem.run_recorded(sess, nst, x0, iterations, seconds,
                                            optimizer=optimizer, keep_images=True)
    return recorder.records, result.diverged


def summarise(sess, nst, records, iterations, seconds):
    """Costs of the iterate after `iterations` iterations and of the last one within `seconds`."""
    summary = {'iterations_run': len(records),
               'seconds_after_each_iteration': [elapsed for elapsed, _ in records]}
    if len(records) >= iterations:
        elapsed, image = records[iterations - 1]
        summary['at_iterations'] = {'iteration': iterations, 'seconds': elapsed,
                                    'costs': problem.evaluate_costs(sess, nst, image)}
    within = [k for k, (elapsed, _) in enumerate(records) if elapsed <= seconds]
    if within:
        elapsed, image = records[within[-1]]
        summary['at_seconds'] = {'iteration': within[-1] + 1, 'seconds': elapsed,
                                 'costs': problem.evaluate_costs(sess, nst, image)}
    return summary


def print_results(args, initial_cost, summaries):
    print()
    print('Style transfer at %dx%d, full-width VGG-19 with random weights; both from the same '
          'initial image, J = %.6g' % (args.width, args.height, initial_cost))
    header = ('optimizer', 'J after %d it' % args.iterations, 'time for %d it' % args.iterations,
              'J after %g s' % args.seconds, 'iterations in %g s' % args.seconds)
    rows = [header]
    for name, label in OPTIMIZERS:
        summary = summaries[name]
        by_count = summary.get('at_iterations')
        by_time = summary.get('at_seconds')
        rows.append((
            label,
            '%.6g' % by_count['costs'][0] if by_count else
            'n/a (stopped after %d)' % summary['iterations_run'],
            '%.1f s' % by_count['seconds'] if by_count else '',
            '%.6g' % by_time['costs'][0] if by_time else 'n/a (no iteration)',
            '%d (%.1f s)' % (by_time['iteration'], by_time['seconds']) if by_time else '0'))
    problem.print_table(rows)
    for column, key in (('iterations', 'at_iterations'), ('wall time', 'at_seconds')):
        adam, lbfgs = summaries['adam'].get(key), summaries['lbfgs'].get(key)
        if adam and lbfgs:
            print('  same %s: L-BFGS-B cost / Adam cost = %.3f'
                  % (column, lbfgs['costs'][0] / adam['costs'][0]))


def build_parser():
    parser = argparse.ArgumentParser(
        description='Cost reached by Adam and by L-BFGS-B on the benchmark problem, after the '
                    'same number of iterations and after the same wall time.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--iterations', type=cli.positive_int, default=50,
                        help='compare the costs after this many iterations')
    parser.add_argument('--seconds', type=cli.positive_float, default=60.0,
                        help='compare the costs after this much optimisation time')
    parser.add_argument('--width', type=cli.positive_int, default=problem.WIDTH,
                        help='image width; the height follows the content image')
    parser.add_argument('--cache', default=problem.DEFAULT_CACHE, metavar='DIR',
                        help='folder of the generated weight file')
    parser.add_argument('--seed', type=cli.non_negative_int, default=problem.SEED,
                        help='seed of the initial noise')
    parser.add_argument('--json', metavar='PATH', help='also write the numbers to this file')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    weights = problem.read_weights(problem.weights_file(args.cache, with_fc=False))
    content_image, style_image = problem.load_images(args.width)
    args.height = content_image.shape[1]
    x0 = problem.initial_image(content_image, args.seed)

    tf = runtime.import_tf()
    summaries = {}
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        nst = problem.build(sess, weights, content_image, style_image)
        del weights
        initial_cost = problem.evaluate_costs(sess, nst, x0)[0]
        # One untimed iteration of each first: TensorFlow prepares a step's kernels on its
        # first run, which should count against neither optimiser.
        for name, _ in OPTIMIZERS:
            run_optimizer(sess, nst, x0, name, 1, 0.0)
        for name, label in OPTIMIZERS:
            print('Running %s for at least %d iterations and %g s ...'
                  % (label, args.iterations, args.seconds), file=sys.stderr, flush=True)
            records, diverged = run_optimizer(sess, nst, x0, name, args.iterations,
                                              args.seconds)
            if diverged:
                print('warning: %s diverged after %d iterations' % (label, len(records)),
                      file=sys.stderr)
            summaries[name] = summarise(sess, nst, records, args.iterations, args.seconds)
    print_results(args, initial_cost, summaries)
    if args.json:
        data = {'options': vars(args), 'initial_cost': initial_cost, 'runs': summaries}
        problem.write_json(args.json, data)
    return 0


if __name__ == '__main__':
    sys.exit(main())
