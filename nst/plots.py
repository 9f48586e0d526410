"""The plots a run leaves beside its images: costs.png and summary.png (Matplotlib, no screen)."""

import os

import numpy as np

from nst.errors import WriteError, one_line
from nst.files import atomic_write


def save_plots(output_dir, history, content, styles, result, stage_marks=()):
    """costs.png (costs against iteration, log scale) and summary.png (inputs and result).

    stage_marks: [(first iteration, label)] of the stages of a coarse-to-fine run, drawn as
    vertical lines on costs.png.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if history:
        iterations, total, content_cost, style_cost = zip(*history)
        figure, axes = plt.subplots(figsize=(7, 4.5))
        for values, label in ((total, 'total cost J'), (content_cost, 'content cost'),
                              (style_cost, 'style cost')):
            positive = [(i, v) for i, v in zip(iterations, values) if v > 0]
            if positive:
                axes.plot(*zip(*positive), label=label)
        for iteration, label in stage_marks:
            axes.axvline(iteration, color='grey', linewidth=0.8, linestyle=':')
            axes.annotate(label.split(', ')[-1], (iteration, 1), xycoords=('data', 'axes fraction'),
                          xytext=(2, -2), textcoords='offset points', fontsize=7, va='top',
                          rotation=90, color='grey')
        axes.set_yscale('log')
        axes.set_xlabel('iteration')
        axes.set_ylabel('cost')
        if axes.get_legend_handles_labels()[0]:  # else no cost above 0 to show on a log scale
            axes.legend()
        axes.grid(True, which='both', alpha=0.3)
        _save_figure(figure, os.path.join(output_dir, 'costs.png'))

    panels = [('content', content)] + [
        ('style' if len(styles) == 1 else 'style %d' % (k + 1), s) for k, s in enumerate(styles)
    ] + [('result', result)]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0))
    for ax, (title, pixels) in zip(np.atleast_1d(axes), panels):
        ax.imshow(pixels)
        ax.set_title(title)
        ax.axis('off')
    _save_figure(figure, os.path.join(output_dir, 'summary.png'))


def _save_figure(figure, path):
    import matplotlib.pyplot as plt
    try:
        atomic_write(path, lambda temp: figure.savefig(temp, format='png', dpi=100,
                                                       bbox_inches='tight'))
    except OSError as error:
        raise WriteError('%s: cannot be written (%s)' % (path, one_line(error))) from None
    finally:
        plt.close(figure)
