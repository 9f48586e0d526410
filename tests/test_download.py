"""Tests of nst.download (download_vgg_model, sha256_of_file) against the threaded HTTP server
on 127.0.0.1 of tests/loopback.py.

Nothing here touches the network: the server binds 127.0.0.1 on a free port, every URL the
downloader opens is checked to be on 127.0.0.1, and proxy settings are cleared so urllib
connects directly (conftest.py's loopback_only). time.sleep in nst.download is replaced so
retries are instant (conftest.py's sleeps).
"""

import hashlib
import os

import pytest

from nst import download as nst_download
from nst.errors import DownloadError

from loopback import CUT, OTHER, OTHER_SHA, PAYLOAD, PAYLOAD_SHA, SIZE

TIMEOUT = 2
RETRIES = 3

# Every test: only the loopback server (conftest.py) can be reached, and no retry waits.
pytestmark = pytest.mark.usefixtures('loopback_only', 'sleeps')


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def verifications(monkeypatch):
    """Spy on the checksum step: record, at that moment, whether dest exists and .part's size."""
    calls = []
    real = nst_download.sha256_of_file

    def spy(path, *args, **kwargs):
        assert path.endswith('.part'), 'checksum must be taken of the .part file, not %s' % path
        dest = path[:-len('.part')]
        calls.append((os.path.exists(dest), os.path.getsize(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nst_download, 'sha256_of_file', spy)
    return calls


@pytest.fixture
def dest(tmp_path, server):
    # A folder that does not exist yet: the downloader must create it.
    path = str(tmp_path / 'pretrained-model' / 'vgg.mat')
    server.dest = path
    return path


def download(server, dest, path, **kwargs):
    options = dict(dest=dest, url=server.url(path), sha256=PAYLOAD_SHA, retries=RETRIES,
                   timeout=TIMEOUT, progress=False)
    options.update(kwargs)
    return nst_download.download_vgg_model(**options)


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def assert_payload(path):
    data = read(path)
    assert len(data) == SIZE
    assert hashlib.sha256(data).hexdigest() == PAYLOAD_SHA
    assert data == PAYLOAD


def assert_one_line(error):
    message = str(error)
    assert message and '\n' not in message and '\r' not in message


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------

def test_good_download(server, dest, sleeps, verifications):
    result = download(server, dest, '/good')
    assert result == dest
    assert_payload(dest)
    assert not os.path.exists(dest + '.part')
    assert server.requests() == [('/good', None, 200)]
    assert sleeps == []
    # Verified exactly once, on the complete .part, while dest did not exist yet.
    assert verifications == [(False, SIZE)]


def test_wrong_checksum_is_refused(server, dest, verifications):
    with pytest.raises(DownloadError) as info:
        download(server, dest, '/wrong-bytes')
    message = str(info.value)
    assert_one_line(info.value)
    assert 'SHA-256' in message
    assert PAYLOAD_SHA in message and OTHER_SHA in message      # expected and actual
    assert message.index(OTHER_SHA) < message.index(PAYLOAD_SHA)  # "has <actual>, expected <x>"
    assert server.url('/wrong-bytes') in message
    assert not os.path.exists(dest)
    assert not os.path.exists(dest + '.part')
    assert verifications == [(False, SIZE)]
    assert os.listdir(os.path.dirname(dest)) == []               # no stray temp files either


def test_existing_dest_is_not_replaced_by_wrong_bytes(server, dest):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, 'wb') as f:
        f.write(b'previous file')
    with pytest.raises(DownloadError, match='SHA-256'):
        download(server, dest, '/wrong-bytes')
    assert read(dest) == b'previous file'
    assert not os.path.exists(dest + '.part')


@pytest.mark.parametrize('route, error', [('/error-always', 'HTTP 500'),
                                          ('/drop-before-body', 'connection closed after 0')])
def test_a_failure_before_any_byte_does_not_speak_of_partial_data(server, dest, sleeps, route,
                                                                 error):
    """A server that fails every attempt before a byte of the body arrives (an error status,
    or headers and then nothing): the message says nothing was saved, not that partial data
    was kept, and no empty .part is left."""
    with pytest.raises(DownloadError) as info:
        download(server, dest, route)
    message = str(info.value)
    assert 'after %d attempts: %s' % (1 + RETRIES, error) in message
    assert_one_line(info.value)
    assert 'nothing was saved' in message and 'partial data' not in message
    assert not os.path.exists(dest) and not os.path.exists(dest + '.part')


def test_404_fails_at_once(server, dest, sleeps):
    url = server.url('/missing')
    with pytest.raises(DownloadError) as info:
        download(server, dest, '/missing')
    message = str(info.value)
    assert_one_line(info.value)
    assert '404' in message and url in message
    assert not os.path.exists(dest)
    assert not os.path.exists(dest + '.part')
    assert server.requests() == [('/missing', None, 404)]        # not retried
    assert sleeps == []


def test_server_error_is_retried(server, dest, sleeps):
    assert download(server, dest, '/error-once') == dest
    assert_payload(dest)
    assert server.requests() == [('/error-once', None, 500), ('/error-once', None, 200)]
    assert sleeps == [1]


def test_dropped_transfer_resumes_with_range(server, dest, sleeps, verifications):
    assert download(server, dest, '/drop-once-ranged') == dest
    assert_payload(dest)
    assert not os.path.exists(dest + '.part')
    # Resumed at exactly the byte where the first transfer stopped, not restarted from 0.
    assert server.requests() == [('/drop-once-ranged', None, 200),
                                 ('/drop-once-ranged', 'bytes=%d-' % CUT, 206)]
    # At the second request the .part held the first CUT bytes and dest did not exist.
    assert [entry[3:] for entry in server.log] == [(False, None), (False, CUT)]
    assert sleeps == [1]
    assert verifications == [(False, SIZE)]


def test_dropped_transfer_restarts_when_ranges_unsupported(server, dest, sleeps, verifications):
    assert download(server, dest, '/drop-no-range') == dest
    # The server ignored the Range and sent the whole file again: the .part must be rewritten
    # from zero, not appended to (that would give CUT + SIZE bytes).
    assert_payload(dest)
    assert not os.path.exists(dest + '.part')
    assert server.requests() == [('/drop-no-range', None, 200),
                                 ('/drop-no-range', 'bytes=%d-' % CUT, 200)]
    assert [entry[3:] for entry in server.log] == [(False, None), (False, CUT)]
    assert sleeps == [1]
    assert verifications == [(False, SIZE)]


def test_always_dropping_server_fails(server, dest, sleeps, verifications):
    url = server.url('/always-drop')
    with pytest.raises(DownloadError) as info:
        download(server, dest, '/always-drop')
    message = str(info.value)
    assert_one_line(info.value)
    assert url in message
    assert 'after %d attempts' % (1 + RETRIES) in message
    assert 'connection closed after %d of %d bytes' % (CUT, SIZE) in message
    assert dest + '.part' in message                      # tells where the partial data is
    assert not os.path.exists(dest)
    # The partial data is kept for a later resume, and it is a true prefix of the file.
    assert read(dest + '.part') == PAYLOAD[:CUT]
    assert len(server.requests()) == 1 + RETRIES
    assert all(entry[3] is False for entry in server.log)  # dest never appeared meanwhile
    assert sleeps == [1, 2, 4]                              # exponential back-off
    assert verifications == []                              # never verified, never renamed


def test_part_from_earlier_run_is_resumed(server, dest, verifications):
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    have = 70_001
    with open(dest + '.part', 'wb') as f:
        f.write(PAYLOAD[:have])
    assert download(server, dest, '/good') == dest
    assert_payload(dest)
    assert not os.path.exists(dest + '.part')
    assert server.requests() == [('/good', 'bytes=%d-' % have, 206)]
    assert verifications == [(False, SIZE)]


def test_partial_then_always_drop_then_resume(server, dest):
    """An interrupted run leaves a .part that a later run completes with a ranged request."""
    with pytest.raises(DownloadError):
        download(server, dest, '/always-drop', retries=0)
    assert not os.path.exists(dest)
    assert read(dest + '.part') == PAYLOAD[:CUT]
    assert download(server, dest, '/good') == dest
    assert_payload(dest)
    assert server.requests()[-1] == ('/good', 'bytes=%d-' % CUT, 206)


def test_complete_part_is_verified_and_moved(server, dest, verifications):
    # The .part already holds the whole file: the server answers the range with 416.
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest + '.part', 'wb') as f:
        f.write(PAYLOAD)
    assert download(server, dest, '/good') == dest
    assert_payload(dest)
    assert not os.path.exists(dest + '.part')
    assert server.requests() == [('/good', 'bytes=%d-' % SIZE, 416)]
    assert verifications == [(False, SIZE)]


