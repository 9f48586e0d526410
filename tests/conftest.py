"""Shared test set-up: the project folder on sys.path, TensorFlow in TF1 graph mode (once), and
the generated VGG-19 weights files that several test modules only read (written once)."""
import os
import sys

import pytest

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

import nst_utils  # noqa: E402
import vgg_fixture  # noqa: E402

tf = nst_utils.import_tf()


@pytest.fixture(scope='session')
def tiny_vgg_file(tmp_path_factory):
    """Path of a tiny-width seed-0 file in the documented layout (43 layers, with fc).

    Shared by the whole session: tests that edit or damage a file write their own copy.
    The arrays written are vgg_fixture.weights_by_name(vgg_fixture.build_layers(seed=0)).
    """
    path = str(tmp_path_factory.mktemp('tiny-vgg') / 'imagenet-vgg-verydeep-19.mat')
    vgg_fixture.write_vgg19_mat(path, seed=0)
    return path


@pytest.fixture(scope='session')
def real_width_vgg_file(tmp_path_factory):
    """Path of a real-width file without the fc layers (about 80 MB), seed 0, written once.

    The arrays written are vgg_fixture.weights_by_name(vgg_fixture.build_layers(
    vgg_fixture.REAL_WIDTHS, with_fc=False)); they are not kept in memory here.
    """
    path = str(tmp_path_factory.mktemp('real') / 'vgg_conv.mat')
    vgg_fixture.write_vgg19_mat(path, widths=vgg_fixture.REAL_WIDTHS, with_fc=False)
    return path
