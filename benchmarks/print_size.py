"""Print size under a memory budget, and resuming (issue 12): each target measured and printed.

Every run is the command line itself (`art_generation.py` in a child process, as a user runs
it; peak memory as `/usr/bin/time -v` reports it) on the repo's content
image centre-cropped to 16:9 and its style image, with a full-width VGG-19 of random weights
(benchmark_problem.py: the real file's shapes, so the same cost). Each run is one stage at full
size (--start-width = --width), from the same noise (--seed 1).

1. 1920x1080, untiled against tiled under --max-memory 2G, each run in a fresh process for N
   iterations (art_generation.run_stage, as the command line runs a stage): the time of a
   full-size iteration (the median after the first; the loop alone, set-up excluded) and the
   process's peak memory; the full-size cost J of both results
   (their float images, after the same iterations, evaluated in one untiled graph);
   and the seam statistic (nst.tiles.border_contrast) of the tiled result over its tile edges.
2. 3840x2160 under --max-memory 6G: one full-size iteration, peak memory.
3. 7680x4320 with the default budget (the memory available): one full-size iteration, peak memory.
4. Resume: 400x300, 12 iterations saving every 4; SIGKILL once 8.png exists, then --resume;
   the final image against an uninterrupted run's.

    python benchmarks/print_size.py              # all, about 40 minutes on 2 cores
    python benchmarks/print_size.py --only 1 4   # some of them
"""

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

import benchmark_problem as problem
from benchmark_problem import art_generation, cli, config, runtime, vgg
from nst import checkpoint, memory, stages, tiles, tuning
from nst.images import fit_image, read_image, resize_image, save_pixels

GB = 1e9


GNU_TIME = '/usr/bin/time'


def run_cli(arguments, kill_when=None):
    """Run art_generation.py with arguments; return (seconds, peak RSS bytes). kill_when: a
    path whose appearance SIGKILLs the run (then the exit status is not checked).

    The peak is GNU time's (as `/usr/bin/time -v` reports it), where it is installed: a child's
    own ru_maxrss also counts the memory of this process at the moment it forked.
    """
    command = [sys.executable, os.path.join(problem.PROJECT_DIR, 'art_generation.py')]
    command += [str(a) for a in arguments]
    with tempfile.NamedTemporaryFile('r') as report:
        measured = os.path.exists(GNU_TIME) and kill_when is None
        if measured:
            command = [GNU_TIME, '-f', '%M', '-o', report.name] + command
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=problem.PROJECT_DIR, stdout=subprocess.DEVNULL)
        if kill_when is not None:
            while not os.path.exists(kill_when) and child.poll() is None:
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        if kill_when is None and os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit('art_generation.py %s failed' % ' '.join(arguments))
        peak_kb = int(report.read().split()[-1]) if measured else usage.ru_maxrss
    return seconds, peak_kb * 1024


def final_image(folder):
    return checkpoint.load_checkpoint(folder).image


def content_16x9(work, width):
    """The repo's content photo centre-cropped to 16:9 at width, saved in work."""
    height = round(width * 9 / 16)
    photo = read_image(config.CONTENT_IMAGE)
    rows = round(photo.shape[1] * 9 / 16)
    top = (photo.shape[0] - rows) // 2
    path = os.path.join(work, 'content-%d.png' % width)
    save_pixels(path, resize_image(photo[top:top + rows], width, height))
    return path


def common(weights_path, content_path, width, folder, *extra):
    return ['--content', content_path, '--style', config.STYLE_IMAGE, '--model', weights_path,
            '--width', str(width), '--start-width', str(width), '--seed', '1', '--no-progress',
            '--print-every', '0', '--output-dir', folder] + [str(e) for e in extra]


def the_tiling(arguments):
    """The tiles the command line plans for its (single) stage."""
    options = cli.build_parser(art_generation.CONTENT_LAYER,
                               art_generation.STYLE_LAYERS).parse_args(arguments)
    content = read_image(options.content)
    plan = stages.plan(content.shape, options.width, options.iterations, options.start_width)
    weights = problem.read_weights(options.model)
    return cli.plan_tiles(options, plan, weights, cli.memory_budget(options))[-1]


