"""Where an iteration's time goes: Adam steps traced by TensorFlow, their ops' times by kind.

    python benchmarks/step_profile.py [--width 400] [--steps 3] [--no-tune]

The course's problem as benchmark.py builds it (full-width random VGG-19, 400x300, the fast
paths tuned for this machine). The session runs one op at a time (nst.runtime.session_config),
so the ops' times add up to the step's. benchmark.py prints the same table for its float32 run.
"""

import argparse
import collections
import re
import sys

import benchmark_problem as problem
from nst import runtime

KINDS = ('convolutions, forward', 'convolutions, input gradient', 'Gram matrices (forward)',
         'Gram matrices (gradient)', 'everything else (ReLU, bias, pools, costs, Adam)')
CONVOLUTIONS = re.compile(r'Conv2D')  # Conv2D, _FusedConv2D, Conv2DBackpropInput, oneDNN's
# Ops of a conv layer that are not its convolution: the bias, the ReLU and their gradients.
NOT_CONVOLUTION = re.compile(r'Add|Relu|Cast|Identity|Sum')


def kind_of(node_name, op_type):
    """Which of KINDS an op of the training step belongs to, by its type and name.

    A forward convolution of the transposed path is a Conv2DBackpropInput outside the
    gradients; conv1_1's matmul input gradient is a MatMul inside a conv layer's gradient; a
    Winograd convolution (nst.winograd) is the gathers, transforms and matmuls in its layer.
    """
    in_gradient = node_name.startswith('gradients')
    in_conv_layer = re.search(r'(^|/)conv\d_\d', node_name) is not None
    if CONVOLUTIONS.search(op_type) or (in_conv_layer
                                        and not NOT_CONVOLUTION.search(op_type)):
        return KINDS[1] if in_gradient else KINDS[0]
    if 'MatMul' in op_type:
        return KINDS[3] if in_gradient else KINDS[2]
    return KINDS[4]


def profile_step(sess, nst, steps=3):
    """{kind: seconds per step}, summed over the ops of `steps` traced training steps."""
    tf = runtime.import_tf()
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    seconds = collections.Counter()
    for _ in range(steps):
        metadata = tf.RunMetadata()
        sess.run(nst.train_step, nst.feeds, options=options, run_metadata=metadata)
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                match = re.search(r'= (\w+)\(', node.timeline_label)
                op_type = match.group(1) if match else node.node_name
                seconds[kind_of(node.node_name, op_type)] += node.op_end_rel_micros / 1e6
    return {kind: seconds[kind] / steps for kind in KINDS}


def print_profile(profile, convolution_gflop):
    """The table: each kind's milliseconds and share; the convolutions' GFLOP/s
    (convolution_gflop: (forward, input gradient) minimal work per step of direct
    convolutions: a Winograd convolution does less, so its rate is that of the direct work it
    replaces)."""
    total = sum(profile.values())
    rows = [('kind of work', 'ms per step', 'share', 'GFLOP/s (direct work)')]
    for kind, seconds in profile.items():
        rate = ''
        if kind in KINDS[:2] and seconds > 0:
            rate = '%.0f' % (convolution_gflop[KINDS.index(kind)] / seconds)
        rows.append((kind, '%.1f' % (seconds * 1e3), '%.0f %%' % (100 * seconds / total), rate))
    rows.append(('all ops', '%.1f' % (total * 1e3), '100 %', ''))
    problem.print_table(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--width', type=int, default=problem.WIDTH)
    parser.add_argument('--steps', type=int, default=3, help='traced steps, after 3 untimed')
    parser.add_argument('--no-tune', action='store_true', help='the untuned default paths')
    parser.add_argument('--cache', default=problem.DEFAULT_CACHE)
    args = parser.parse_args(argv)
    with problem.warm_session(args.width, not args.no_tune, args.cache) as (sess, nst, weights):
        profile = profile_step(sess, nst, args.steps)
        one_way = sum(row[3] for row in problem.work_per_iteration(
            problem.conv_shapes(nst.model, weights))) / 1e9
        _, height, width, _ = nst.model['input'].get_shape().as_list()
    print('Where a step goes at %dx%d (%s, oneDNN %s), %d traced steps:'
          % (width, height, runtime.cpu_model(), 'on' if runtime.onednn_enabled() else 'off',
             args.steps))
    print_profile(profile, (one_way, one_way))


if __name__ == '__main__':
    sys.exit(main())
