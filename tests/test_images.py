"""nst.images: read_image on odd but valid image files (issue 5), and save_pixels's atomic,
permission-keeping writes and its one-line WriteError.

Every file is written here with Pillow in the mode under test (checked after writing, so a test
cannot pass on a file that silently became plain RGB), and the expected RGB pixels are computed
in the test from the definitions: grey g -> (g, g, g); alpha a over white -> c * a/255 +
255 * (1 - a/255); CMYK -> (255 - C)(255 - K)/255 ...; 16-bit v -> round(v * 255 / 65535); EXIF
orientation 6 / 8 -> the stored pixels turned 90 degrees clockwise / counter-clockwise, written
out index by index. Unreadable files, through the command line, are in test_cli.py.

Temporary files. Images are written to a hidden temp file `.<name>.<random><ext>` in the same
folder and renamed, so a process killed at any moment leaves either the old image or the new one
under the real name, never half an image.
"""

import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nst import images
from nst.errors import EXIT_FAILURE, ImageError, WriteError
from pictures import TEMP_NAME, read_rgb


def over_white(colour, alpha):
    """Colour channel composited with alpha (0..255) on a white background, as floats."""
    colour = np.asarray(colour, np.float64)
    alpha = np.asarray(alpha, np.float64) / 255.0
    return colour * alpha + 255.0 * (1.0 - alpha)


def assert_pixels(actual, expected, atol=1):
    """actual: what read_image returned; expected: floats or ints of shape (H, W, 3)."""
    expected = np.asarray(expected, np.float64)
    assert actual.dtype == np.uint8
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=0, atol=atol)


def save(image, path, mode, **options):
    image.save(path, **options)
    with Image.open(path) as check:
        assert check.mode == mode, 'the file is %s, not the %s under test' % (check.mode, mode)
    return str(path)


GREYS = np.array([[0, 1, 64, 127], [128, 200, 254, 255]], np.uint8)
ALPHAS = np.array([[0, 255, 128, 1], [254, 64, 0, 255]], np.uint8)


def test_a_picture_past_pillows_warning_size_reads_without_a_warning(tmp_path, monkeypatch,
                                                                    recwarn):
    """Pillow warns (two lines on stderr) above MAX_IMAGE_PIXELS and refuses above twice that;
    the warning is not the run's business (its memory check is). Here the limit is lowered to
    100 pixels, so a 12x12 picture (144) is past the warning and short of the refusal."""
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    path = str(tmp_path / 'big.png')
    Image.new('RGB', (12, 12), (10, 20, 30)).save(path)
    assert images.read_image(path).shape == (12, 12, 3)
    assert [str(w.message) for w in recwarn] == []
    Image.new('RGB', (15, 15)).save(path)  # 225 pixels: refused, as before
    with pytest.raises(ImageError, match='too large'):
        images.read_image(path)


def test_grayscale(tmp_path):
    path = save(Image.fromarray(GREYS, 'L'), tmp_path / 'grey.png', 'L')
    assert_pixels(images.read_image(path), np.repeat(GREYS[..., None], 3, axis=2), atol=0)


def test_grayscale_with_alpha_is_composited_on_white(tmp_path):
    path = save(Image.fromarray(np.dstack([GREYS, ALPHAS]), 'LA'), tmp_path / 'la.png', 'LA')
    expected = np.repeat(over_white(GREYS, ALPHAS)[..., None], 3, axis=2)
    actual = images.read_image(path)
    assert_pixels(actual, expected)
    # Fully transparent pixels are white whatever their grey; opaque ones keep it.
    assert tuple(actual[0, 0]) == (255, 255, 255)  # grey 0, alpha 0
    assert tuple(actual[1, 3]) == (255, 255, 255)  # grey 255, alpha 255


def test_rgba_is_composited_on_white(tmp_path):
    rgb = np.stack([GREYS, 255 - GREYS, np.full_like(GREYS, 30)], axis=2)
    path = save(Image.fromarray(np.dstack([rgb, ALPHAS]), 'RGBA'), tmp_path / 'rgba.png', 'RGBA')
    assert_pixels(images.read_image(path), over_white(rgb, ALPHAS[..., None]))