def full_size_costs(weights_path, content_path, images):
    """J of each (1, H, W, 3) image with its full-size targets, in one untiled graph."""
    tf = runtime.import_tf()
    content = read_image(content_path)
    height, width = content.shape[:2]
    style = fit_image(read_image(config.STYLE_IMAGE), width, height)
    vgg_weights = problem.read_weights(weights_path)
    # The fast paths the runs had (cached): untuned, some of oneDNN's AVX2 kernels take
    # minutes for one forward pass at this size.
    paths = tuning.choose_paths(vgg_weights, height, width)
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        model = vgg.build_vgg_graph(vgg_weights, height, width, sess=sess, paths=paths)
        nst = art_generation.build_style_transfer(sess, model, content[None] - config.MEANS,
                                                  [style[None] - config.MEANS])
        return [problem.evaluate_costs(sess, nst, image)[0] for image in images]


def timed_in_process(arguments, iterations):
    """Run the command line's single stage in a fresh process (this script with --worker) for
    `iterations` iterations, timing each (benchmark_problem.IterationRecorder: the loop alone).
    Returns (the median time of an iteration after the first, the final image, the stage's
    tiling, the process's peak memory)."""
    with tempfile.TemporaryDirectory() as folder:
        image_path = os.path.join(folder, 'image.npy')
        spec = json.dumps({'arguments': [str(a) for a in arguments], 'iterations': iterations,
                           'image': image_path})
        output = subprocess.run([sys.executable, os.path.abspath(__file__), '--worker', spec],
                                check=True, stdout=subprocess.PIPE, text=True).stdout
        result = json.loads(output.splitlines()[-1])
        image = np.load(image_path)
    return (result['seconds'], image, tiles.Tiling(*result['tiling']),
            result['peak_rss_bytes'])


