"""Does Winograd's transposed kernel layout pay on this CPU? Layer by layer, at a run's size.

    python benchmarks/winograd_layout.py [--size 400x300] [--rounds 9]

A Winograd convolution (nst.winograd.conv2d_same) sums over the input channels with 36 batched
matmuls, (36, tiles, C_in) @ (36, C_in, C_out). Its forward pass can read the kernel transform
transposed, laid out (36, C_out, C_in), paying for a transpose of the 3x3 kernel at every run
(nst.winograd.kernel_transform; the input gradient's transform comes out in that layout by
itself), or as stored: nst.tuning measures both per layer shape (fast_ops' 'winograd' and
'winograd_stored'). On the AVX2 EPYC oneDNN ran the matmuls 20-25 % faster transposed at 512
output channels and under 1,000 tiles, as fast elsewhere; on the AVX-512 Zen 4 EPYC they were
faster as stored at every layer of a 400x300 run (21 ms a step). For each Winograd layer shape of a
run (conv2_1 to conv5_1; the tuning never offers Winograd at the input's full resolution) this
times, in one process, alternated over the rounds: the matmuls from the transform as stored
(C_in, C_out), from it transposed, and the kernel's transpose; and prints what the transposed
layout saves a forward pass, net of the transpose, per layer and per step.

On the AVX2 EPYC: at 400x300 it about evens out (-5.4 and +6.0 ms a step in two runs: the
conv4 layers save 0-4 ms each, conv5_1 loses 2, its matmuls small and its transpose not, the
conv2 and conv3 layers lose 0-2); on a 504x556 tile (1920x1080 under --max-memory 2G) it saves
76 ms a step, 24 ms in each of conv4_2-conv4_4; at 1920x1080, 79 ms (11 rounds; runs of fewer
rounds scatter widely at that size). Run it on another kind of CPU to see why the tuner picks
the layout it picks there.
"""

import argparse
import time

import numpy as np

import onednn_layers  # (puts the project on the path, through benchmark_problem)
from benchmark_problem import run_size  # noqa: E402  (--size WxH)
from nst import runtime, tuning, winograd  # noqa: E402


def layer_shapes(height, width):
    """[(names, (H, W, C_in, C_out)), ...]: the distinct shapes of the layers a Winograd path may
    take in a height x width run (conv2_1 to conv5_1: not the input's full resolution), in
    order, with the layers of each (the course's layers, onednn_layers.layer_shapes)."""
    shapes = {}
    for name, channels_in, channels_out, h, w in onednn_layers.layer_shapes(height, width):
        if not name.startswith('conv1_'):
            shapes.setdefault((h, w, channels_in, channels_out), []).append(name)
    return [(names, shape) for shape, names in shapes.items()]


def tile_count(height, width):
    """Winograd tiles of a height x width map: the matmuls' inner size."""
    return -(-height // winograd.TILE) * -(-width // winograd.TILE)


def time_shape(sess, tf, shape, rounds):
    """{'stored', 'transposed', 'transpose': median seconds} of one layer shape's forward
    matmuls both ways and of its kernel's transpose."""
    height, width, channels_in, channels_out = shape
    tiles = tile_count(height, width)
    rng = np.random.default_rng(0)

    def variable(*dims):
        return tf.Variable(rng.standard_normal(dims, dtype=np.float32))

    tiles_v = variable(36, tiles, channels_in)
    stored = variable(36, channels_in, channels_out)
    transposed = variable(36, channels_out, channels_in)
    kernel = variable(3, 3, channels_in, channels_out)
    ops = {'stored': tf.matmul(tiles_v, stored).op,
           'transposed': tf.matmul(tiles_v, transposed, adjoint_b=True).op,
           'transpose': tf.transpose(kernel, [0, 1, 3, 2]).op}
    sess.run([v.initializer for v in (tiles_v, stored, transposed, kernel)])
    times = {name: [] for name in ops}
    for name in ops:  # warm-up: oneDNN makes its kernels on a first run
        sess.run(ops[name])
    for round_ in range(rounds):
        for name in (list(ops) if round_ % 2 == 0 else list(ops)[::-1]):
            start = time.perf_counter()
            sess.run(ops[name])
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=run_size, default=(400, 300), help='the run size, WxH')
    parser.add_argument('--rounds', type=int, default=9)
    args = parser.parse_args()
    width, height = args.size
    tf = runtime.import_tf()
    cpu_flags = runtime.cpu_flags()
    flags = [flag for flag in tuning.KEY_FLAGS if flag in cpu_flags]
    print('Machine: %s [%s]; TensorFlow %s, oneDNN %s' % (
        runtime.cpu_model(), ' '.join(flags), tf.__version__,
        'on' if runtime.onednn_enabled() else 'off'))
    print('Forward matmuls of each Winograd layer shape at %dx%d, medians of %d alternated runs '
          '(ms)\n' % (width, height, args.rounds))
    header = ('layers', 'map', 'C_in->C_out', 'tiles', 'stored', 'transposed', 'transpose',
              'saved')
    print('%-16s %-8s %-12s %6s %8s %11s %10s %7s' % header)
    saved_per_step = 0.0
    with tf.Graph().as_default(), tf.Session(config=runtime.session_config()) as sess:
        for names, shape in layer_shapes(height, width):
            times = {k: v * 1e3 for k, v in time_shape(sess, tf, shape, args.rounds).items()}
            saved = times['stored'] - times['transposed'] - times['transpose']
            saved_per_step += saved * len(names)
            label = names[0] if len(names) == 1 else '%s-%s' % (names[0], names[-1])
            print('%-16s %-8s %-12s %6d %8.1f %11.1f %10.1f %+7.1f' % (
                label, '%dx%d' % shape[:2], '%d->%d' % shape[2:], tile_count(*shape[:2]),
                times['stored'], times['transposed'], times['transpose'], saved))
    print('\nThe transposed layout saves %.1f ms a step (forward passes, net of the kernels\' '
          'transposes; negative: it costs that much)' % saved_per_step)


if __name__ == '__main__':
    main()