PALETTE = [(10, 20, 30), (200, 100, 50), (0, 255, 0), (9, 9, 9)]
INDICES = np.array([[0, 1, 2, 3, 3], [3, 2, 1, 0, 1]], np.uint8)


def palette_image():
    image = Image.fromarray(INDICES, 'P')
    image.putpalette([channel for colour in PALETTE for channel in colour])
    return image


@pytest.mark.parametrize('ext', ['png', 'gif', 'bmp'])
def test_palette_without_transparency(tmp_path, ext):
    path = save(palette_image(), tmp_path / ('p.' + ext), 'P')
    expected = np.array([[PALETTE[i] for i in row] for row in INDICES])
    assert_pixels(images.read_image(path), expected, atol=0)


def test_palette_with_transparency(tmp_path):
    # Index 0 fully transparent, index 1 half, 2 and 3 opaque (PNG tRNS per palette entry).
    alphas = (0, 128, 255, 255)
    image = palette_image()
    image.info['transparency'] = bytes(alphas)
    path = save(image, tmp_path / 'pt.png', 'P')
    with Image.open(path) as check:
        assert 'transparency' in check.info
    expected = np.array([[over_white(PALETTE[i], alphas[i]) for i in row] for row in INDICES])
    actual = images.read_image(path)
    assert_pixels(actual, expected)
    assert tuple(actual[0, 0]) == (255, 255, 255)  # not (10, 20, 30)


def test_palette_with_one_transparent_index_gif(tmp_path):
    image = palette_image()
    path = save(image, tmp_path / 'pt.gif', 'P', transparency=2)
    expected = np.array([[(255, 255, 255) if i == 2 else PALETTE[i] for i in row]
                         for row in INDICES])
    assert_pixels(images.read_image(path), expected, atol=0)


CMYK = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0]],
                 [[0, 0, 0, 255], [255, 128, 0, 100], [30, 60, 90, 120], [255, 255, 255, 255]]],
                np.uint8)


def cmyk_to_rgb(cmyk):
    """(255 - C)(255 - K)/255, (255 - M)(255 - K)/255, (255 - Y)(255 - K)/255."""
    cmyk = cmyk.astype(np.float64)
    return (255.0 - cmyk[..., :3]) * (255.0 - cmyk[..., 3:]) / 255.0


def test_cmyk_tiff(tmp_path):
    path = save(Image.fromarray(CMYK, 'CMYK'), tmp_path / 'cmyk.tif', 'CMYK')
    actual = images.read_image(path)
    assert_pixels(actual, cmyk_to_rgb(CMYK))
    assert tuple(actual[0, 1]) == (0, 255, 255)  # pure cyan
    assert tuple(actual[1, 0]) == (0, 0, 0)      # pure black


def test_cmyk_jpeg(tmp_path):
    # Flat 8x8 blocks (one JPEG block per colour) so the lossy coding keeps the colours.
    blocks = np.kron(CMYK, np.ones((8, 8, 1), np.uint8))
    path = save(Image.fromarray(blocks, 'CMYK'), tmp_path / 'cmyk.jpg', 'CMYK', quality=100)
    actual = images.read_image(path)
    assert actual.shape == (16, 32, 3)
    centres = actual[4::8, 4::8]
    assert_pixels(centres, cmyk_to_rgb(CMYK), atol=4)


SIXTEEN = np.array([[0, 1, 128, 257, 1000], [32768, 51400, 65280, 65534, 65535]], np.uint16)


def expected_sixteen():
    grey = np.array([[round(int(v) * 255 / 65535) for v in row] for row in SIXTEEN.tolist()])
    return np.repeat(grey[..., None], 3, axis=2)


