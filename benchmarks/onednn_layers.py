"""Which oneDNN kernels our loop and the PyTorch loop run, and how fast, layer by layer.

    python benchmarks/onednn_layers.py [--iterations 8] [--width 400]

Both loops (ours as benchmark.py builds it but on the untuned paths, NST_TUNE=0, so that
every layer runs a oneDNN convolution; PyTorch's pytorch_baseline.py) run in child processes
with ONEDNN_VERBOSE=1, which makes oneDNN print
every primitive it executes with its implementation and milliseconds. For each VGG layer the
table gives the median milliseconds per call of its convolution forward and of its input
gradient (backward-data), and the implementation oneDNN chose. Our forward pass runs as a
backward-data convolution on the transposed path (nst.fast_ops.conv2d_same), so on a layer with
as many input as output channels its forward and gradient calls have the same shape and are
counted together. Below the table: the convolutions' milliseconds per step (the per-call
medians times the calls of one step), and the reorders (layout conversions) and oneDNN's
matmuls per loop iteration (their total over the whole child run, the content and style passes
included, over its iterations). PyTorch's matmuls (the Gram matrices) do not go through oneDNN
and are not counted.

Needs torch (see pytorch_baseline.py). Takes about a minute per round.
"""

import argparse
import collections
import os
import re
import subprocess
import sys

import numpy as np

import benchmark_problem as problem
from nst import runtime, synthetic, tuning, weights

SHAPE = re.compile(r'mb1_ic(\d+)oc(\d+)_ih(\d+)oh\d+.*_iw(\d+)ow')


def parse_verbose(text):
    """oneDNN's verbose output -> ({(kind, C_in, C_out, H, W): [(implementation, ms), ...]},
    {primitive: total ms}) for the convolutions (kind 'forward' or 'backward_data', shape
    of the oneDNN descriptor) and every other primitive executed."""
    convolutions = collections.defaultdict(list)
    others = collections.Counter()
    for line in text.splitlines():
        fields = line.split(',')
        if not line.startswith('onednn_verbose') or 'exec' not in fields[:4]:
            continue
        primitive, implementation, kind = fields[5], fields[6], fields[7]
        milliseconds = float(fields[-1])
        match = SHAPE.search(fields[-2]) if primitive == 'convolution' else None
        if match is None:
            others[primitive] += milliseconds
            continue
        kind = 'forward' if kind.startswith('forward') else kind
        convolutions[(kind, *map(int, match.groups()))].append((implementation, milliseconds))
    return convolutions, others


def layer_shapes(height, width):
    """[(layer, C_in, C_out, H, W), ...] of conv1_1 ... conv5_1 at this image size."""
    # The course's layers (as benchmark_problem.read_weights reads them), each kernel a
    # kernel-shaped view of one zero: nst.tuning.conv_shapes reads only the shapes.
    kernels = {name: (np.broadcast_to(np.float32(0), shape),) for name, shape in
               synthetic.kernel_shapes(synthetic.REAL_WIDTHS, with_fc=False).items()
               if name in weights.layers_needed(['conv5_1'])}
    shapes = tuning.conv_shapes(kernels, height, width)
    return [(name, c_in, c_out, h, w) for name, (h, w, c_in, c_out) in shapes.items()]


def per_call(convolutions, key):
    """(median ms per call, implementation) of one convolution shape, or None."""
    calls = convolutions.get(key)
    if not calls:
        return None
    return float(np.median([ms for _, ms in calls])), calls[-1][0]


