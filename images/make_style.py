"""Generate images/style.jpg: a painterly brush-stroke texture in a Van-Gogh-like palette.

Thousands of short strokes follow a swirling vector field (a few vortices on top of a slow
wavy drift), in three layers from broad underpainting to fine highlights. Each stroke is
drawn three times -- a dark shadow, the paint colour and a thin light ridge -- so it reads
as thick paint. The picture is drawn at 2x and downsampled with Lanczos for smooth edges.

Only numpy and Pillow are needed; a fixed seed makes the output the same on every run.

Usage:

    python images/make_style.py [--output PATH] [--seed N]
"""

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
WIDTH, HEIGHT = 400, 300            # CONFIG.IMAGE_WIDTH x CONFIG.IMAGE_HEIGHT
SCALE = 2                           # supersampling factor
W, H = WIDTH * SCALE, HEIGHT * SCALE

# Night-sky blues, with cream, yellow and orange for the glowing swirls.
BLUES = np.array([
    (10, 20, 58), (26, 50, 120), (42, 92, 170), (78, 132, 200), (128, 176, 214), (186, 214, 220),
], dtype=float)
GLOW = np.array([(252, 240, 186), (246, 206, 70), (236, 160, 40), (206, 98, 30)], dtype=float)

# Vortices: centre (x, y as fractions of the picture), radius (fraction of width), turn sign.
VORTICES = [
    ((0.22, 0.30), 0.16, +1),
    ((0.62, 0.42), 0.20, -1),
    ((0.88, 0.18), 0.11, +1),
    ((0.40, 0.80), 0.14, +1),
    ((0.85, 0.78), 0.12, -1),
]
# Bright "stars": centre (fractions) and radius (fraction of width).
STARS = [((0.22, 0.30), 0.075), ((0.88, 0.18), 0.070), ((0.50, 0.12), 0.040),
         ((0.08, 0.72), 0.050), ((0.67, 0.66), 0.040), ((0.35, 0.55), 0.025)]


def smooth_noise(rng, cells, shape=(H, W)):
    """Smooth random field in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.random((cells * shape[0] // shape[1] + 2, cells + 2)).astype(np.float32)
    image = Image.fromarray(grid).resize(shape[::-1], Image.Resampling.BICUBIC)
    field = np.asarray(image)
    field = field - field.min()
    return field / field.max()


def flow_field(rng):
    """Unit direction vectors (H, W, 2) of the swirling field the strokes follow."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    # Slow wavy drift to the right, bent by smooth noise.
    angle = 0.6 * np.sin(2 * np.pi * y / H * 1.5) + 1.6 * (smooth_noise(rng, 4) - 0.5)
    vx, vy = np.cos(angle), np.sin(angle)
    for (cx, cy), radius, sign in VORTICES:
        dx, dy = x - cx * W, y - cy * H
        r = radius * W
        weight = 3.0 * np.exp(-(dx ** 2 + dy ** 2) / (2 * r ** 2))
        dist = np.hypot(dx, dy) + 1e-6
        # Tangential direction around the centre, slightly spiralling inwards.
        tx, ty = -sign * dy / dist - 0.25 * dx / dist, sign * dx / dist - 0.25 * dy / dist
        vx, vy = vx + weight * tx, vy + weight * ty
    norm = np.hypot(vx, vy) + 1e-9
    return np.stack([vx / norm, vy / norm], axis=-1)


