"""nst/tiles.py: the budget option, tile layouts, blending weights and the feature cells each
tile owns. Pure NumPy; the tiled optimisation itself is tested in test_optimize.py."""
import numpy as np
import pytest

from nst import memory, tiles
from nst.tiles import Tiling


@pytest.mark.parametrize('text, expected', [
    ('6G', 6 * 2 ** 30), ('6g', 6 * 2 ** 30), ('6GB', 6 * 2 ** 30), ('6GiB', 6 * 2 ** 30),
    ('512M', 512 * 2 ** 20), ('1.5G', 3 * 2 ** 29), ('2T', 2 * 2 ** 40), ('64k', 65536)])
def test_memory_sizes_parse(text, expected):
    assert tiles.parse_memory_size(text) == expected


@pytest.mark.parametrize('text, reason', [
    ('0G', 'above 0'), ('-2G', 'above 0'), ('6', 'needs a unit'), ('6X', 'unknown unit'),
    ('6Gb2', 'not a size'), ('G', 'not a size'), ('', 'not a size'),
    ('1e999G', 'not a finite size'), ('1e-9K', 'above 0'), ('0.0001K', 'above 0')])
def test_bad_memory_sizes_say_why(text, reason):
    with pytest.raises(ValueError, match=reason) as error:
        tiles.parse_memory_size(text)
    assert '\n' not in str(error.value)


def covering(length, starts, tile):
    """How many tiles cover each position of an axis."""
    count = np.zeros(length, int)
    for start in starts:
        count[start:start + tile] += 1
    return count


@pytest.mark.parametrize('length, count', [(1080, 2), (1920, 5), (300, 3), (129, 2), (4320, 7)])
def test_tiles_cover_the_axis_overlapping_by_at_least_the_overlap(length, count):
    tile = tiles.tile_side(length, count)
    starts = tiles.axis_starts(length, tile, count)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert covering(length, starts, tile).min() >= 1
    overlaps = [a + tile - b for a, b in zip(starts[:-1], starts[1:])]
    assert min(overlaps) >= tiles.OVERLAP - 1  # rounding the starts may take a pixel


def fake_memory(per_pixel, fixed=0):
    """A tile_memory: per_pixel bytes per tile pixel plus fixed bytes."""
    return lambda tile_height, tile_width, count: fixed + per_pixel * tile_height * tile_width


def test_a_picture_that_fits_is_one_tile():
    tiling = tiles.plan_tiling(300, 400, 10 ** 9, fake_memory(1000))
    assert tiling == tiles.single_tile(300, 400) and tiling.count == 1


def test_the_plan_fits_the_budget_with_the_least_work():
    budget = 300_000 * 1000
    tiling = tiles.plan_tiling(1080, 1920, budget, fake_memory(1000))
    assert tiling.count > 1
    assert tiling.tile_height * tiling.tile_width * 1000 <= budget
    work = tiling.count * tiling.tile_height * tiling.tile_width
    # No other layout of this kind fits with less work.
    for rows in range(1, 12):
        for cols in range(1, 20):
            th, tw = tiles.tile_side(1080, rows), tiles.tile_side(1920, cols)
            if th * tw * 1000 <= budget and min(th, tw) >= tiles.MIN_TILE:
                assert rows * cols * th * tw >= work
    assert covering(1080, tiling.row_starts, tiling.tile_height).min() >= 1
    assert covering(1920, tiling.col_starts, tiling.tile_width).min() >= 1


def test_no_plan_when_even_the_smallest_tile_does_not_fit():
    smallest = tiles.MIN_TILE ** 2 * 1000  # no tile is smaller than MIN_TILE x MIN_TILE
    assert tiles.plan_tiling(1080, 1920, smallest - 1, fake_memory(1000)) is None
    # Tiles a little larger fit (the sides that cover 1080 and 1920 evenly are not all
    # exactly MIN_TILE).
    tiling = tiles.plan_tiling(1080, 1920, (tiles.MIN_TILE + 8) ** 2 * 1000, fake_memory(1000))
    assert tiling is not None and min(tiling.tile_size) >= tiles.MIN_TILE


def test_real_plans_fit_their_estimates():
    """With the real estimate: 4K under 6 GiB and 8K under 22 GiB are tiled to fit."""
    for height, width, budget in ((2160, 3840, 6 * 2 ** 30), (4320, 7680, 22 * 2 ** 30)):
        def estimate(th, tw, count, height=height, width=width):
            if count == 1:
                return memory.estimate_run_memory(height, width)
            return memory.estimate_tiled_memory(height, width, th, tw, count)
        tiling = tiles.plan_tiling(height, width, budget, estimate)
        assert tiling.count > 1
        assert estimate(*tiling.tile_size, tiling.count) <= budget


