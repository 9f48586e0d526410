"""Reproduce images/content.jpg from its public-domain source.

The source is ``grace_hopper.jpg`` from Matplotlib's sample data: the official U.S. Navy
portrait of Commodore Grace M. Hopper, USNR (20 January 1984, U.S. Naval History and Heritage
Command photo NH 96919-K(N)), a work of the U.S. federal government and therefore in the
public domain. See README.md in this folder.

The 512x600 portrait is cropped to a 4:3 landscape window (the top 512x384: full width, from
just above her cap down to the collar, face centred) and resized to 400x300 with Lanczos
resampling.

Usage (needs Pillow, plus Matplotlib unless --source is given):

    python images/make_content.py [--source PATH/TO/grace_hopper.jpg] [--output PATH]
"""

import argparse
import hashlib
import os
import sys

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = (400, 300)                    # width, height: CONFIG.IMAGE_WIDTH x CONFIG.IMAGE_HEIGHT
CROP_BOX = (0, 0, 512, 384)          # left, top, right, bottom in the 512x600 source (4:3)
# SHA-256 of grace_hopper.jpg as shipped in Matplotlib 3.11.2's sample data.
SOURCE_SHA256 = 'a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130'


def default_source():
    """The path of Matplotlib's copy of the photo."""
    from matplotlib import cbook
    return cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--source', help="grace_hopper.jpg (default: Matplotlib's sample data)")
    parser.add_argument('--output', default=os.path.join(HERE, 'content.jpg'))
    args = parser.parse_args(argv)

    source = args.source or default_source()
    with open(source, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != SOURCE_SHA256:
        print(f'warning: {source} differs from the expected file (sha256 {digest}); '
              'the result may not match the committed content.jpg', file=sys.stderr)

    with Image.open(source) as image:
        image = image.convert('RGB')
        if image.size != (512, 600):
            width, height = image.size
            sys.exit(f'error: expected a 512x600 image, {source} is {width}x{height}')
        content = image.crop(CROP_BOX).resize(SIZE, Image.Resampling.LANCZOS)

    content.save(args.output, quality=90, optimize=True)
    print(f'wrote {args.output} ({SIZE[0]}x{SIZE[1]}) from {source}')


if __name__ == '__main__':
    main()
