"""nst.stages: the coarse-to-fine ladder of widths, the iterations of each stage, the style at
each stage's size (--style-scale) and the upsampling of one stage's result to the next.

Expected ladders and schedules are worked out by hand (the arithmetic is in the comments);
style_at is checked against Pillow's own resize and a mirror index map written here; upsample
against a float64 Lanczos-3 resampler written here from the filter's definition, and against
the analytic values of constant images and ramps. Pure NumPy and Pillow: no TensorFlow.
"""
import math
import sys

import numpy as np
import pytest
from PIL import Image

from nst import stages
from nst.images import fit_image

SQRT2 = math.sqrt(2)


# ----------------------------------------------------------------------------------------------
# The ladder of widths
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('width, start, factor, expected', [
    # 400 * 1.41421 = 565.7 -> 566; 566 * 1.41421 = 800.4 -> 800; 800 -> 1131.4 -> 1131;
    # 1131 -> 1599.48 -> 1599; 1599 * 1.41421 = 2261 >= 1920: stop. 1920 / 1599 = 1.2008, not
    # below sqrt(sqrt 2) = 1.1892: 1920 is a stage of its own.
    (1920, 400, SQRT2, [400, 566, 800, 1131, 1599, 1920]),
    # 400 -> 566 (< 600), 566 -> 800 (>= 600): stop. 600 / 566 = 1.06 < 1.1892: 566 merged.
    (600, 400, SQRT2, [400, 600]),
    # 400 -> 566 -> 800 (= 800, not below: stop). 800 / 566 = 1.413: kept.
    (800, 400, SQRT2, [400, 566, 800]),
    # The CLI tests' run: 64 -> 90.5 -> 91 (< 128), 91 -> 128.7 (>= 128): stop; 128 / 91 = 1.407.
    (128, 64, SQRT2, [64, 91, 128]),
    # Factor 2: 64 * 2 = 128 is not below 128: one step, 128 / 64 = 2 >= sqrt 2.
    (128, 64, 2.0, [64, 128]),
    # 400 -> 800 (< 1000) -> 1600: stop; 1000 / 800 = 1.25 < sqrt 2 = 1.414: 800 merged.
    (1000, 400, 2.0, [400, 1000]),
    # 1200 / 800 = 1.5 >= 1.414: kept.
    (1200, 400, 2.0, [400, 800, 1200]),
    # Factor 1.5 (sqrt = 1.2247): 400, 600, 900, 1350; 1920 / 1350 = 1.422: kept ...
    (1920, 400, 1.5, [400, 600, 900, 1350, 1920]),
    # ... 1500 / 1350 = 1.111: 1350 merged into 1500.
    (1500, 400, 1.5, [400, 600, 900, 1500]),
    # Factor 4 (sqrt = 2): the merge rule at its boundary. 100 -> 400 (< 800) -> 1600: stop.
    (800, 100, 4.0, [100, 400, 800]),    # 800 / 400 = 2: not below sqrt(4), kept
    (799, 100, 4.0, [100, 799]),         # 799 / 400 = 1.9975 < 2: merged
    (1600, 100, 4.0, [100, 400, 1600]),  # 400 * 4 = 1600 is not below 1600: 1600 / 400 = 4
    # At or below the start width: one stage, at the width asked for.
    (400, 400, SQRT2, [400]),
    (300, 400, SQRT2, [300]),
    (1, 400, SQRT2, [1]),
    # Just above the start width: the start itself is less than sqrt(F) below the end, so it
    # is merged: one stage (401 / 400 = 1.0025).
    (401, 400, SQRT2, [401]),
])
def test_ladder_by_hand(width, start, factor, expected):
    assert stages.ladder(width, start, factor) == expected


def test_ladder_defaults_are_the_courses_width_and_sqrt2():
    assert stages.DEFAULT_START_WIDTH == 400
    assert stages.DEFAULT_SCALE_FACTOR == pytest.approx(SQRT2, rel=1e-12)
    assert stages.ladder(1920) == [400, 566, 800, 1131, 1599, 1920]
    assert stages.ladder(400) == [400]


