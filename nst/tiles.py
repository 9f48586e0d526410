"""Tiles: a stage larger than the memory budget is optimised in overlapping tiles.

The VGG graph is built for one tile; each Adam step runs it on every tile of the picture and
blends the tiles' gradients into one full-size gradient (Adam's moments stay at full size, in
nst.optimize). What is here is geometry, pure NumPy: the budget option, the tile layout that
fits a budget, the blending weights and the parts of a feature map each tile owns.

The tiles stay in place for a stage (each tile's content target is computed once), and the
seams move: where two tiles overlap, the hand-over from one to the other is a short linear ramp
placed at random inside the overlap at every step. Pixels near a tile's edge, where its
convolutions see the zero padding instead of the picture, get no weight from that tile.
"""

import math
import re
from typing import NamedTuple

import numpy as np

OVERLAP = 32      # pixels two neighbouring tiles share
EDGE_MARGIN = 8   # pixels at a tile's inner edges that take no weight from it
RAMP = 8          # width of the hand-over from one tile to the next
MIN_TILE = 2 * OVERLAP  # the smallest tile side (smaller: nothing left between the overlaps)

_UNITS = {'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


def parse_memory_size(text):
    """'6G' -> 6 * 2**30 bytes. Units K, M, G, T (powers of 1024; 'GB', 'GiB' and lower case
    say the same); a number without a unit is refused (bytes or gigabytes?).
    Raises ValueError with a one-line reason."""
    match = re.fullmatch(r'\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*',
                         text)
    if not match:
        raise ValueError('%r is not a size such as 6G or 512M' % text)
    number, unit = float(match.group(1)), match.group(2).upper()
    if not unit:
        raise ValueError('%r needs a unit: K, M, G or T (e.g. 6G)' % text)
    scale = _UNITS.get(unit[0]) if unit[1:] in ('', 'B', 'IB') else None
    if scale is None:
        raise ValueError('%r has an unknown unit %r (K, M, G or T)' % (text, match.group(2)))
    if not math.isfinite(number):
        raise ValueError('%r is not a finite size' % text)
    if int(number * scale) <= 0:  # 1e-9K: a budget of no bytes is none
        raise ValueError('%r must be above 0' % text)
    return int(number * scale)


class Tiling(NamedTuple):
    """The tiles of a height x width picture: rows x cols tiles of tile_height x tile_width,
    at fixed places (starts), neighbours overlapping by at least OVERLAP pixels."""
    height: int
    width: int
    tile_height: int
    tile_width: int
    row_starts: tuple   # the top row of each row of tiles
    col_starts: tuple   # the left column of each column of tiles

    @property
    def count(self):
        return len(self.row_starts) * len(self.col_starts)

    @property
    def tile_size(self):
        return self.tile_height, self.tile_width

    def tiles(self):
        """[(top, left), ...] row by row."""
        return [(top, left) for top in self.row_starts for left in self.col_starts]

    def pixel_share(self):
        """A tile's pixels over the picture's."""
        return self.tile_height * self.tile_width / (self.height * self.width)


def axis_starts(length, tile, count):
    """count starts of tiles of size tile spread evenly over length, the first at 0 and the
    last at length - tile."""
    if count == 1:
        return (0,)
    return tuple(int(round(k * (length - tile) / (count - 1))) for k in range(count))


def tile_side(length, count, overlap=OVERLAP):
    """The side of count tiles covering length with neighbours sharing overlap pixels."""
    if count == 1:
        return length
    return min(length, -(-(length + (count - 1) * overlap) // count))


def single_tile(height, width):
    """The tiling of one tile covering the whole picture."""
    return Tiling(height, width, height, width, (0,), (0,))


def plan_tiling(height, width, budget, tile_memory, overlap=OVERLAP):
    """The tiling of a height x width picture whose tiles fit the budget with the least work.

    tile_memory(tile_height, tile_width, tiles): the estimated peak bytes of the stage run in
    that many tiles of that size (everything included; tiles=1 for the picture whole).
    Among the tilings whose tile fits, the one with the fewest pixels
    computed per step (tiles x tile pixels), then the fewest tiles.
    Returns a Tiling (a single tile when the picture fits), or None when not even a tile of
    MIN_TILE x MIN_TILE pixels fits.
    """
    if tile_memory(height, width, 1) <= budget:
        return single_tile(height, width)
    max_rows = max(1, math.ceil((height - overlap) / (MIN_TILE - overlap)))
    max_cols = max(1, math.ceil((width - overlap) / (MIN_TILE - overlap)))
    if tile_memory(min(MIN_TILE, height), min(MIN_TILE, width), max_rows * max_cols) > budget:
        return None  # not even the smallest tiles
    best = None
    for rows in range(1, max_rows + 1):
        tile_height = tile_side(height, rows, overlap)
        if tile_height < min(MIN_TILE, height):
            break
        if best is not None and rows * tile_height * width >= best[0][0]:
            break  # more rows only add work: every column of tiles spans the width at least
        # The fewest columns whose tiles fit (a tile's memory falls as the columns grow).
        low, high = 1, max_cols + 1
        while low < high:
            cols = (low + high) // 2
            tile_width = tile_side(width, cols, overlap)
            if (tile_width >= min(MIN_TILE, width)
                    and tile_memory(tile_height, tile_width, rows * cols) <= budget):
                high = cols
            else:
                low = cols + 1
        if low > max_cols:
            continue
        tile_width = tile_side(width, low, overlap)
        if tile_width < min(MIN_TILE, width):
            continue
        work = (rows * tile_height * low * tile_width, rows * low)
        if best is None or work < best[0]:
            best = work, (rows, low, tile_height, tile_width)
    if best is None:
        return None
    rows, cols, tile_height, tile_width = best[1]
    return Tiling(height, width, tile_height, tile_width,
                  axis_starts(height, tile_height, rows), axis_starts(width, tile_width, cols))


def seam_places(starts, tile, rng):
    """Where the hand-over between each pair of neighbouring tiles is centred this step, drawn
    uniformly (rng: a numpy Generator) from the places that keep the ramp EDGE_MARGIN pixels
    away from both tiles' edges (the middle of the overlap when it is too narrow for that)."""
    places = []
    for left_start, right_start in zip(starts[:-1], starts[1:]):
        low = right_start + EDGE_MARGIN + RAMP / 2           # the right tile's first pixels
        high = left_start + tile - EDGE_MARGIN - RAMP / 2    # the left tile's last pixels
        if high <= low:
            places.append((right_start + left_start + tile) / 2)
        else:
            places.append(float(rng.uniform(low, high)))
    return places


def axis_weights(starts, tile, places):
    """The blending weight of each tile along one axis: [(tile,) float32, ...], summing to 1
    over the tiles at every position of the axis.

    Tile k's weight rises from 0 to 1 across a RAMP-wide ramp centred at places[k - 1] and falls
    back across the one at places[k]; away from the seams it is 1.
    """
    position = np.arange(tile, dtype=np.float64) + 0.5  # pixel centres, relative to the tile
    weights = []
    for k, start in enumerate(starts):
        weight = np.ones(tile)
        if k > 0:  # rises after the seam with the tile before
            weight *= np.clip((start + position - places[k - 1]) / RAMP + 0.5, 0, 1)
        if k < len(starts) - 1:  # falls before the seam with the tile after
            weight *= np.clip((places[k] - start - position) / RAMP + 0.5, 0, 1)
        weights.append(weight.astype(np.float32))
    return weights


def blend_weights(tiling, rng):
    """This step's blending weights: {(top, left): (tile_height, tile_width, 1) float32}, a
    partition of unity over the picture with the seams at random places (seam_places)."""
    rows = axis_weights(tiling.row_starts, tiling.tile_height,
                        seam_places(tiling.row_starts, tiling.tile_height, rng))
    cols = axis_weights(tiling.col_starts, tiling.tile_width,
                        seam_places(tiling.col_starts, tiling.tile_width, rng))
    # (th, 1) x (1, tw) -> (th, tw) -> (th, tw, 1)
    return {(top, left): (row[:, None] * col[None, :])[:, :, None]
            for top, row in zip(tiling.row_starts, rows)
            for left, col in zip(tiling.col_starts, cols)}


def owned_rows(length, starts, tile, factor):
    """The part of a feature map each tile owns along one axis, for summing Gram matrices.

    The picture is cut at the middle of each overlap; a tile's feature row i (factor pixels per
    row: 2^pools) belongs to it when its centre, start + factor * (i + 0.5), falls in its part.
    Returns [(tile_rows,) bool, ...], tile_rows = ceil(tile / factor).
    """
    cuts = [0] + [(b + a + tile) / 2 for a, b in zip(starts[:-1], starts[1:])] + [length]
    rows = -(-tile // factor)
    owned = []
    for k, start in enumerate(starts):
        centre = start + factor * (np.arange(rows) + 0.5)
        owned.append((centre >= cuts[k]) & (centre < cuts[k + 1]))
    return owned


def owned_masks(tiling, factor):
    """{(top, left): (1, rows, cols, 1) float32 mask} of the feature-map cells each tile owns
    at a layer factor pixels to a cell; every cell of the picture is owned once."""
    rows = owned_rows(tiling.height, tiling.row_starts, tiling.tile_height, factor)
    cols = owned_rows(tiling.width, tiling.col_starts, tiling.tile_width, factor)
    return {(top, left): (row[:, None] & col[None, :]).astype(np.float32)[None, :, :, None]
            for top, row in zip(tiling.row_starts, rows)
            for left, col in zip(tiling.col_starts, cols)}


def crop(image, top, left, tile_size):
    """The tile of image (1, H, W, C) at (top, left): (1, tile_height, tile_width, C)."""
    tile_height, tile_width = tile_size
    return image[:, top:top + tile_height, left:left + tile_width]


def border_contrast(image, tiling):
    """The seam statistic: the mean absolute difference between neighbouring pixels across the
    tiles' inner edges, over that across every pair of neighbouring pixels of image (1, H, W, C).
    About 1 when the tile edges do not show."""
    image = np.asarray(image, dtype=np.float64)[0]
    across_rows = np.abs(np.diff(image, axis=0))  # (H - 1, W, C): row y against y + 1
    across_cols = np.abs(np.diff(image, axis=1))  # (H, W - 1, C)
    edges_y = sorted({e for s in tiling.row_starts for e in (s, s + tiling.tile_height)}
                     - {0, tiling.height})
    edges_x = sorted({e for s in tiling.col_starts for e in (s, s + tiling.tile_width)}
                     - {0, tiling.width})
    at_edges = [across_rows[y - 1].ravel() for y in edges_y]
    at_edges += [across_cols[:, x - 1].ravel() for x in edges_x]
    if not at_edges:
        return 1.0
    overall = np.concatenate([across_rows.ravel(), across_cols.ravel()]).mean()
    return float(np.concatenate(at_edges).mean() / overall)