def example_tiling():
    """3 x 2 tiles over 300 x 200 (overlaps of 64 and more)."""
    return Tiling(300, 200, 160, 132, tiles.axis_starts(300, 160, 3),
                  tiles.axis_starts(200, 132, 2))


def blended_total(tiling, weights):
    total = np.zeros((tiling.height, tiling.width, 1), np.float64)
    for (top, left), weight in weights.items():
        assert weight.shape == (tiling.tile_height, tiling.tile_width, 1)
        assert weight.min() >= 0 and weight.max() <= 1
        total[top:top + tiling.tile_height, left:left + tiling.tile_width] += weight
    return total


def test_blend_weights_are_a_partition_of_unity_wherever_the_seams_fall():
    """For any random seam places, every pixel's weights sum to 1: every pixel is covered."""
    tiling = example_tiling()
    rng = np.random.default_rng(0)
    for _ in range(50):
        total = blended_total(tiling, tiles.blend_weights(tiling, rng))
        np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_seams_move_from_step_to_step_and_stay_off_the_tile_edges():
    tiling = example_tiling()
    rng = np.random.default_rng(1)
    places = [tiles.seam_places(tiling.row_starts, tiling.tile_height, rng) for _ in range(200)]
    for k, (left, right) in enumerate(zip(tiling.row_starts[:-1], tiling.row_starts[1:])):
        seam = np.array([p[k] for p in places])
        assert len(np.unique(np.round(seam))) > 10  # not one place
        assert seam.min() >= right + tiles.EDGE_MARGIN + tiles.RAMP / 2
        assert seam.max() <= left + tiling.tile_height - tiles.EDGE_MARGIN - tiles.RAMP / 2
    # So a tile's pixels next to its inner edges get no weight from it.
    weights = tiles.blend_weights(tiling, rng)
    middle = weights[(tiling.row_starts[1], 0)]
    assert middle[:tiles.EDGE_MARGIN].max() == 0 and middle[-tiles.EDGE_MARGIN:].max() == 0


def test_one_tile_weighs_every_pixel_fully():
    tiling = tiles.single_tile(30, 40)
    weights = tiles.blend_weights(tiling, np.random.default_rng(0))
    assert list(weights) == [(0, 0)]
    assert weights[(0, 0)].min() == 1


@pytest.mark.parametrize('factor', [1, 2, 4, 8, 16])
def test_every_feature_cell_is_owned_once(factor):
    tiling = example_tiling()
    masks = tiles.owned_masks(tiling, factor)
    rows, cols = -(-tiling.height // factor), -(-tiling.width // factor)
    owned = np.zeros((rows, cols))
    for (top, left), mask in masks.items():
        assert mask.shape == (1, -(-tiling.tile_height // factor),
                              -(-tiling.tile_width // factor), 1)
        if top % factor == 0 and left % factor == 0:  # aligned: cells map one to one
            r, c = top // factor, left // factor
            owned[r:r + mask.shape[1], c:c + mask.shape[2]] += mask[0, :, :, 0][
                :rows - r, :cols - c]
    aligned = all(s % factor == 0 for s in tiling.row_starts + tiling.col_starts)
    if aligned:
        np.testing.assert_array_equal(owned, 1)
    # Unaligned or not, the cells owned add up to the picture's.
    assert sum(mask.sum() for mask in masks.values()) == pytest.approx(rows * cols, abs=
                                                                         2 * (rows + cols))


def test_tile_gram_matrices_sum_to_the_whole_gram_matrix():
    """The Gram matrix of a feature map is the sum of those of the parts the tiles own."""
    factor = 4
    tiling = Tiling(96, 128, 56, 72, (0, 40), (0, 56))  # starts are multiples of 4
    rng = np.random.default_rng(2)
    features = rng.standard_normal((1, 96 // factor, 128 // factor, 5))  # (1, 24, 32, C)
    whole = features.reshape(-1, 5).T @ features.reshape(-1, 5)           # (C, C)
    total = np.zeros((5, 5))
    for (top, left), mask in tiles.owned_masks(tiling, factor).items():
        # The tile's own features: the cells under it, (1, 14, 18, C).
        part = tiles.crop(features, top // factor, left // factor, mask.shape[1:3]) * mask
        flat = part.reshape(-1, 5)  # (cells, C)
        total += flat.T @ flat
    np.testing.assert_allclose(total, whole, rtol=1e-12)


def test_border_contrast_finds_a_seam_and_passes_a_smooth_picture():
    tiling = Tiling(64, 64, 40, 40, (0, 24), (0, 24))
    y, x = np.mgrid[0:64, 0:64]
    smooth = np.sin(x / 5.0 + y / 7.0)[None, :, :, None]
    assert tiles.border_contrast(smooth, tiling) == pytest.approx(1.0, abs=0.2)
    seamed = smooth.copy()
    seamed[:, 40:] += 1.0  # a step at the first tile's lower edge
    assert tiles.border_contrast(seamed, tiling) > 2
