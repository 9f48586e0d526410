"""Download the VGG-19 weights: resumable, verified by SHA-256, never a half file in place."""

import hashlib
import os
import sys
import time

from nst.config import VGG_FALLBACK_URL, VGG_MODEL, VGG_SHA256, VGG_URL
from nst.errors import DownloadError


def sha256_of_file(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_into(url, part_path, timeout, progress):
    """Append the bytes of url to part_path, resuming after what part_path already holds.

    Returns normally once the server has sent the whole file; raises OSError (URLError,
    HTTPError, a timeout or a short read) otherwise.
    """
    import urllib.error
    import urllib.request

    have = os.path.getsize(part_path) if os.path.exists(part_path) else 0
    request = urllib.request.Request(url, headers={'User-Agent': 'nst-port/1.0'})
    if have:
        request.add_header('Range', 'bytes=%d-' % have)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the range starts at the end: the file is complete
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        length = response.headers.get('Content-Length')
        total = have + int(length) if length is not None else None
        with open(part_path, 'ab' if have else 'wb') as out:
            bar = _progress_bar(total, have, os.path.basename(url), progress)
            try:
                received = have
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
    if total is not None and received < total:
        raise OSError('connection closed after %d of %d bytes' % (received, total))


def _progress_bar(total, initial, name, enabled):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit='B', unit_scale=True, unit_divisor=1024,
                desc=name, disable=not enabled, file=sys.stderr)


def download_vgg_model(dest=None, url=VGG_URL, sha256=VGG_SHA256, retries=3, timeout=60,
                       progress=True, fallback_url=None):
    """Download the VGG-19 weights to dest, verified by SHA-256.

    The bytes go to dest + '.part' first; only a file whose checksum matches is renamed to dest,
    so dest never holds a partial or wrong file. A dropped transfer is retried up to `retries`
    times and resumes where the server supports HTTP ranges. When url is the official https
    address and its certificate fails, the plain-http address is tried (the checksum guarantees
    the bytes either way). Raises DownloadError with a one-line message on failure.
    """
    import http.client
    import ssl
    import urllib.error

    dest = dest or VGG_MODEL
    if fallback_url is None and url == VGG_URL:
        fallback_url = VGG_FALLBACK_URL
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part_path = dest + '.part'
    last_error = None
    unreachable = False  # the last attempt could not connect at all
    for attempt in range(1 + retries):
        unreachable = False
        try:
            _fetch_into(url, part_path, timeout, progress)
            last_error = None
            break
        except urllib.error.HTTPError as error:
            # 4xx will not change by retrying; say so at once.
            if 400 <= error.code < 500:
                _remove(part_path)
                raise DownloadError('download of %s failed: HTTP %d %s'
                                    % (url, error.code, error.reason)) from None
            last_error = 'HTTP %d %s' % (error.code, error.reason)
        except urllib.error.URLError as error:
            if isinstance(error.reason, ssl.SSLError) and fallback_url:
                url, fallback_url = fallback_url, None
                last_error = 'TLS error: %s' % error.reason
                continue
            last_error = str(error.reason)
            unreachable = True
        except (OSError, ValueError, http.client.HTTPException) as error:
            # timeouts, resets, short reads, a chunked transfer cut off (IncompleteRead)
            last_error = str(error) or type(error).__name__
        if attempt < retries:
            time.sleep(min(2 ** attempt, 10))
    if unreachable and not os.path.exists(part_path):
        raise DownloadError('%s cannot be reached (%s; offline?)' % (url, last_error),
                            offline=True)
    if last_error is not None:
        if os.path.exists(part_path) and os.path.getsize(part_path) == 0:
            _remove(part_path)  # dropped after the headers: nothing to resume from
        kept = (' (partial data kept in %s; run again to resume)' % part_path
                if os.path.exists(part_path) else '; nothing was saved')
        raise DownloadError('download of %s failed after %d attempts: %s%s'
                            % (url, 1 + retries, last_error, kept))
    actual = sha256_of_file(part_path)
    if sha256 and actual != sha256:
        _remove(part_path)
        raise DownloadError('download of %s has SHA-256 %s, expected %s; nothing was saved'
                            % (url, actual, sha256))
    os.replace(part_path, dest)
    return dest


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