def test_16_bit_grayscale_png(tmp_path):
    path = save(Image.fromarray(SIXTEEN), tmp_path / 'g16.png', 'I;16')
    actual = images.read_image(path)
    assert_pixels(actual, expected_sixteen(), atol=0)
    # Known pixels: scaled, not clipped at 255 (1000 would be 255) and rounded (3.89 -> 4).
    assert actual[0, 4, 0] == 4 and actual[1, 1, 0] == 200 and actual[1, 4, 0] == 255
    assert actual[0, 2, 0] == 0  # 128/65535 of full scale is black, not grey 128


def test_16_bit_grayscale_tiff_big_endian(tmp_path):
    image = Image.new('I;16B', (SIXTEEN.shape[1], SIXTEEN.shape[0]))
    image.putdata([int(v) for v in SIXTEEN.reshape(-1)])
    path = save(image, tmp_path / 'g16.tif', 'I;16B')
    assert_pixels(images.read_image(path), expected_sixteen(), atol=0)


RGB = np.random.default_rng(5).integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_bmp(tmp_path):
    path = save(Image.fromarray(RGB), tmp_path / 'rgb.bmp', 'RGB')
    assert_pixels(images.read_image(path), RGB, atol=0)


def test_webp_lossless(tmp_path):
    path = save(Image.fromarray(RGB), tmp_path / 'rgb.webp', 'RGB', lossless=True)
    assert_pixels(images.read_image(path), RGB, atol=0)


def test_webp_with_alpha(tmp_path):
    alpha = np.random.default_rng(6).integers(0, 256, RGB.shape[:2], dtype=np.uint8)
    path = save(Image.fromarray(np.dstack([RGB, alpha]), 'RGBA'), tmp_path / 'rgba.webp', 'RGBA',
                lossless=True, exact=True)
    assert_pixels(images.read_image(path), over_white(RGB, alpha[..., None]))


# ----------------------------------------------------------------------------------------------
# EXIF orientation
# ----------------------------------------------------------------------------------------------

RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)
UP_H, UP_W = 32, 48   # the upright picture: wider than high


def upright_picture():
    """48 wide x 32 high, grey, with a red 8x8 block at the top-left corner and a green one at
    the top-right (two marks: a transpose or a flip would move the green one elsewhere)."""
    picture = np.empty((UP_H, UP_W, 3), np.uint8)
    picture[:] = GREY
    picture[:8, :8] = RED
    picture[:8, -8:] = GREEN
    picture[-8:, 16:24] = BLUE
    return picture


def stored_for(orientation, upright):
    """The pixels a camera stores for an upright picture, written out from the EXIF definition.

    Orientation 6: the stored 0th row is the visual right-hand side and the stored 0th column the
    visual top (display turns the stored image 90 degrees clockwise): stored[r][c] =
    upright[c][W - 1 - r]. Orientation 8: the stored 0th row is the visual left-hand side and the
    0th column the visual bottom: stored[r][c] = upright[H - 1 - c][r].
    """
    height, width = upright.shape[:2]
    stored = np.empty((width, height, 3), np.uint8)
    for r in range(width):
        for c in range(height):
            if orientation == 6:
                stored[r, c] = upright[c, width - 1 - r]
            else:
                stored[r, c] = upright[height - 1 - c, r]
    return stored


@pytest.mark.parametrize('orientation', [6, 8])
def test_exif_rotated_jpeg_is_upright(tmp_path, orientation):
    upright = upright_picture()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = str(tmp_path / ('rotated%d.jpg' % orientation))
    Image.fromarray(stored_for(orientation, upright)).save(path, quality=95, exif=exif)
    with Image.open(path) as raw:
        assert raw.size == (UP_H, UP_W)  # stored sideways: 32 wide, 48 high
        assert raw.getexif().get(0x0112) == orientation

    actual = images.read_image(path)
    assert actual.shape == (UP_H, UP_W, 3)
    # The centres of the marks, with JPEG's tolerance.
    for (y, x), colour in (((4, 4), RED), ((4, UP_W - 5), GREEN), ((UP_H - 5, 20), BLUE),
                           ((16, 24), GREY)):
        np.testing.assert_allclose(actual[y, x].astype(int), colour, atol=40,
                                   err_msg='pixel (%d, %d)' % (y, x))
    # And everywhere, on average, close to the upright picture.
    assert np.abs(actual.astype(int) - upright.astype(int)).mean() < 8


