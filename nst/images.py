"""Image files in and out (Pillow): read any picture as RGB, resize, save atomically."""

import os
import warnings

import numpy as np

from nst.config import MEANS
from nst.errors import ImageError, WriteError, one_line
from nst.files import atomic_write


def read_image(path):
    """Read an image file as a (height, width, 3) uint8 RGB array, upright.

    Honours the EXIF orientation; grayscale, palette, CMYK and 16-bit images become RGB, and
    transparency is composited on white. Raises ImageError with a one-line message.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.exists(path):
        raise ImageError('%s: image file not found' % path)
    if os.path.isdir(path):
        raise ImageError('%s: is a directory, not an image file' % path)
    if os.path.getsize(path) == 0:
        raise ImageError('%s: image file is empty' % path)
    try:
        # Above 89 megapixels Pillow warns (two lines on stderr) before it refuses at 179; the
        # run's memory check judges what it can hold.
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return np.asarray(_to_rgb(image), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError('%s: not an image Pillow can read' % path) from None
    except Image.DecompressionBombError as error:  # not an OSError: would escape as a traceback
        raise ImageError('%s: too large to decode safely (%s)' % (path, one_line(error))) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError('%s: cannot be decoded (%s); the file may be truncated or damaged'
                         % (path, one_line(error))) from None


def _to_rgb(image):
    from PIL import Image

    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        # 16/32-bit grayscale: scale to 0-255 rather than letting convert() clip at 255.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 or image.mode.startswith('I;16') else 255.0
        # Rounded, not truncated: 1000 / 65535 * 255 = 3.89 is 4.
        image = Image.fromarray(np.rint(np.clip(values * 255.0 / top, 0, 255)).astype(np.uint8),
                                'L')
    if image.mode == 'P':
        image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
    if image.mode in ('LA', 'La', 'RGBA', 'RGBa', 'PA'):
        rgba = image.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert('RGB')


def resize_image(image, width, height):
    """Resize (h, w, 3) uint8 to exactly (height, width, 3) with Lanczos filtering."""
    from PIL import Image
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized)


def fit_image(image, width, height):
    """Scale (h, w, 3) uint8 to cover width x height, keeping its aspect, and centre-crop."""
    from PIL import Image, ImageOps
    if image.shape[:2] == (height, width):
        return image
    fitted = ImageOps.fit(Image.fromarray(image), (width, height), Image.Resampling.LANCZOS)
    return np.asarray(fitted)


def to_pixels(image):
    """(1, height, width, 3) mean-subtracted float -> (height, width, 3) uint8, clipped."""
    image = image + MEANS
    return np.clip(image[0], 0, 255).astype('uint8')  # (1, H, W, 3) -> (H, W, 3)


def save_pixels(path, pixels):
    """Save (height, width, 3) uint8 RGB atomically; the format follows the extension."""
    from PIL import Image

    format_name = _image_format(path)

    def write(temp_path):
        Image.fromarray(pixels).save(temp_path, format=format_name)

    try:
        atomic_write(path, write)
    except OSError as error:
        raise WriteError('%s: cannot be written (%s)' % (path, one_line(error))) from None


def transfer_luminance(generated, content):
    """Keep the luminance (Y) of generated and the colours (Cb, Cr) of content.

    Both (height, width, 3) uint8 RGB of the same size; returns the same. This is the
    "luminance-only transfer" of Gatys et al. (2016), done as a post-process in YCbCr.
    """
    from PIL import Image

    luma = np.asarray(Image.fromarray(generated).convert('YCbCr'))[..., :1]
    chroma = np.asarray(Image.fromarray(content).convert('YCbCr'))[..., 1:]
    ycbcr = np.concatenate([luma, chroma], axis=2)  # (H, W, 1) + (H, W, 2) -> (H, W, 3)
    return np.asarray(Image.fromarray(ycbcr, 'YCbCr').convert('RGB'))


def _image_format(path):
    from PIL import Image
    Image.init()
    extension = os.path.splitext(path)[1].lower()
    if extension not in Image.EXTENSION:
        raise ImageError('%s: unknown image extension %r' % (path, extension))
    return Image.EXTENSION[extension]
