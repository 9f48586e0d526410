"""Tests of nst_utils.download_vgg_model against a threaded HTTP server on 127.0.0.1.

Nothing here touches the network: the server binds 127.0.0.1 on a free port, every URL the
downloader opens is checked to be on 127.0.0.1, and proxy settings are cleared so urllib
connects directly. time.sleep in nst_utils is replaced so retries are instant.
"""

import hashlib
import os
import random
import re
import socket
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nst_utils  # noqa: E402
from nst_utils import DownloadError  # noqa: E402

SIZE = 300_007                      # a few hundred KB, not a multiple of the 64 KiB read size
CUT = 123_457                       # where dropped transfers stop (not chunk-aligned either)
PAYLOAD = random.Random(1).randbytes(SIZE)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
OTHER = random.Random(2).randbytes(SIZE)          # what /wrong-bytes serves
OTHER_SHA = hashlib.sha256(OTHER).hexdigest()
TIMEOUT = 2
RETRIES = 3


# ----------------------------------------------------------------------------------------------
# The loopback server
# ----------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def handle(self):
        # A TLS ClientHello (first byte 0x16) on this plain-HTTP port: drain it, answer with
        # plain text and close, so the client fails with ssl.SSLError (used by the fallback test).
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if first == b'\x16':
            self.server.record('TLS', None, None)
            self.connection.settimeout(0.5)
            try:
                self.connection.recv(65536)
                self.wfile.write(b'HTTP/1.0 400 Bad Request\r\n\r\nplain HTTP only\r\n')
            except OSError:
                pass
            return
        super().handle()

    def do_GET(self):
        path = self.path
        count = self.server.count(path)
        behaviour = {
            '/good': lambda: self.serve(PAYLOAD),
            '/wrong-bytes': lambda: self.serve(OTHER),
            '/missing': lambda: self.fail(404, 'Not Found'),
            '/drop-once-ranged': lambda: self.serve(PAYLOAD, cut=CUT if count == 0 else None),
            '/drop-no-range': lambda: self.serve(PAYLOAD, ranges=False,
                                                 cut=CUT if count == 0 else None),
            '/always-drop': lambda: self.serve(PAYLOAD, ranges=False, cut=CUT),
            '/error-once': lambda: (self.fail(500, 'Internal Server Error') if count == 0
                                    else self.serve(PAYLOAD)),
            '/chunked-drop-once': lambda: (self.serve_chunked_cut(PAYLOAD, CUT) if count == 0
                                           else self.serve(PAYLOAD)),
        }.get(path)
        if behaviour is None:
            self.fail(404, 'Not Found')
        else:
            behaviour()
        self.close_connection = True

    def fail(self, code, reason):
        self.server.record(self.path, self.headers.get('Range'), code)
        body = reason.encode()
        self.send_response(code, reason)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(body)

    def serve(self, body, ranges=True, cut=None):
        """Send body (honouring `Range: bytes=N-` if ranges); stop after absolute offset cut."""
        header = self.headers.get('Range')
        start = 0
        if ranges and header:
            match = re.fullmatch(r'bytes=(\d+)-', header.strip())
            assert match, 'unexpected Range header %r' % header
            start = int(match.group(1))
            if start >= len(body):
                self.server.record(self.path, header, 416)
                self.send_response(416)
                self.send_header('Content-Range', 'bytes */%d' % len(body))
                self.send_header('Content-Length', '0')
                self.send_header('Connection', 'close')
                self.end_headers()
                return
            status = 206
        else:
            status = 200
        self.server.record(self.path, header, status)
        self.send_response(status)
        if status == 206:
            self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, len(body) - 1, len(body)))
        self.send_header('Content-Length', str(len(body) - start))  # always the full remainder
        self.send_header('Connection', 'close')
        self.end_headers()
        end = len(body) if cut is None else cut
        self.wfile.write(body[start:end])

    def serve_chunked_cut(self, body, cut):
        """A chunked response that closes after `cut` bytes without the terminating chunk."""
        self.server.record(self.path, self.headers.get('Range'), 200)
        self.send_response(200)
        self.send_header('Transfer-Encoding', 'chunked')
        self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(b'%x\r\n%s\r\n' % (cut, body[:cut]))


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(('127.0.0.1', 0), Handler)
        self.lock = threading.Lock()
        self.log = []       # (path, Range header or None, status, dest existed?, .part size)
        self.counts = {}
        self.dest = None    # set by the test: snapshot dest and dest.part at each request
        self.thread = threading.Thread(target=self.serve_forever, kwargs={'poll_interval': 0.01},
                                       daemon=True)
        self.thread.start()

    def url(self, path):
        return 'http://127.0.0.1:%d%s' % (self.server_address[1], path)

    def count(self, path):
        with self.lock:
            n = self.counts.get(path, 0)
            self.counts[path] = n + 1
            return n

    def record(self, path, range_header, status):
        dest_exists = part_size = None
        if self.dest is not None:
            dest_exists = os.path.exists(self.dest)
            part = self.dest + '.part'
            part_size = os.path.getsize(part) if os.path.exists(part) else None
        with self.lock:
            self.log.append((path, range_header, status, dest_exists, part_size))

    def requests(self):
        with self.lock:
            return [(path, rng, status) for path, rng, status, _, _ in self.log]

    def close(self):
        self.shutdown()
        self.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    srv = LoopbackServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No proxies, and every URL the downloader opens must be on 127.0.0.1."""
    for name in list(os.environ):
        if name.lower() in ('http_proxy', 'https_proxy', 'all_proxy', 'ftp_proxy'):
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


@pytest.fixture(autouse=True)
def sleeps(monkeypatch):
    """Retries are instant; the list records the back-off delays that were asked for."""
    calls = []
    monkeypatch.setattr(nst_utils.time, 'sleep', lambda seconds: calls.append(seconds))
    return calls


@pytest.fixture
def verifications(monkeypatch):
    """Spy on the checksum step: record, at that moment, whether dest exists and .part's size."""
    calls = []
    real = nst_utils.sha256_of_file

    def spy(path, *args, **kwargs):
        assert path.endswith('.part'), 'checksum must be taken of the .part file, not %s' % path
        dest = path[:-len('.part')]
        calls.append((os.path.exists(dest), os.path.getsize(path)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nst_utils, 'sha256_of_file', spy)
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
    return nst_utils.download_vgg_model(**options)


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
