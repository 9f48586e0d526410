"""nst.plots.save_plots: costs.png (the three costs against the iteration, log scale) and
summary.png (the inputs and the result side by side), written atomically; a plot that cannot be
written is a one-line WriteError (exit code 1). The plots of whole runs are checked in
test_cli.py."""
import os

import numpy as np
import pytest

from nst.errors import EXIT_FAILURE, WriteError
from nst.plots import save_plots
from pictures import checker_picture, read_rgb, smooth_picture, striped_picture

CONTENT = smooth_picture(64, 48)
STYLES = [striped_picture(64, 48), checker_picture(64, 48)]
RESULT = checker_picture(64, 48, square=4, colours=((20, 20, 20), (240, 240, 240)))
# (iteration, total, content, style), falling as a run's costs do.
HISTORY = [(i, 1000.0 / (i + 1), 10.0 / (i + 1) ** 0.5, 20.0 / (i + 1)) for i in range(30)]
# matplotlib's first three colours (C0, C1, C2): total, content, style.
CURVES = ((0x1f, 0x77, 0xb4), (0xff, 0x7f, 0x0e), (0x2c, 0xa0, 0x2c))


def colour_pixels(pixels, rgb, tolerance=12):
    return int(np.sum(np.all(np.abs(pixels.astype(int) - rgb) <= tolerance, axis=-1)))


def test_costs_and_summary(tmp_path):
    save_plots(str(tmp_path), HISTORY, CONTENT, STYLES[:1], RESULT)
    assert sorted(os.listdir(tmp_path)) == ['costs.png', 'summary.png']
    costs = read_rgb(tmp_path / 'costs.png')
    for rgb in CURVES:
        assert colour_pixels(costs, rgb) > 20, rgb
    summary = read_rgb(tmp_path / 'summary.png')
    assert summary.shape[1] > 2 * summary.shape[0]  # content, style and result side by side
    assert colour_pixels(summary, (230, 30, 30), tolerance=30) > 20  # the style's red stripes


def test_one_panel_per_style(tmp_path):
    save_plots(str(tmp_path), HISTORY, CONTENT, STYLES[:1], RESULT)
    os.mkdir(tmp_path / 'two')
    save_plots(str(tmp_path / 'two'), HISTORY, CONTENT, STYLES, RESULT)
    one = read_rgb(tmp_path / 'summary.png')
    two = read_rgb(tmp_path / 'two' / 'summary.png')
    assert two.shape[1] / two.shape[0] > 1.2 * one.shape[1] / one.shape[0]  # 4 panels, not 3


def test_costs_that_are_not_positive_are_left_out_of_the_log_scale(tmp_path):
    """A cost of 0 (a style cost whose generated image matches the style) has no place on a
    log axis: that curve is left out, the others are drawn."""
    history = [(i, total, content, 0.0) for i, total, content, _ in HISTORY]
    save_plots(str(tmp_path), history, CONTENT, STYLES[:1], RESULT)
    costs = read_rgb(tmp_path / 'costs.png')
    assert colour_pixels(costs, CURVES[0]) > 20 and colour_pixels(costs, CURVES[1]) > 20


def test_no_history_no_costs_plot(tmp_path):
    """A run stopped before its first iteration has no costs to plot: only summary.png."""
    save_plots(str(tmp_path), [], CONTENT, STYLES[:1], RESULT)
    assert os.listdir(tmp_path) == ['summary.png']


def test_a_plot_that_cannot_be_written_is_a_write_error(tmp_path):
    (tmp_path / 'costs.png').mkdir()  # a folder in the way: the rename onto it fails
    with pytest.raises(WriteError) as info:
        save_plots(str(tmp_path), HISTORY, CONTENT, STYLES[:1], RESULT)
    message = str(info.value)
    assert '\n' not in message and str(tmp_path / 'costs.png') in message
    assert info.value.exit_code == EXIT_FAILURE == 1
    assert sorted(os.listdir(tmp_path)) == ['costs.png']  # no temp file left behind


def test_costs_all_zero_draw_no_curve_and_warn_nothing(tmp_path, recwarn):
    """Every cost 0 (the content and the style are one image, no noise): nothing to draw on a
    log scale, and no legend to make (matplotlib would warn on stderr that it has no labels)."""
    save_plots(str(tmp_path), [(i, 0.0, 0.0, 0.0) for i in range(5)], CONTENT, STYLES[:1],
               RESULT)
    assert sorted(os.listdir(tmp_path)) == ['costs.png', 'summary.png']
    costs = read_rgb(tmp_path / 'costs.png')
    assert all(colour_pixels(costs, rgb) == 0 for rgb in CURVES)
    assert [str(w.message) for w in recwarn] == []