@pytest.mark.parametrize('width', [401, 500, 777, 1000, 1920, 4000, 12345])
@pytest.mark.parametrize('start, factor', [(400, SQRT2), (64, 2.0), (100, 1.3), (37, 3.0)])
def test_ladder_properties(width, start, factor):
    """Whatever the numbers: starts at the start width (unless merged into the end), rises,
    ends at the width; every step but the last is a factor (to rounding), the last between
    sqrt(factor) and factor * sqrt(factor) (a short last step merged into the one before)."""
    widths = stages.ladder(width, start, factor)
    assert widths[-1] == width
    assert all(a < b for a, b in zip(widths, widths[1:]))
    if len(widths) > 1:
        assert widths[0] == start
        for a, b in zip(widths[:-2], widths[1:-1]):
            assert abs(b - a * factor) <= 0.5 + 1e-9
        assert widths[-1] / widths[-2] >= math.sqrt(factor) - 1e-12
        assert widths[-1] / widths[-2] <= factor * math.sqrt(factor) + 1e-9
    else:
        assert width / start < math.sqrt(factor)


def call_with_step_limit(function, *args, limit=100000):
    """function(*args), stopped with RuntimeError after `limit` lines run in its own frame (a
    loop that never ends fails the test at once instead of hanging it)."""
    steps = 0
    code = function.__code__

    def local(frame, event, arg):
        nonlocal steps
        steps += 1
        if steps > limit:
            raise RuntimeError('%s(%s) did not finish within %d lines'
                               % (function.__name__, ', '.join(map(str, args)), limit))
        return local

    def calls(frame, event, arg):
        return local if frame.f_code is code else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        return function(*args)
    finally:
        sys.settrace(previous)


def test_ladder_ends_when_a_step_rounds_to_no_growth():
    # 64 * 1.001 = 64.06 rounds to 64: each step grows by at least a pixel.
    widths = call_with_step_limit(stages.ladder, 70, 64, 1.001)
    assert widths[0] == 64 and widths[-1] == 70
    assert all(a < b for a, b in zip(widths, widths[1:]))


# ----------------------------------------------------------------------------------------------
# Iterations of each stage
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('iterations, count, expected', [
    # Floor ceil(200 / 10) = 20: 200, 100, 50, 25, 12.5 -> 20, 6.25 -> 20.
    (200, 6, [200, 100, 50, 25, 20, 20]),
    # Floor 100: 1000, 500, 250, 125, then 62.5, 31.25, ... -> 100.
    (1000, 8, [1000, 500, 250, 125, 100, 100, 100, 100]),
    (4, 2, [4, 2]),                   # floor ceil(0.4) = 1
    (12, 4, [12, 6, 3, 2]),           # floor ceil(1.2) = 2; 1.5 -> 2
    (30, 3, [30, 15, 8]),             # floor 3; 7.5 -> 8
    (7, 3, [7, 4, 2]),                # floor 1; 3.5 -> 4, 1.75 -> 2
    (1, 3, [1, 1, 1]),                # at least 1: 0.5 and 0.25 would round to 0
    (19, 5, [19, 10, 5, 2, 2]),       # floor ceil(1.9) = 2; 9.5 -> 10, 4.75 -> 5, 2.375 -> 2
    (200, 1, [200]),
])
def test_iteration_schedule_by_hand(iterations, count, expected):
    assert stages.iteration_schedule(iterations, count) == expected


# ----------------------------------------------------------------------------------------------
# plan
# ----------------------------------------------------------------------------------------------


def test_plan_heights_keep_the_contents_aspect():
    # A 1920x1080 content (16:9): height = round(w * 9 / 16). 566 -> 318.375, 1131 -> 636.19,
    # 1599 -> 899.44.
    plan = stages.plan((1080, 1920, 3), 1920, 200)
    assert [(s.width, s.height) for s in plan] == [
        (400, 225), (566, 318), (800, 450), (1131, 636), (1599, 899), (1920, 1080)]
    assert [s.iterations for s in plan] == [200, 100, 50, 25, 20, 20]
    assert [s.index for s in plan] == list(range(6))
    assert all(s.count == 6 for s in plan)
    assert plan[1].name == 'stage 2/6, 566x318'


def test_plan_of_a_portrait_and_of_a_thin_content():
    # 3:5 portrait (h0 = 100, w0 = 60), factor 2 from 64: 64 -> 128 (< 200) -> 256: stop;
    # 200 / 128 = 1.5625 >= 1.414: [64, 128, 200]; heights 106.67 -> 107, 213.3 -> 213, 333.3.
    plan = stages.plan((100, 60, 3), 200, 10, start_width=64, factor=2.0)
    assert [(s.width, s.height) for s in plan] == [(64, 107), (128, 213), (200, 333)]
    assert [s.iterations for s in plan] == [10, 5, 2]  # floor 1; 2.5 -> 2 (round half to even)
    # A 1 px high, 1000 px wide content: height round(w / 1000) is 0 below 500: at least 1.
    plan = stages.plan((1, 1000, 3), 1000, 10, start_width=100, factor=2.0)
    assert [(s.width, s.height) for s in plan] == [(100, 1), (200, 1), (400, 1), (1000, 1)]