def test_stale_part_with_wrong_bytes_is_discarded(server, dest):
    # A .part of some other file: resuming gives wrong bytes, which the checksum refuses.
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest + '.part', 'wb') as f:
        f.write(OTHER[:CUT])
    with pytest.raises(DownloadError, match='SHA-256') as info:
        download(server, dest, '/good')
    assert_one_line(info.value)
    assert not os.path.exists(dest)
    assert not os.path.exists(dest + '.part')
    # The next run starts from zero and succeeds.
    assert download(server, dest, '/good') == dest
    assert_payload(dest)


def test_tls_failure_falls_back_to_plain_http(server, dest, sleeps):
    port = server.server_address[1]
    result = download(server, dest, '/good', url='https://127.0.0.1:%d/good' % port,
                      fallback_url=server.url('/good'))
    assert result == dest
    assert_payload(dest)
    assert server.requests() == [('TLS', None, None), ('/good', None, 200)]
    assert sleeps == []


def test_dropped_chunked_transfer_resumes(server, dest, sleeps):
    assert download(server, dest, '/chunked-drop-once') == dest
    assert_payload(dest)
    # http.client keeps the bytes of the interrupted read inside the IncompleteRead, so the .part
    # may hold fewer than CUT bytes; the resume must start at exactly what the .part holds.
    (_, _, _, _, none), (_, _, _, _, have) = server.log
    assert none is None and have is not None and 0 < have <= CUT
    assert server.requests() == [('/chunked-drop-once', None, 200),
                                 ('/chunked-drop-once', 'bytes=%d-' % have, 206)]
    assert sleeps == [1]


def test_the_weights_file_is_documented_where_it_goes():
    """pretrained-model/README.md names the address and checksum the downloader uses."""
    from nst import config
    readme = os.path.join(config.PROJECT_DIR, 'pretrained-model', 'README.md')
    with open(readme, encoding='utf-8') as f:
        text = f.read()
    assert config.VGG_URL in text and config.VGG_SHA256 in text
    # The downloader's defaults are those.
    assert (nst_download.VGG_URL, nst_download.VGG_SHA256) == (config.VGG_URL, config.VGG_SHA256)
    assert 'CC BY 4.0' in text
