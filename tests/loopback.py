"""A threaded HTTP server on 127.0.0.1 (a free port) that plays every server the downloader can
meet: the fixtures `server` and `loopback_only` of conftest.py use it.

Routes (SIZE bytes of PAYLOAD unless said otherwise):

    /good                the file, honouring `Range: bytes=N-` (206; 416 past the end)
    /wrong-bytes         a whole file of OTHER bytes (not the expected checksum)
    /missing             404
    /drop-once-ranged    the first response stops after CUT bytes; ranges honoured
    /drop-no-range       the first response stops after CUT bytes; ranges ignored (200 again)
    /always-drop         every response promises the whole file and stops after CUT bytes
    /error-once          500 the first time, then the file
    /chunked-drop-once   the first response is chunked and cut after CUT bytes

A TLS ClientHello on the port is answered in plain text and closed (so https:// fails with an
SSL error). Every request is recorded: server.requests() -> [(path, Range header, status)].
"""

import hashlib
import os
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SIZE = 300_007                      # a few hundred KB, not a multiple of the 64 KiB read size
CUT = 123_457                       # where dropped transfers stop (not chunk-aligned either)
PAYLOAD = random.Random(1).randbytes(SIZE)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
OTHER = random.Random(2).randbytes(SIZE)          # what /wrong-bytes serves
OTHER_SHA = hashlib.sha256(OTHER).hexdigest()


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
            '/error-always': lambda: self.fail(500, 'Internal Server Error'),
            '/drop-before-body': lambda: self.serve(PAYLOAD, ranges=False, cut=0),
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
