"""benchmarks/print_size.py: its worker runs one stage as the command line does and reports the
loop's time per iteration, the stage's tiling, its peak memory and the final image."""
import json
import os
import sys

import numpy as np

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'benchmarks')
if BENCHMARKS_DIR not in sys.path:
    sys.path.insert(0, BENCHMARKS_DIR)

import print_size  # noqa: E402
from nst import tiles  # noqa: E402

ITERATIONS = 3
WIDTH = 48


def test_worker_times_a_stage_of_the_command_line(tiny_vgg_file, pics, tmp_path, capsys):
    image_path = str(tmp_path / 'image.npy')
    arguments = ['--content', pics.content, '--style', pics.style, '--model', tiny_vgg_file,
                 '--no-download', '--no-tune', '--width', WIDTH, '--start-width', WIDTH,
                 '--seed', 1, '--no-progress', '--print-every', 0,
                 '--output-dir', tmp_path / 'out', '--iterations', ITERATIONS,
                 '--save-every', 0]
    print_size.worker(json.dumps({'arguments': [str(a) for a in arguments],
                                  'iterations': ITERATIONS, 'image': image_path}))
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report['seconds'] > 0
    assert report['peak_rss_bytes'] > 0
    tiling = tiles.Tiling(*report['tiling'])
    image = np.load(image_path)
    assert tiling.count == 1 and tiling.width == WIDTH
    assert image.shape == (1, tiling.height, tiling.width, 3)
    assert np.isfinite(image).all()