# ----------------------------------------------------------------------------------------------
# Writing: atomic, with the usual permissions, or a one-line WriteError
# ----------------------------------------------------------------------------------------------

def test_saved_images_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the result must have the mode a plain
    open() gives, 0666 minus the umask."""
    for umask in (0o022, 0o077):
        old = os.umask(umask)
        try:
            path = tmp_path / ('%o.png' % umask)
            images.save_pixels(str(path), np.zeros((4, 5, 3), np.uint8))
        finally:
            os.umask(old)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


CRASH_WRITER = r'''
import io, os, signal, sys
import numpy as np
from PIL import Image
from nst import images

real_save = Image.Image.save

def dying_save(self, fp, format=None, **params):
    """Write the first half of the encoded image, then die as if by kill -9."""
    buffer = io.BytesIO()
    real_save(self, buffer, format=format, **params)
    data = buffer.getvalue()
    with open(fp, 'wb') as f:
        f.write(data[:len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

Image.Image.save = dying_save
images.save_pixels(sys.argv[1], np.full((20, 30, 3), 200, np.uint8))
'''


@pytest.mark.parametrize('previous', [False, True])
def test_process_killed_while_writing_leaves_only_whole_images(tmp_path, child_env, previous):
    """A process killed in the middle of writing an image (deterministically: the writer dies
    half-way) leaves the previous image, or none, under the real name, never a half image."""
    target = tmp_path / '7.png'
    if previous:
        Image.fromarray(np.full((20, 30, 3), 50, np.uint8)).save(target)
    process = subprocess.run([sys.executable, '-c', CRASH_WRITER, str(target)],
                             capture_output=True, timeout=60, env=child_env(), cwd=tmp_path)
    assert process.returncode == -signal.SIGKILL, process.stderr
    names = os.listdir(tmp_path)
    hidden = [name for name in names if name.startswith('.')]
    assert len(hidden) == 1, names  # the half-written temp file, hidden
    match = TEMP_NAME.fullmatch(hidden[0])
    assert match and match.group('name') == '7.png' and match.group('ext') == '.png'
    with pytest.raises(OSError):  # it really is half an image: the crash hit mid-write
        read_rgb(tmp_path / hidden[0])
    if previous:
        assert sorted(names) == sorted(hidden + ['7.png'])
        assert (read_rgb(target) == 50).all()
    else:
        assert names == hidden


def fail_to_encode(code):
    """A Pillow save that fails as the disk would, with OSError(code), half-way through."""
    def save(self, fp, format=None, **params):
        with open(fp, 'wb') as f:
            f.write(b'\x89PNG half an image')
        raise OSError(code, os.strerror(code))
    return save


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_failed_write_is_a_write_error_and_leaves_no_file(tmp_path, monkeypatch, code):
    """Disk full, quota exceeded, read-only file system: one-line WriteError naming the file and
    the cause, exit code 1 (a failure at run time, not bad input), the earlier image kept, and
    no temp file left behind."""
    target = tmp_path / '5.png'
    Image.fromarray(np.full((4, 5, 3), 50, np.uint8)).save(target)
    monkeypatch.setattr(Image.Image, 'save', fail_to_encode(code))
    with pytest.raises(WriteError) as info:
        images.save_pixels(str(target), np.zeros((4, 5, 3), np.uint8))
    message = str(info.value)
    assert '\n' not in message and str(target) in message
    assert os.strerror(code) in message
    assert info.value.exit_code == EXIT_FAILURE == 1
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ['5.png']
    assert (read_rgb(target) == 50).all()


def test_unknown_extension_is_refused_before_writing(tmp_path):
    with pytest.raises(ImageError, match="unknown image extension '.xyz'"):
        images.save_pixels(str(tmp_path / 'result.xyz'), np.zeros((4, 5, 3), np.uint8))
    assert os.listdir(tmp_path) == []