def worker(spec):
    """timed_in_process's child: prints one JSON line."""
    spec = json.loads(spec)
    options, _ = cli.parse_options(art_generation.CONTENT_LAYER, art_generation.STYLE_LAYERS,
                                   spec['arguments'])
    iterations = spec['iterations']
    inputs = cli.prepare_inputs(options)
    record = cli.RunRecord(inputs, options)
    recorder = problem.IterationRecorder(iterations)
    with cli.progress_bar(options, inputs.stages, record) as progress:
        image = art_generation.run_stage(options, inputs, inputs.stages[-1], record, progress,
                                         recorder)
    result = record.last  # the stage's RunResult (run_stage returns the image)
    recorder.finish(result)
    times = [0.0] + [seconds for seconds, _ in recorder.records]
    np.save(spec['image'], image)
    print(json.dumps({'seconds': float(np.median(np.diff(times)[1:])),
                      'tiling': list(inputs.tilings[-1]),
                      'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      * 1024}))


def tiled_against_untiled(weights_path, work, iterations):
    print('\n1. 1920x1080: untiled against tiled under --max-memory 2G (%d iterations from '
          'the same start)' % iterations, flush=True)
    content = content_16x9(work, 1920)
    runs = {}
    for name, extra in (('untiled', []), ('tiled 2G', ['--max-memory', '2G'])):
        folder = os.path.join(work, name.split()[0])
        arguments = common(weights_path, content, 1920, folder, '--iterations', iterations,
                           '--save-every', 0, *extra)
        seconds, image, tiling, rss = timed_in_process(arguments, iterations)
        runs[name] = seconds, image, tiling, rss
        print('  %s: %.2f s an iteration (median of %d), peak memory %.2f GB'
              % (name, seconds, iterations - 1, rss / GB), flush=True)
    untiled_s, untiled_image, _, untiled_rss = runs['untiled']
    tiled_s, tiled_image, tiling, tiled_rss = runs['tiled 2G']
    J_untiled, J_tiled = full_size_costs(weights_path, content, [untiled_image, tiled_image])
    seams = tiles.border_contrast(tiled_image, tiling)
    print('  tiles: %d of %dx%d' % (tiling.count, tiling.tile_width, tiling.tile_height))
    print('  time of a full-size iteration: untiled %.2f s, tiled %.2f s: ratio %.3f '
          '(target <= 1.15)' % (untiled_s, tiled_s, tiled_s / untiled_s))
    print('  peak memory: untiled %.2f GB, tiled %.2f GB (budget 2 GiB = %.2f GB)'
          % (untiled_rss / GB, tiled_rss / GB, 2 * 2 ** 30 / GB))
    print('  full-size J after %d iterations: untiled %.4g, tiled %.4g: %+.2f %% (target '
          'within 5 %%)' % (iterations, J_untiled, J_tiled, 100 * (J_tiled / J_untiled - 1)))
    print('  seams: border contrast %.3f (target <= 1.1)' % seams, flush=True)


def one_iteration(weights_path, work, width, budget):
    label = '--max-memory %s' % budget if budget else 'the default budget'
    print('\n%dx%d with %s: one full-size iteration' % (width, round(width * 9 / 16), label),
          flush=True)
    content = content_16x9(work, width)
    folder = os.path.join(work, 'one-%d' % width)
    extra = ['--max-memory', budget] if budget else []
    arguments = common(weights_path, content, width, folder, '--iterations', 1,
                       '--save-every', 1, *extra)
    tiling = the_tiling(arguments)
    available = memory.available_memory()
    seconds, rss = run_cli(arguments)
    limit = tiles.parse_memory_size(budget) if budget else available
    print('  %d tiles of %dx%d; %.0f s in all; peak memory %.2f GB against %s %.2f GB'
          % (tiling.count, tiling.tile_width, tiling.tile_height, seconds, rss / GB,
             'the budget' if budget else 'the memory available', limit / GB), flush=True)


def resume_check(weights_path, work):
    print('\n4. Resume: 400x300, 12 iterations, SIGKILL once 8.png is written', flush=True)
    whole = os.path.join(work, 'resume-whole')
    killed = os.path.join(work, 'resume-killed')
    base = ['--content', config.CONTENT_IMAGE, '--style', config.STYLE_IMAGE, '--model',
            weights_path, '--seed', '1', '--no-progress', '--print-every', '0', '--iterations',
            '12', '--save-every', '4']
    run_cli(base + ['--output-dir', whole])
    run_cli(base + ['--output-dir', killed], kill_when=os.path.join(killed, '8.png'))
    at = checkpoint.load_checkpoint(killed)
    run_cli(['--resume', killed, '--no-progress'])
    difference = np.abs(final_image(killed) - final_image(whole)).max() / 255
    print('  killed after the checkpoint of iteration %d; resumed to %d; largest difference '
          'from the uninterrupted run: %.2g of the pixel range (target <= 1e-3)'
          % (at.completed, checkpoint.load_checkpoint(killed).completed, difference),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', type=int, nargs='+', choices=(1, 2, 3, 4),
                        default=(1, 2, 3, 4))
    parser.add_argument('--iterations', type=int, default=6,
                        help='iterations of each 1920x1080 run (the first is not timed)')
    parser.add_argument('--cache', default=problem.DEFAULT_CACHE, metavar='DIR')
    parser.add_argument('--worker', metavar='JSON', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    weights_path = problem.weights_file(args.cache, with_fc=False)
    flags = [flag for flag in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16')
             if flag in runtime.cpu_flags()]
    print('Machine: %s; %d CPUs; %s' % (runtime.cpu_model(), os.cpu_count(), ' '.join(flags)),
          flush=True)
    with tempfile.TemporaryDirectory() as work:
        os.environ['NST_CACHE_DIR'] = os.path.join(work, 'tuning-cache')
        if 1 in args.only:
            tiled_against_untiled(weights_path, work, args.iterations)
        if 2 in args.only:
            print('\n2.', end='')
            one_iteration(weights_path, work, 3840, '6G')
        if 3 in args.only:
            print('\n3.', end='')
            one_iteration(weights_path, work, 7680, None)
        if 4 in args.only:
            resume_check(weights_path, work)


if __name__ == '__main__':
    main()