def test_plan_one_stage_at_or_below_the_start_width():
    (stage,) = stages.plan((300, 400, 3), 400, 200)
    assert stage == stages.Stage(0, 1, 400, 300, 200)
    (stage,) = stages.plan((48, 64, 3), 64, 7, start_width=400)
    assert stage == stages.Stage(0, 1, 64, 48, 7)


def test_plan_takes_the_stage_iterations_given():
    plan = stages.plan((48, 64, 3), 128, 100, start_width=64, factor=2.0, stage_iterations=[3, 2])
    assert [(s.width, s.height, s.iterations) for s in plan] == [(64, 48, 3), (128, 96, 2)]


@pytest.mark.parametrize('counts', [[5], [3, 2, 1], [1, 1, 1, 1, 1, 1, 1]])
def test_plan_refuses_a_stage_iterations_list_of_the_wrong_length(counts):
    with pytest.raises(ValueError) as error:
        stages.plan((48, 64, 3), 128, 100, start_width=64, factor=2.0, stage_iterations=counts)
    assert '%d iteration counts for 2 stages' % len(counts) in str(error.value)
    assert '64, 128' in str(error.value)  # the widths, so the user can count them


# ----------------------------------------------------------------------------------------------
# The style at each stage's size
# ----------------------------------------------------------------------------------------------


def noise_style(width, height, seed=0):
    """Random pixels: every region distinct, so a wrong crop or mirror cannot match."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def pillow_resize(image, width, height):
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def symmetric_index(k, n):
    """Source index of position k (any integer) in a signal of length n mirrored about its
    edges with the edge sample repeated: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ..."""
    m = k % (2 * n)
    return m if m < n else 2 * n - 1 - m


def mirror_fill(image, width, height):
    """image (h, w, 3) centred on a height x width canvas (the extra split with the smaller
    half before), mirrored symmetrically where it does not reach; where it is larger, its
    centre crop (top/left offsets rounded down)."""
    h, w = image.shape[:2]
    if h >= height:
        rows = [(h - height) // 2 + y for y in range(height)]
    else:
        top = (height - h) // 2
        rows = [symmetric_index(y - top, h) for y in range(height)]
    if w >= width:
        cols = [(w - width) // 2 + x for x in range(width)]
    else:
        left = (width - w) // 2
        cols = [symmetric_index(x - left, w) for x in range(width)]
    return image[np.ix_(rows, cols)]


def test_mirror_fill_helper_by_hand():
    """The test's own index map, on a 1-D case written out: 3 samples into 8."""
    assert [symmetric_index(k - 2, 3) for k in range(8)] == [1, 0, 0, 1, 2, 2, 1, 0]


@pytest.fixture
def record_resizes(monkeypatch):
    """The (width, height) of every resize_image call nst.stages makes."""
    sizes = []
    real = stages.resize_image

    def spy(image, width, height):
        sizes.append((width, height))
        return real(image, width, height)

    monkeypatch.setattr(stages, 'resize_image', spy)
    return sizes


@pytest.mark.parametrize('style_size, stage_size', [((80, 60), (64, 48)), ((40, 90), (64, 48)),
                                                    ((200, 50), (37, 53))])
def test_style_at_scale_1_is_fit_image(style_size, stage_size):
    style = noise_style(*style_size)
    np.testing.assert_array_equal(stages.style_at(style, *stage_size, 1.0),
                                  fit_image(style, *stage_size))
    np.testing.assert_array_equal(stages.style_at(style, *stage_size),
                                  fit_image(style, *stage_size))


