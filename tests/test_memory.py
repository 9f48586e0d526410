"""nst.memory: the peak memory of a run estimated from the layer shapes (worked out by hand from
the documented formula), and the memory this machine has available."""

import numpy as np
import pytest

from matconvnet import CONV_NAMES
from nst import memory


def test_estimate_run_memory_by_hand():
    """5 x 6 image, block widths (1, 2, 2, 3, 3), worked out by hand from the documented formula.

    Block sizes (each 2x2 SAME pool rounds up): 5x6, 3x3, 2x2, 1x1, 1x1.
    Conv outputs A_l: 30, 30 | 18, 18 | 8, 8, 8, 8 | 3, 3, 3, 3 | 3, 3, 3, 3: sum 152, max 30;
    one of each block B: 30 + 18 + 8 + 3 + 3 = 62.
    Kernels + biases (9 in out + out): 28, 10 | 20, 38 | 38 x 4 | 57, 84, 84, 84 | 84 x 4: 893.
    Image X = 3 * 5 * 6 = 90.
    Adam, one style: 4 * (152 + 4*30 + 19*90 + 4*893) + 640 MiB.
    """
    widths = (1, 2, 2, 3, 3)
    runtime = 640 * 2 ** 20
    assert memory.estimate_run_memory(5, 6, widths) == 4 * (152 + 120 + 1710 + 3572) + runtime
    assert memory.estimate_run_memory(5, 6, widths) == 22216 + runtime
    # Two more styles: 2 more image copies each and their style layers' activations (B each).
    assert (memory.estimate_run_memory(5, 6, widths, styles=3)
            == 22216 + 4 * 4 * 90 + 4 * 2 * 62 + runtime)
    # L-BFGS-B: 90 more image copies.
    assert (memory.estimate_run_memory(5, 6, widths, optimizer='lbfgs')
            == 22216 + 4 * 90 * 90 + runtime)


def test_conv_sizes_at_the_course_size():
    """The course's shapes at 300x400: conv1_1 (300, 400, 64), conv4_2 (38, 50, 512),
    conv5_1 (19, 25, 512)."""
    sizes = [elements for elements, _, _ in memory.vgg_conv_sizes(300, 400)]
    assert len(sizes) == 16
    assert sizes[0] == 300 * 400 * 64
    assert sizes[CONV_NAMES.index('conv4_2')] == 38 * 50 * 512
    assert sizes[CONV_NAMES.index('conv5_1')] == 19 * 25 * 512
    assert sizes[CONV_NAMES.index('conv3_4')] == 75 * 100 * 256


def test_estimate_at_the_course_size_is_plausible():
    """The real widths at 300x400: at least the activations (sum over layers, by hand: 35.5
    million floats = 142 MB), and the 1-2 GB that runs of that size measure, not 10 GB."""
    estimate = memory.estimate_run_memory(300, 400)
    activations = 4 * 120000 * (2 * 64 + 2 * 128 / 4 + 4 * 256 / 16 + 4 * 512 / 64
                                + 4 * 512 / 256)
    # activations = 4 bytes x 35_520_000 floats = 142 MB (the docstring's 35.5 million).
    assert activations < estimate < 2.5e9


def test_available_memory_is_memavailable_or_a_cgroup_limit(meminfo_available):
    available = memory.available_memory()
    assert available is not None and available > 0
    assert available <= meminfo_available * 1.1 + 64 * 2 ** 20


def test_vgg_widths_of_read_weights():
    """The output channels of conv1_1 ... conv5_1; a block not read counts as wide as the one
    before it."""
    weights = {name: (np.zeros((3, 3, cin, cout), np.float32), np.zeros(cout, np.float32))
               for name, cin, cout in [('conv1_1', 3, 4), ('conv1_2', 4, 4), ('conv2_1', 4, 8),
                                       ('conv2_2', 8, 8), ('conv3_1', 8, 6)]}
    assert memory.vgg_widths(weights) == (4, 8, 6, 6, 6)


@pytest.mark.parametrize('count, text', [(0, '0 B'), (1023, '1023 B'), (1536, '1.5 KiB'),
                                         (123456789, '117.7 MiB'), (3 * 2 ** 30, '3.0 GiB')])
def test_format_bytes(count, text):
    assert memory.format_bytes(count) == text
