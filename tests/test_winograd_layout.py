"""benchmarks/winograd_layout.py: the layer shapes it times are those of the run, as the tuning
computes them (nst.tuning.conv_shapes), the Winograd layers only, grouped by shape."""
import argparse
import os
import sys

import numpy as np
import pytest

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'benchmarks')
if BENCHMARKS_DIR not in sys.path:
    sys.path.insert(0, BENCHMARKS_DIR)

import winograd_layout  # noqa: E402
from nst import tuning  # noqa: E402
from nst.config import VGG19_CONV_LAYERS  # noqa: E402


def real_width_kernels(last='conv5_1'):
    """{layer: (kernel,)} of zeros with the real file's channel counts, up to last."""
    widths = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    kernels, channels_in = {}, 3
    for name in VGG19_CONV_LAYERS[:VGG19_CONV_LAYERS.index(last) + 1]:
        channels_out = widths[int(name[4])]
        kernels[name] = (np.zeros((3, 3, channels_in, channels_out), np.float32),)
        channels_in = channels_out
    return kernels


def test_layer_shapes_are_the_runs_below_full_resolution():
    for height, width in [(300, 400), (556, 504), (1080, 1920), (37, 53)]:
        shapes = tuning.conv_shapes(real_width_kernels(), height, width)
        expected = {name: shape for name, shape in shapes.items() if not name.startswith('conv1_')}
        got = {name: shape for names, shape in winograd_layout.layer_shapes(height, width)
               for name in names}
        assert got == expected


def test_layers_of_one_shape_are_grouped_in_order():
    groups = winograd_layout.layer_shapes(300, 400)
    assert [names for names, _ in groups] == [
        ['conv2_1'], ['conv2_2'], ['conv3_1'], ['conv3_2', 'conv3_3', 'conv3_4'], ['conv4_1'],
        ['conv4_2', 'conv4_3', 'conv4_4'], ['conv5_1']]
    assert groups[-1][1] == (19, 25, 512, 512)


def test_tile_count_rounds_each_side_up():
    assert winograd_layout.tile_count(38, 50) == 10 * 13
    assert winograd_layout.tile_count(4, 4) == 1
    assert winograd_layout.tile_count(5, 1) == 2


def test_run_size_reads_w_x_h_and_refuses_the_rest():
    assert winograd_layout.run_size('504x556') == (504, 556)
    for bad in ('400', '400x', 'axb', '0x300', '400x300x2'):
        with pytest.raises(argparse.ArgumentTypeError):
            winograd_layout.run_size(bad)
