"""Coarse-to-fine stages: a large picture is optimised at growing sizes, each stage starting
from the last one's result upsampled (jcjohnson's multires recipe; crowsonkb's style scale).

VGG-19's receptive fields are fixed in pixels, so a run at 1920x1080 from noise paints tiny
strokes and stops looking like the 400 px preview; it is also slow. Starting at the course's
400 px and growing by sqrt(2) keeps the preview's composition and spends most iterations where
they are cheap. Pure NumPy and Pillow: no TensorFlow here.
"""

import math
from typing import NamedTuple

import numpy as np

from nst.images import fit_image, resize_image

DEFAULT_START_WIDTH = 400  # the course's size: the first stage is the course's preview
DEFAULT_SCALE_FACTOR = math.sqrt(2)  # each stage has twice the pixels of the one before
MAX_STAGES = 32  # more means a --scale-factor so close to 1 that the stages only add set-up


class Stage(NamedTuple):
    index: int       # 0-based
    count: int       # stages in the run
    width: int
    height: int
    iterations: int

    @property
    def name(self):
        return 'stage %d/%d, %dx%d' % (self.index + 1, self.count, self.width, self.height)


def stage_height(content_shape, width):
    """The height at width for a content of shape (h, w, ...): its aspect ratio, at least 1."""
    return max(1, round(width * content_shape[0] / content_shape[1]))


def ladder(width, start_width=DEFAULT_START_WIDTH, factor=DEFAULT_SCALE_FACTOR):
    """The stage widths from start_width, times factor each, up to width (the last one).

    A width at or below start_width is one stage. A step that would leave less than half a
    factor (in ratio: sqrt(factor)) to the end is merged into the last stage (no 566 -> 600
    stage).
    """
    if width <= start_width:
        return [width]
    widths = [start_width]
    while widths[-1] * factor < width:
        # at least a pixel more: a factor close to 1 would otherwise round to no growth
        widths.append(max(widths[-1] + 1, int(round(widths[-1] * factor))))
    if width / widths[-1] < math.sqrt(factor):
        widths.pop()  # a step of less than half a factor: merged into the last stage
    return widths + [width]


def iteration_schedule(iterations, count):
    """Iterations per stage by default: all of them at the first stage, then half as many at
    each larger stage (whose pixels double), so each stage takes about the same time; at least
    a tenth of them at every stage."""
    floor = max(1, math.ceil(iterations / 10))
    return [max(floor, int(round(iterations / 2 ** k))) for k in range(count)]


def plan(content_shape, width, iterations, start_width=None, factor=None, stage_iterations=None):
    """The stages of a run: [Stage, ...], one for a run at or below the start width.

    content_shape: the content's (h, w, ...). stage_iterations: the iterations of each stage,
    or None for iteration_schedule(iterations, ...). Raises ValueError when stage_iterations
    does not have one entry per stage, or for more than MAX_STAGES stages.
    """
    widths = ladder(width, start_width or DEFAULT_START_WIDTH, factor or DEFAULT_SCALE_FACTOR)
    if len(widths) > MAX_STAGES:
        raise ValueError('%d stages from %d to %d; at most %d (a larger --scale-factor)'
                         % (len(widths), widths[0], width, MAX_STAGES))
    counts = stage_iterations or iteration_schedule(iterations, len(widths))
    if len(counts) != len(widths):
        raise ValueError('%d iteration counts for %d stages (%s)'
                         % (len(counts), len(widths), ', '.join(map(str, widths))))
    return [Stage(k, len(widths), w, stage_height(content_shape, w), n)
            for k, (w, n) in enumerate(zip(widths, counts))]


def style_at(style, width, height, scale=1.0):
    """The style image for a width x height stage: scaled to `scale` times the size at which it
    just covers the stage (keeping its aspect), then centre-cropped to the stage, or, when
    smaller, mirrored around until it fills it.

    So with scale F the style's strokes are the same fraction of the picture at every stage;
    for a style of the content's aspect its long side is F times the stage's. scale=1 is the
    style fitted to the stage (scaled and centre-cropped), as a single-scale run does.
    style: (h, w, 3) uint8. Returns (height, width, 3) uint8.
    """
    if scale == 1.0:
        return fit_image(style, width, height)
    scaled = resize_image(style, *scaled_style_size(style.shape, width, height, scale))
    return _centre_fill(scaled, width, height)


def scaled_style_size(style_shape, width, height, scale):
    """(width, height) of a style of style_shape (h, w, ...) scaled by style_at for a
    width x height stage: scale times the size at which it just covers the stage."""
    cover = max(width / style_shape[1], height / style_shape[0])
    return (max(1, round(style_shape[1] * cover * scale)),
            max(1, round(style_shape[0] * cover * scale)))


def _centre_fill(image, width, height):
    """Centre-crop image (h, w, 3) to height x width, mirroring it where it is smaller."""
    h, w = image.shape[:2]
    if h < height or w < width:
        pad_y, pad_x = max(0, height - h), max(0, width - w)
        # 'symmetric' repeats the edge row, so mirrored tiles join without a seam; np.pad
        # repeats the reflection as often as needed.
        image = np.pad(image, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2),
                               (0, 0)), mode='symmetric')
        h, w = image.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    # A copy: a view would keep the whole scaled style alive (one per style, all at once).
    return image[top:top + height, left:left + width].copy()


def upsample(image, width, height):
    """A stage's result (1, h, w, 3) float, mean-subtracted, resized to (1, height, width, 3)
    float32 with Lanczos filtering, channel by channel (Pillow's 32-bit float images), so
    nothing is rounded or clipped to 8 bits between stages."""
    from PIL import Image

    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[0, :, :, c], np.float32),
                                           'F').resize((width, height), Image.Resampling.LANCZOS))
                for c in range(image.shape[3])]
    return np.stack(channels, axis=-1)[np.newaxis].astype(np.float32)  # (H, W, 3) -> (1, H, W, 3)