@pytest.mark.parametrize('style_size, stage_size, scale, scaled_size', [
    # 80x60 covers 64x48 at 0.8 (both sides): 64x48; times 2: 128x96, cropped at (32, 24).
    ((80, 60), (64, 48), 2.0, (128, 96)),
    # The next stage: 0.8 * 2 of 160x120 covers 128x96 ... 256x192.
    ((80, 60), (128, 96), 2.0, (256, 192)),
    # A portrait 40x90 on 64x48: cover max(64/40, 48/90) = 1.6 -> 64x144; times 1.5: 96x216.
    ((40, 90), (64, 48), 1.5, (96, 216)),
    # Odd crops: 50x30 on 37x29: cover max(0.74, 0.9667) = 0.96667 -> 48.33x29; times 1.3:
    # 62.83 -> 63, 37.7 -> 38; crop offsets (63 - 37) // 2 = 13, (38 - 29) // 2 = 4.
    ((50, 30), (37, 29), 1.3, (63, 38)),
])
def test_style_at_larger_scale_is_a_centre_crop_of_the_scaled_style(
        record_resizes, style_size, stage_size, scale, scaled_size):
    style = noise_style(*style_size, seed=1)
    result = stages.style_at(style, *stage_size, scale)
    assert record_resizes == [scaled_size]
    assert result.shape == (stage_size[1], stage_size[0], 3) and result.dtype == np.uint8
    expected = mirror_fill(pillow_resize(style, *scaled_size), *stage_size)  # only crops here
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize('style_size, stage_size, scale, scaled_size', [
    # 80x60 on 64x48 at half its covering size: 32x24, mirrored out by 16 and 12 on each side.
    ((80, 60), (64, 48), 0.5, (32, 24)),
    # A quarter: 16x12 on 64x48: mirrored more than once (24 and 18 on each side).
    ((80, 60), (64, 48), 0.25, (16, 12)),
    # Odd extra: 40x30 on 64x47: cover max(1.6, 1.5667) = 1.6; times 0.3: 19.2 -> 19, 14.4 ->
    # 14; extra 45 (22 left, 23 right) and 33 (16 above, 17 below).
    ((40, 30), (64, 47), 0.3, (19, 14)),
    # Mixed: a wide 200x50 on 64x48 covers at 0.96 (192x48); times 0.5: 96x24: cropped across
    # (offset 16), mirrored down (12 above and below).
    ((200, 50), (64, 48), 0.5, (96, 24)),
])
def test_style_at_smaller_scale_is_mirrored_to_fill_the_stage(
        record_resizes, style_size, stage_size, scale, scaled_size):
    style = noise_style(*style_size, seed=2)
    result = stages.style_at(style, *stage_size, scale)
    assert record_resizes == [scaled_size]
    assert result.shape == (stage_size[1], stage_size[0], 3) and result.dtype == np.uint8
    scaled = pillow_resize(style, *scaled_size)
    np.testing.assert_array_equal(result, mirror_fill(scaled, *stage_size))
    # Spelled out for the first case: the centre is the scaled style, the rows above it its
    # rows mirrored (row 11 repeats row 0), the columns left of it its columns mirrored.
    if scaled_size == (32, 24):
        np.testing.assert_array_equal(result[12:36, 16:48], scaled)
        np.testing.assert_array_equal(result[11], result[12])
        np.testing.assert_array_equal(result[0:12, 16:48], scaled[11::-1])
        np.testing.assert_array_equal(result[12:36, 0:16], scaled[:, 15::-1])
        np.testing.assert_array_equal(result[36:48, 16:48], scaled[:11:-1])


def test_style_at_keeps_the_strokes_the_same_fraction_of_every_stage(record_resizes):
    """With scale F, the style is resized to F times the stage's covering size at every stage:
    its size grows with the stage (what --style-scale promises)."""
    style = noise_style(80, 60, seed=3)
    for width, height in [(64, 48), (91, 68), (128, 96)]:
        stages.style_at(style, width, height, 3.0)
    # cover = width / 80 (= height / 60 to rounding): 3 * 64 = 192, 3 * 91 = 273 and
    # 3 * 60 * 91 / 80 = 204.75 -> 205, 3 * 128 = 384.
    assert record_resizes == [(192, 144), (273, 205), (384, 288)]


# ----------------------------------------------------------------------------------------------
# Upsampling a stage's result
# ----------------------------------------------------------------------------------------------