def layer_table(ours, torch, height, width):
    """Rows of the per-layer table and the milliseconds per step of each side's convs."""
    rows, per_step = [], {'ours': 0.0, 'torch': 0.0}
    for name, c_in, c_out, h, w in layer_shapes(height, width):
        # Forward: ours is either a forward convolution (direct path) or the backward-data
        # convolution of the rotated kernel (transposed path: C_out from C_in).
        found = {
            'ours forward': (per_call(ours, ('forward', c_in, c_out, h, w))
                             or per_call(ours, ('backward_data', c_out, c_in, h, w))),
            'ours gradient': per_call(ours, ('backward_data', c_in, c_out, h, w)),
            'torch forward': per_call(torch, ('forward', c_in, c_out, h, w)),
            'torch gradient': per_call(torch, ('backward_data', c_in, c_out, h, w))}
        for side in per_step:
            per_step[side] += sum(found[key][0] for key in found
                                  if key.startswith(side) and found[key])
        cells = ['%.1f' % found[key][0] if found[key] else '-' for key in found]
        kernels = sorted({found[key][1] for key in found if found[key]})
        rows.append((name, '%dx%d %d->%d' % (h, w, c_in, c_out), *cells, ' '.join(kernels)))
    return rows, per_step


def run_child(command):
    """stdout of command run with ONEDNN_VERBOSE=1 (TensorFlow's own log quiet), untuned."""
    env = dict(os.environ, ONEDNN_VERBOSE='1', TF_CPP_MIN_LOG_LEVEL='3', NST_TUNE='0')
    process = subprocess.run(command, env=env, capture_output=True, text=True)
    if process.returncode != 0:
        sys.stderr.write(process.stderr[-3000:])
        raise SystemExit('%s failed (exit code %d)' % (command[1], process.returncode))
    return process.stdout


def our_loop(width, steps):
    """This script's --worker: our loop as benchmark.py builds it, `steps` Adam steps (on the
    paths NST_TUNE says: run_child turns the tuning off)."""
    with problem.warm_session(width, steps=steps):
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iterations', type=int, default=8, help='steps of each loop')
    parser.add_argument('--width', type=int, default=problem.WIDTH)
    parser.add_argument('--rounds', type=int, default=2, help='children of each loop')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return our_loop(args.width, args.iterations)
    here = os.path.dirname(os.path.abspath(__file__))
    commands = {
        'ours': [sys.executable, os.path.abspath(__file__), '--worker',
                 '--iterations', str(args.iterations), '--width', str(args.width)],
        'torch': [sys.executable, os.path.join(here, 'pytorch_baseline.py'),
                  '--iterations', str(args.iterations - 1), '--warmup', '1',
                  '--width', str(args.width)]}
    # Rounds of one child of each, which goes first alternating (ours, torch, torch, ours,
    # ...): the speed of a shared machine drifts by 10-20 % between minutes, and must weigh on
    # both sides alike. Each side's calls are pooled over its rounds.
    texts = collections.defaultdict(str)
    for index in range(args.rounds):
        for side in (('torch', 'ours') if index % 2 else ('ours', 'torch')):
            print('Round %d of %d: %s loop with ONEDNN_VERBOSE=1 (%d steps) ...'
                  % (index + 1, args.rounds, side, args.iterations), file=sys.stderr, flush=True)
            texts[side] += run_child(commands[side])
    ours, ours_other = parse_verbose(texts['ours'])
    torch, torch_other = parse_verbose(texts['torch'])
    height = problem.image_height(args.width)
    rows, per_step = layer_table(ours, torch, height, args.width)
    print('oneDNN convolutions at %dx%d on %s (%s), median ms per call:'
          % (args.width, height, runtime.cpu_model(), ' '.join(
              sorted(runtime.cpu_flags() & set(tuning.KEY_FLAGS)))))
    problem.print_table([('layer', 'map, channels', 'ours fwd', 'ours grad', 'torch fwd',
                          'torch grad', 'kernels (ours and torch)')] + rows)
    print('convolutions per step: ours %.0f ms, PyTorch %.0f ms (ours / PyTorch %.2f)'
          % (per_step['ours'], per_step['torch'], per_step['ours'] / per_step['torch']))
    steps = args.iterations * args.rounds
    for side, other in (('ours', ours_other), ('PyTorch', torch_other)):
        print('%s, per iteration (passes included): reorders %.1f ms, oneDNN matmuls %.1f ms'
              % (side, other['reorder'] / steps, other['gemm_api'] / steps))
    return 0


if __name__ == '__main__':
    sys.exit(main())
