"""Generated test pictures, small image helpers and the course's constants shared by the
end-to-end tests. write_pictures writes the one set of input pictures every test module uses
(conftest.py's session fixture `pics`)."""
import re
from types import SimpleNamespace

import numpy as np
from PIL import Image

# The content picture's size (4:3, as the course's 400x300); runs at --width WIDTH keep it.
WIDTH, HEIGHT = 64, 48

# The course's mean pixel, written out (not read from nst_utils).
MEANS = np.array([123.68, 116.779, 103.939]).reshape((1, 1, 1, 3))

# The hidden temp file an image is written to before it is renamed (mkstemp's names):
# .<name>.<random><ext> in the same folder.
TEMP_NAME = re.compile(r'\.(?P<name>.+)\.[A-Za-z0-9_]{6,}(?P<ext>\.[a-z]+)$')

# The course prints, every 20 iterations:
#   print("Iteration " + str(i) + " :")
#   print("total cost = " + str(Jt))
#   print("content cost = " + str(Jc))
#   print("style cost = " + str(Js))
COURSE_BLOCK = re.compile(r'^Iteration (\d+) :\ntotal cost = (\S+)\ncontent cost = (\S+)\n'
                          r'style cost = (\S+)$', re.M)


def parse_blocks(stdout):
    """[(iteration, total, content, style)] of the course's printed blocks in stdout."""
    return [(int(i), float(t), float(c), float(s)) for i, t, c, s in COURSE_BLOCK.findall(stdout)]


def smooth_picture(width, height):
    """A smooth colour picture (gradients and a disc), pixels well inside 0..255."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / width, y / height
    picture = np.stack([110 + 60 * u + 20 * np.sin(2 * np.pi * v),
                        120 + 50 * v,
                        150 - 50 * u + 15 * np.cos(2 * np.pi * u)], axis=-1)
    picture[(u - 0.6) ** 2 + (v - 0.5) ** 2 < 0.05] = (170, 90, 80)
    return np.round(picture).astype(np.uint8)


def striped_picture(width, height, seed=0):
    """Saturated diagonal stripes in four colours: a strongly textured style."""
    palette = np.array([(230, 30, 30), (30, 200, 60), (40, 60, 220), (240, 220, 40)], np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    shift = np.random.default_rng(seed).integers(0, 4, size=height)[:, None]
    return palette[((x + y) // 3 + shift) % 4]


def checker_picture(width, height, square=6, colours=((250, 0, 250), (0, 250, 250))):
    """Squares of two colours, the first at the top-left corner."""
    y, x = np.mgrid[0:height, 0:width]
    first = ((x // square + y // square) % 2 == 0)[..., None]
    return np.where(first, np.array(colours[0]), np.array(colours[1])).astype(np.uint8)


def save_png(path, pixels):
    """Write pixels as a PNG at path; return the path as a str."""
    Image.fromarray(pixels).save(str(path))
    return str(path)


def read_rgb(path):
    """Decode a whole image file as (H, W, 3) uint8 RGB."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert('RGB'))


def block_means(pixels, size=8):
    """Mean colour of each size x size block: what JPEG keeps of a noisy image."""
    h, w = pixels.shape[0] // size * size, pixels.shape[1] // size * size
    blocks = pixels[:h, :w].astype(float).reshape(h // size, size, w // size, size, 3)
    return blocks.mean(axis=(1, 3))


def initial_picture(width, height):
    """A smooth start image unlike the content: flat red, green rising to the right, blue
    falling to the bottom."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.full((height, width), 30), 200 * x // width, 240 - 200 * y // height],
                    axis=-1).astype(np.uint8)


def write_pictures(folder):
    """The test inputs as PNG files in folder; returns their paths as attributes:

    content  WIDTH x HEIGHT smooth picture        style   80x60 stripes (4:3, another size)
    style2   40x90 checkerboard (portrait)         wide    200x100 smooth picture (2:1)
    tall     60x100 smooth picture (3:5)           initial WIDTH x HEIGHT start image
    """
    return SimpleNamespace(
        content=save_png(folder / 'content.png', smooth_picture(WIDTH, HEIGHT)),
        style=save_png(folder / 'style.png', striped_picture(80, 60)),
        style2=save_png(folder / 'style2.png', checker_picture(40, 90)),
        wide=save_png(folder / 'wide.png', smooth_picture(200, 100)),
        tall=save_png(folder / 'tall.png', smooth_picture(60, 100)),
        initial=save_png(folder / 'initial.png', initial_picture(WIDTH, HEIGHT)),
    )
