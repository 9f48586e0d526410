"""Shared test set-up: the project folder on sys.path, no tuning measurements, TensorFlow in TF1
graph mode (once), and the fixtures several test modules share:

    tiny_vgg_file, real_width_vgg_file   generated VGG-19 weights files (nst/synthetic.py,
                                         written once); tiny_vgg: the tiny file and its arrays
    pics                                 the input pictures (tests/pictures.py, written once)
    child_env                            the environment of a subprocess run
    server, loopback_only, sleeps        the loopback HTTP server (tests/loopback.py) and a
                                         downloader that can reach nothing else and never waits
    meminfo_available                    this machine's MemAvailable
"""
import os
import sys
import urllib.parse
import urllib.request

import pytest

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PROJECT_DIR not in sys.path:
    sys.path.insert(0, PROJECT_DIR)

# No tuning measurement in tests (a few seconds each, and a cache file in the home folder): the
# built-in fast paths run. The tuning tests turn it on where they need it.
os.environ['NST_TUNE'] = '0'

from nst import download  # noqa: E402
from nst import synthetic  # noqa: E402
from nst.runtime import import_tf  # noqa: E402

from loopback import LoopbackServer  # noqa: E402
from pictures import write_pictures  # noqa: E402

tf = import_tf()

PROXY_VARIABLES = ('http_proxy', 'https_proxy', 'all_proxy', 'ftp_proxy')


# ----------------------------------------------------------------------------------------------
# Weights and pictures
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def tiny_vgg_file(tmp_path_factory):
    """Path of a tiny-width seed-0 file in the documented layout (43 layers, with fc).

    Shared by the whole session: tests that edit or damage a file write their own copy.
    The arrays written are synthetic.weights_by_name(synthetic.build_layers(seed=0)).
    """
    path = str(tmp_path_factory.mktemp('tiny-vgg') / 'imagenet-vgg-verydeep-19.mat')
    synthetic.write_vgg19_mat(path, seed=0)
    return path


@pytest.fixture(scope='session')
def tiny_vgg(tiny_vgg_file):
    """(path, {name: (W, b)}): tiny_vgg_file and the conv and fc arrays written to it, as
    written (W (3, 3, in, out), b (out, 1)), rebuilt from the seed rather than read."""
    return tiny_vgg_file, synthetic.weights_by_name(synthetic.build_layers(seed=0))


@pytest.fixture(scope='session')
def real_width_vgg_file(tmp_path_factory):
    """Path of a real-width file without the fc layers (about 80 MB), seed 0, written once.

    The arrays written are synthetic.weights_by_name(synthetic.build_layers(
    synthetic.REAL_WIDTHS, with_fc=False)); they are not kept in memory here.
    """
    path = str(tmp_path_factory.mktemp('real') / 'vgg_conv.mat')
    synthetic.write_vgg19_mat(path, widths=synthetic.REAL_WIDTHS, with_fc=False)
    return path


@pytest.fixture(scope='session')
def pics(tmp_path_factory):
    """The input pictures of the runs (pictures.write_pictures): content, style, style2, wide,
    tall and initial, paths as str."""
    return write_pictures(tmp_path_factory.mktemp('pics'))


# ----------------------------------------------------------------------------------------------
# Subprocesses
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def child_env():
    """child_env(**extra): the environment of a `python art_generation.py ...` subprocess, as a
    user's shell would give it (stdout block-buffered in a pipe), with the project importable,
    no tuning, TensorFlow's log off, no proxy and no mirror of the weights; extra on top."""
    def make(**extra):
        env = {name: value for name, value in os.environ.items()
               if name.lower() not in PROXY_VARIABLES + ('no_proxy',)}
        for name in ('PYTHONUNBUFFERED', 'NST_VGG_URL'):
            env.pop(name, None)
        env['PYTHONPATH'] = os.pathsep.join(
            [PROJECT_DIR] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
        env.update(NST_TUNE='0', TF_CPP_MIN_LOG_LEVEL='3', no_proxy='*', NO_PROXY='*')
        env.update(extra)
        return env
    return make


# ----------------------------------------------------------------------------------------------
# The loopback HTTP server
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def server():
    """A LoopbackServer (tests/loopback.py) on 127.0.0.1, closed after the test."""
    srv = LoopbackServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def loopback_only(monkeypatch):
    """No proxies, and every URL opened in this process must be on 127.0.0.1."""
    for name in list(os.environ):
        if name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv('no_proxy', '*')
    monkeypatch.setenv('NO_PROXY', '*')
    real_urlopen = urllib.request.urlopen

    def guarded_urlopen(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        host = urllib.parse.urlsplit(url).hostname
        assert host == '127.0.0.1', 'test tried to open a non-loopback URL: %s' % url
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, 'urlopen', guarded_urlopen)


@pytest.fixture
def sleeps(monkeypatch):
    """Retries are instant; the list records the back-off delays the downloader asked for."""
    calls = []
    monkeypatch.setattr(download.time, 'sleep', lambda seconds: calls.append(seconds))
    return calls


# ----------------------------------------------------------------------------------------------
# This machine
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def meminfo_available():
    """MemAvailable of /proc/meminfo in bytes (the test is skipped where there is none)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    pytest.skip('no MemAvailable in /proc/meminfo')