def lanczos3(x):
    """The Lanczos-3 kernel: sinc(x) sinc(x / 3) on |x| < 3, 0 outside."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)


def lanczos_matrix(in_size, out_size):
    """(out_size, in_size) float64 weights of a Lanczos-3 resize of a 1-D signal, as Pillow
    samples it: output pixel i is centred at (i + 0.5) * in / out in input coordinates (pixel
    k covering [k, k + 1)); the kernel is widened by the scale when shrinking; weights outside
    the signal are dropped and the rest normalised to sum 1."""
    scale = in_size / out_size
    widen = max(scale, 1.0)
    support = 3.0 * widen
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = (i + 0.5) * scale
        first = max(0, int(centre - support + 0.5))
        last = min(in_size, int(centre + support + 0.5))
        k = np.arange(first, last)
        weights = lanczos3((k + 0.5 - centre) / widen)
        matrix[i, first:last] = weights / weights.sum()
    return matrix


def reference_upsample(image, width, height):
    """float64 Lanczos-3 resize of (1, h, w, C), separable: rows then columns."""
    rows = lanczos_matrix(image.shape[1], height)
    cols = lanczos_matrix(image.shape[2], width)
    return np.einsum('Yy,yxc,Xx->YXc', rows, image[0].astype(np.float64), cols)[np.newaxis]


def test_lanczos_reference_by_hand():
    """The reference's own weights, where they can be worked out by hand: each row sums to 1,
    one row of a doubling written out, and at its own size the resize is the identity."""
    matrix = lanczos_matrix(8, 16)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-12)
    # Output pixel 5 is centred at 5.5 / 2 = 2.75: offsets to input centres 0.5 .. 5.5 are
    # -2.25, -1.25, -0.25, 0.75, 1.75, 2.75.
    offsets = np.array([-2.25, -1.25, -0.25, 0.75, 1.75, 2.75])
    weights = np.sinc(offsets) * np.sinc(offsets / 3)
    np.testing.assert_allclose(matrix[5, 0:6], weights / weights.sum(), rtol=1e-12)
    np.testing.assert_allclose(lanczos_matrix(7, 7), np.eye(7), atol=1e-12)


@pytest.mark.parametrize('size, new_size', [((32, 24), (64, 48)), ((64, 48), (91, 68)),
                                            ((91, 68), (128, 96)), ((5, 3), (17, 11))])
def test_upsample_equals_a_float64_lanczos_resize(size, new_size):
    """Random mean-subtracted values, beyond 0..255 and not whole numbers: upsample is the
    Lanczos-3 resize of each channel in float (not rounded or clipped to 8 bits), to float32
    precision (|values| < 200 here, so 1e-4 is about 8 float32 ulps; rounding to whole
    numbers would be off by up to 0.5)."""
    (w, h), (W, H) = size, new_size
    image = np.random.default_rng(w).uniform(-150, 190, (1, h, w, 3)).astype(np.float32)
    result = stages.upsample(image, W, H)
    assert result.shape == (1, H, W, 3) and result.dtype == np.float32
    expected = reference_upsample(image, W, H)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4)
    # Not 8-bit: most values are far from whole numbers, and some beyond 0..255 minus the mean.
    assert np.mean(np.abs(result - np.round(result)) > 0.01) > 0.9
    assert result.min() < -130 and result.max() > 170


def test_upsample_of_a_constant_image_is_constant():
    """Each channel its own non-integer constant: the normalised kernel keeps it (float32
    rounding: 1e-5 relative); channels do not mix."""
    constants = np.array([-103.939, 0.3125, 131.32], np.float32)
    image = np.broadcast_to(constants, (1, 24, 32, 3)).copy()
    result = stages.upsample(image, 64, 48)
    assert result.shape == (1, 48, 64, 3) and result.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(result[0, :, :, c], constants[c], rtol=1e-5, atol=1e-6)


def test_upsample_at_its_own_size_is_the_image_itself():
    image = np.random.default_rng(9).normal(0, 60, (1, 24, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(stages.upsample(image, 32, 24), image)


def test_upsample_of_a_ramp_stays_on_the_ramp():
    """A linear ramp v(x, y) = a x + b y + c (x, y the pixel centres) resized from 32x24 to
    64x48: output pixel (X, Y) lies at input coordinates ((X + 0.5) / 2 - 0.5, (Y + 0.5) / 2 -
    0.5), where the ramp is known. Lanczos-3's weights are symmetric only away from the
    edges: within 3 input pixels of an edge the clipped kernel pulls values inward (here up
    to 0.6% of the ramp's span: bounded by 1%); inside, the kernel's ripple leaves < 0.1% of
    it (0.08% here). Rounding to whole numbers would be off by up to 0.5, 2.6% of channel 2's
    span (19.25)."""
    h, w, H, W = 24, 32, 48, 64
    a, b = np.array([3.0, -1.5, 0.25]), np.array([-2.0, 4.0, 0.5])
    c = np.array([-100.0, -60.0, 7.0])
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    image = (a * x[..., None] + b * y[..., None] + c)[np.newaxis].astype(np.float32)
    Y, X = np.mgrid[0:H, 0:W].astype(np.float64)
    xs, ys = (X + 0.5) * w / W - 0.5, (Y + 0.5) * h / H - 0.5
    analytic = a * xs[..., None] + b * ys[..., None] + c
    result = stages.upsample(image, W, H)[0]
    span = np.ptp(analytic, axis=(0, 1))  # per channel
    error = np.abs(result - analytic) / span
    assert error.max() < 0.01
    inside = error[6:-6, 6:-6]  # 3 input pixels from every edge
    assert inside.max() < 0.001