def colour_field(rng):
    """RGB colour (H, W, 3) that a stroke starting at each pixel picks up."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    # Blues: darker towards the bottom, varied by noise.
    t = 0.55 * smooth_noise(rng, 6) + 0.45 * smooth_noise(rng, 14) - 0.35 * (y / H - 0.4)
    # Pale bands spiralling round each vortex make the swirls stand out.
    for (cx, cy), radius, sign in VORTICES:
        dx, dy = x - cx * W, y - cy * H
        d = np.hypot(dx, dy) / (radius * W)
        spiral = np.cos(2 * np.pi * d * 1.6 + sign * np.arctan2(dy, dx))
        t = t + 0.45 * np.exp(-((d - 0.9) / 0.45) ** 2) * np.clip(spiral, 0, 1)
    t = np.clip(t, 0, 0.999) * (len(BLUES) - 1)
    i = t.astype(int)
    f = (t - i)[..., None]
    colour = BLUES[i] * (1 - f) + BLUES[i + 1] * f
    # Glow: concentric rings of cream -> yellow -> orange around each star, fading out.
    glow = np.zeros((H, W))
    ring = np.zeros((H, W))
    for (cx, cy), radius in STARS:
        d = np.hypot(x - cx * W, y - cy * H) / (radius * W)
        g = np.exp(-d ** 2 / 2.5)
        ring = np.where(g > glow, d, ring)
        glow = np.maximum(glow, g)
    k = np.clip(ring / 2.2, 0, 0.999) * (len(GLOW) - 1)
    j = k.astype(int)
    glow_colour = GLOW[j] * (1 - (k - j))[..., None] + GLOW[j + 1] * (k - j)[..., None]
    # A steep ramp keeps the glow's edge crisp instead of a muddy blue-orange blend; the
    # ripple breaks it into bands, like paint laid in rings.
    mix = np.clip((glow - 0.25) * 3.0, 0, 1) * (0.8 + 0.2 * np.cos(ring * 7.0))
    mix = mix[..., None]
    return colour * (1 - mix) + glow_colour * mix


def trace(starts, field, length, step):
    """Follow the field from each start point; returns paths of shape (n, length, 2)."""
    paths = np.empty((len(starts), length, 2))
    p = starts.astype(np.float64)
    for k in range(length):
        paths[:, k] = p
        ix = np.clip(p[:, 0].astype(int), 0, W - 1)
        iy = np.clip(p[:, 1].astype(int), 0, H - 1)
        p = p + step * field[iy, ix]
    return paths


def shade(rgb, factor):
    """Darken (factor < 1) or lighten towards white (factor > 1) an RGB colour."""
    rgb = np.asarray(rgb, dtype=float)
    if factor < 1:
        rgb = rgb * factor
    else:
        rgb = rgb + (255 - rgb) * (factor - 1)
    return tuple(int(c) for c in np.clip(rgb, 0, 255))


def paint_layer(draw, rng, field, colours, count, length, step, width, jitter):
    """Paint `count` strokes of about `length * step` pixels and `width` pixels wide."""
    starts = rng.random((count, 2)) * [W, H]
    lengths = rng.integers(length // 2, length + 1, size=count)
    paths = trace(starts, field, length, step)
    for path, n, (sx, sy) in zip(paths, lengths, starts.astype(int)):
        base = colours[sy, sx] * (1 + jitter * rng.standard_normal()) + 7 * rng.standard_normal(3)
        w = max(2, int(width * rng.uniform(0.7, 1.3)))
        points = [tuple(q) for q in path[:n]]
        shadow = [(px + 1.5, py + 1.5) for px, py in points]
        ridge = [(px - 0.1 * w, py - 0.1 * w) for px, py in points]
        draw.line(shadow, fill=shade(base, 0.65), width=w, joint='curve')
        draw.line(points, fill=shade(base, 1.0), width=w, joint='curve')
        draw.line(ridge, fill=shade(base, 1.25), width=max(1, w // 3), joint='curve')


def make_style(seed=1889):
    rng = np.random.default_rng(seed)
    field = flow_field(rng)
    colours = colour_field(rng)

    canvas = Image.fromarray(np.uint8(np.clip(colours * 0.8, 0, 255)))
    draw = ImageDraw.Draw(canvas)
    # count, length (points), step (px between points), width (px), colour jitter
    for count, length, step, width, jitter in [
        (1800, 10, 6.0, 18, 0.10),   # broad underpainting
        (5000, 8, 4.5, 10, 0.12),    # main strokes
        (5000, 6, 3.5, 5, 0.15),     # fine strokes and highlights
    ]:
        paint_layer(draw, rng, field, colours, count, length, step, width, jitter)

    return canvas.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--output', default=os.path.join(HERE, 'style.jpg'))
    parser.add_argument('--seed', type=int, default=1889)
    args = parser.parse_args(argv)
    make_style(args.seed).save(args.output, quality=90, optimize=True)
    print(f'wrote {args.output} ({WIDTH}x{HEIGHT}, seed {args.seed})')


if __name__ == '__main__':
    main()
