"""Coarse-to-fine against single-scale at print size, given the same wall-clock time (issue 11).

Both runs are the command line itself (`art_generation.py` in a child process, as a user runs
it) on the repo's content image centre-cropped to 16:9 and its style image, with a full-width
VGG-19 of random weights (benchmark_problem.py; same shapes as the real file, so the same cost):

1. single-scale: --width W --start-width W --iterations 30, timed (T) and its peak memory read;
   (Before both, one run of each kind fills the tuning cache, so neither pays for measuring
   the fast paths.)
2. coarse-to-fine: --width W with the default stages (from 400 px, sqrt(2) apart) and the
   default schedule of --iterations N, the largest N whose predicted time fits in T (each
   stage's iteration costs the full-size iteration's time in proportion to its pixels, plus
   the single run's set-up time per stage); timed too.

Then both final images (8-bit PNGs the runs wrote: 29.png and stage_W.png) are evaluated with
the full-size cost J (content and style at W, the same targets) in one graph, and the ratio
J(coarse-to-fine) / J(single-scale) is printed beside the issue's target (<= 0.5).

    python benchmarks/coarse_to_fine.py                 # 1920x1080, about 30 minutes on 2 cores
    python benchmarks/coarse_to_fine.py --width 800 --average 0.9
                                        # a quick look, and whether averaging helps
    python benchmarks/coarse_to_fine.py --only-staged --width 3840 --iterations 40
                                        # time and peak memory of one coarse-to-fine run
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import benchmark_problem as problem
from benchmark_problem import art_generation, cli, config, runtime, vgg
from nst import stages, tuning
from nst.images import fit_image, read_image, resize_image, save_pixels

TARGET_RATIO = 0.5


def run_cli(arguments):
    """Run art_generation.py with arguments; return (seconds, peak RSS bytes)."""
    command = [sys.executable, os.path.join(problem.PROJECT_DIR, 'art_generation.py')]
    start = time.perf_counter()
    child = subprocess.Popen(command + arguments, cwd=problem.PROJECT_DIR,
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit('art_generation.py %s failed' % ' '.join(arguments))
    return seconds, usage.ru_maxrss * 1024


def predicted_seconds(plan, full_iteration_s, full_pixels, setup_s):
    return sum(stage.iterations * full_iteration_s * stage.width * stage.height / full_pixels
               + setup_s for stage in plan)


def full_size_costs(weights_path, content, style, images):
    """J, J_content, J_style of each image (1, H, W, 3) with the run's full-size targets."""
    tf = runtime.import_tf()
    height, width = content.shape[:2]
    vgg_weights = problem.read_weights(weights_path)
    # The fast paths as the runs had them: untuned, some of oneDNN's AVX2 kernels take minutes
    # for one forward pass at this size.
    paths = tuning.choose_paths(vgg_weights, height, width)
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        model = vgg.build_vgg_graph(vgg_weights, height, width, sess=sess, paths=paths)
        nst = art_generation.build_style_transfer(
            sess, model, content[np.newaxis] - config.MEANS,
            [fit_image(style, width, height)[np.newaxis] - config.MEANS])
        return [problem.evaluate_costs(sess, nst, image) for image in images]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--width', type=cli.positive_int, default=1920)
    parser.add_argument('--single-iterations', type=cli.positive_int, default=30)
    parser.add_argument('--iterations', type=cli.positive_int,
                        help='coarse-to-fine --iterations (default: fitted to the single run)')
    parser.add_argument('--average', type=float, default=0.0, metavar='D',
                        help='also run coarse-to-fine with --average D and evaluate it')
    parser.add_argument('--only-staged', action='store_true',
                        help='run only the coarse-to-fine run and report its time and memory')
    parser.add_argument('--cache', default=problem.DEFAULT_CACHE, metavar='DIR')
    args = parser.parse_args()

    height = round(args.width * 9 / 16)
    try:
        single = len(stages.plan((height, args.width), args.width, 2)) < 2
    except ValueError as error:  # more stages than a run may have
        parser.error('--width %d: %s' % (args.width, error))
    if single:
        parser.error('--width %d: a single stage at this size; coarse-to-fine needs a larger '
                     'width' % args.width)
    weights_path = problem.weights_file(args.cache, with_fc=False)
    photo = read_image(config.CONTENT_IMAGE)
    crop = photo[:round(photo.shape[1] * 9 / 16)] if photo.shape[0] * 16 > photo.shape[1] * 9 \
        else photo
    style = read_image(config.STYLE_IMAGE)
    print('Machine: %s; %d CPUs; oneDNN on by default; %dx%d' % (
        runtime.cpu_model(), os.cpu_count(), args.width, height), flush=True)

    with tempfile.TemporaryDirectory() as work:
        content_path = os.path.join(work, 'content-16x9.png')
        save_pixels(content_path, resize_image(crop, args.width, height))
        common = ['--content', content_path, '--style', config.STYLE_IMAGE, '--model',
                  weights_path, '--width', str(args.width), '--seed', '1', '--no-progress',
                  '--print-every', '0']
        rows = [('run', 'iterations', 'seconds', 'peak memory')]
        images = []
        # The fast paths are measured once per machine and size (nst/tuning.py): a first run of
        # each kind fills the cache, so neither timed run below pays for the measurement.
        # (--only-staged measures one run as a user's first would be: tuning included.)
        if not args.only_staged:
            os.environ['NST_CACHE_DIR'] = os.path.join(work, 'tuning-cache')
            print('filling the tuning cache (1 iteration per stage) ...', flush=True)
            warm = stages.plan((height, args.width), args.width, 1)
            run_cli(common + ['--start-width', str(args.width), '--iterations', '1',
                              '--save-every', '0', '--output-dir', os.path.join(work, 'setup')])
            run_cli(common + ['--stage-iterations', ','.join('1' * len(warm)), '--save-every',
                              '0', '--output-dir', os.path.join(work, 'warm')])
            single_dir = os.path.join(work, 'single')
            n = args.single_iterations
            print('single-scale, %d iterations ...' % n, flush=True)
            single_s, single_rss = run_cli(common + [
                '--start-width', str(args.width), '--iterations', str(n),
                '--save-every', str(n - 1), '--output-dir', single_dir])
            rows.append(('single-scale %dx%d' % (args.width, height), str(n),
                         '%.0f' % single_s, '%.2f GB' % (single_rss / 1e9)))
            images.append(os.path.join(single_dir, '%d.png' % (n - 1)))
            # The set-up (start-up, graph, first-iteration overheads): a run of 1 iteration.
            setup_s, _ = run_cli(common + ['--start-width', str(args.width), '--iterations', '1',
                                           '--save-every', '0', '--output-dir',
                                           os.path.join(work, 'setup')])
            full_iteration_s = (single_s - setup_s) / (n - 1)
            print('  %.0f s, of which %.0f s set-up; %.1f s per full-size iteration'
                  % (single_s, setup_s, full_iteration_s), flush=True)
        iterations = args.iterations
        if iterations is None:
            if args.only_staged:
                iterations = 200
            else:
                iterations = 1
                # The small stages' set-up is smaller than the full size's: half of it is a
                # conservative guess for the graph and tuning per stage.
                while predicted_seconds(stages.plan((height, args.width), args.width,
                                                    iterations + 1), full_iteration_s,
                                        args.width * height, setup_s / 2) <= single_s:
                    iterations += 1
        plan = stages.plan((height, args.width), args.width, iterations)
        print('coarse-to-fine, --iterations %d: %s ...' % (iterations, ', '.join(
            '%dx%d x%d' % (s.width, s.height, s.iterations) for s in plan)), flush=True)
        staged_dir = os.path.join(work, 'staged')
        staged_s, staged_rss = run_cli(common + ['--iterations', str(iterations), '--save-every',
                                                 '0', '--output-dir', staged_dir])
        rows.append(('coarse-to-fine to %dx%d' % (args.width, height),
                     '+'.join(str(s.iterations) for s in plan), '%.0f' % staged_s,
                     '%.2f GB' % (staged_rss / 1e9)))
        images.append(os.path.join(staged_dir, 'stage_%d.png' % args.width))
        if args.average:
            averaged_dir = os.path.join(work, 'averaged')
            averaged_s, averaged_rss = run_cli(common + [
                '--iterations', str(iterations), '--save-every', '0', '--average',
                str(args.average), '--output-dir', averaged_dir])
            rows.append(('  the same with --average %g' % args.average,
                         '+'.join(str(s.iterations) for s in plan), '%.0f' % averaged_s,
                         '%.2f GB' % (averaged_rss / 1e9)))
            images.append(os.path.join(averaged_dir, 'stage_%d.png' % args.width))
        print()
        problem.print_table(rows)
        if args.only_staged:
            return
        content = resize_image(crop, args.width, height)
        pictures = [read_image(path)[np.newaxis] - config.MEANS for path in images]
        costs = [J for J, _, _ in full_size_costs(weights_path, content, style, pictures)]
        single_J, staged_J = costs[:2]
        ratio = staged_J / single_J
        print()
        print('full-size J: single-scale %.4g, coarse-to-fine %.4g: ratio %.3f (target <= %.1f'
              ': %s)' % (single_J, staged_J, ratio, TARGET_RATIO,
                         'met' if ratio <= TARGET_RATIO else 'MISSED'))
        if args.average:
            print('with --average %g: %.4g (%.3f of the same run without)'
                  % (args.average, costs[2], costs[2] / staged_J))


if __name__ == '__main__':
    main()
