"""Configuration, VGG-19 weights (download, verify, read), image I/O and the VGG graph.

A modern port of the deeplearning.ai helper module of the same name. The public names and
signatures of the course (CONFIG, load_vgg_model, generate_noise_image,
reshape_and_normalize_image, save_image) are kept so the notebook's code runs unchanged.

Importing this module is cheap: TensorFlow, SciPy and Pillow are imported inside the functions
that need them.
"""

import hashlib
import math
import os
import sys
import tempfile
import time

import numpy as np

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))


def _project_path(relative):
    """Paths in CONFIG resolve against the project folder, not the current directory."""
    return os.path.join(PROJECT_DIR, relative)


class CONFIG:
    IMAGE_WIDTH = 400
    IMAGE_HEIGHT = 300
    COLOR_CHANNELS = 3
    NOISE_RATIO = 0.6
    # The ImageNet mean pixel (RGB) that VGG-19 was trained with; shaped to broadcast over
    # a (1, height, width, 3) batch.
    MEANS = np.array([123.68, 116.779, 103.939]).reshape((1, 1, 1, 3))
    VGG_MODEL = _project_path('pretrained-model/imagenet-vgg-verydeep-19.mat')
    STYLE_IMAGE = _project_path('images/style.jpg')
    CONTENT_IMAGE = _project_path('images/content.jpg')
    OUTPUT_DIR = _project_path('output/')


VGG_URL = 'https://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat'
# The site's TLS certificate has lapsed before; the SHA-256 check is what guarantees the file,
# so plain HTTP is an acceptable fallback.
VGG_FALLBACK_URL = 'http://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat'
VGG_SHA256 = 'abdb57167f82a2a1fbab1e1c16ad9373411883f262a1a37ee5db2e6fb0044695'

# The 43 layers of MatConvNet's imagenet-vgg-verydeep-19.mat, in file order.
VGG19_LAYERS = (
    'conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1',
    'conv2_1', 'relu2_1', 'conv2_2', 'relu2_2', 'pool2',
    'conv3_1', 'relu3_1', 'conv3_2', 'relu3_2', 'conv3_3', 'relu3_3', 'conv3_4', 'relu3_4', 'pool3',
    'conv4_1', 'relu4_1', 'conv4_2', 'relu4_2', 'conv4_3', 'relu4_3', 'conv4_4', 'relu4_4', 'pool4',
    'conv5_1', 'relu5_1', 'conv5_2', 'relu5_2', 'conv5_3', 'relu5_3', 'conv5_4', 'relu5_4', 'pool5',
    'fc6', 'relu6', 'fc7', 'relu7', 'fc8', 'prob',
)
# The convolutional part the course uses: conv layers (file index 0, 2, 5, ..., 34) and the
# five pools (index 4, 9, 18, 27, 36), which the course replaces by average pooling.
VGG19_CONV_LAYERS = tuple(name for name in VGG19_LAYERS[:37] if name.startswith('conv'))
VGG19_POOL_LAYERS = tuple(name for name in VGG19_LAYERS[:37] if name.startswith('pool'))


class NSTError(Exception):
    """A problem the user can fix; the message is one line naming the file or option."""


class WeightsError(NSTError):
    """The weights file is missing, damaged or not the MatConvNet VGG-19 file."""


class ImageError(NSTError):
    """An image cannot be read or written."""


class DownloadError(NSTError):
    """The weights could not be downloaded or did not verify.

    offline: no connection to the server could be made at all (no network, DNS, refused).
    """

    def __init__(self, message, offline=False):
        super().__init__(message)
        self.offline = offline


def import_tf():
    """Import tensorflow.compat.v1 in TF1 graph mode, with TensorFlow's start-up log silenced.

    Set TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's own log again.
    """
    if 'tensorflow' not in sys.modules:
        os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
        quiet = os.environ['TF_CPP_MIN_LOG_LEVEL'] == '3'
        # Some C++ start-up lines are printed before TensorFlow reads TF_CPP_MIN_LOG_LEVEL,
        # so stderr itself is muted for the import (Python exceptions still propagate).
        with _muted_stderr(quiet):
            import tensorflow
        tensorflow.get_logger().setLevel('ERROR')  # deprecation notices of compat.v1
    import tensorflow.compat.v1 as tf
    if tf.executing_eagerly():
        tf.disable_v2_behavior()
    return tf


class _muted_stderr:
    """Point file descriptor 2 at /dev/null for the duration of a with block."""

    def __init__(self, enabled=True):
        self.enabled = enabled

    def __enter__(self):
        if self.enabled:
            sys.stderr.flush()
            self.saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)

    def __exit__(self, *exc):
        if self.enabled:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


# ----------------------------------------------------------------------------------------------
# Atomic file writing
# ----------------------------------------------------------------------------------------------

def atomic_write(path, write):
    """Call write(temp_path), then rename the temp file to path.

    The temp file sits in the same folder (a rename is atomic only within one file system), so
    a process killed at any moment leaves either the old file or the new one, never half of one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]  # keeps the format recognisable to writers that need it
    fd, temp_path = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix=suffix,
                                     dir=folder)
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)
        write(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


# ----------------------------------------------------------------------------------------------
# Weights: download and verify
# ----------------------------------------------------------------------------------------------

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

    dest = dest or CONFIG.VGG_MODEL
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
        raise DownloadError('download of %s failed after %d attempts: %s (partial data kept in %s;'
                            ' run again to resume)' % (url, 1 + retries, last_error, part_path))
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


# ----------------------------------------------------------------------------------------------
# Weights: a streaming reader for MATLAB v5 MAT-files
# ----------------------------------------------------------------------------------------------
# scipy.io.loadmat reads whole variables: for imagenet-vgg-verydeep-19.mat that is all 550 MB
# (fc6 alone is 411 MB) although the course needs only layers 0..36 (about 80 MB), which come
# first in the `layers` cell array. read_mat_cells reads the first elements of a top-level cell
# array and stops there. Format: MathWorks "MAT-File Format" (Level 5), as written by MATLAB and
# by scipy.io.savemat: a 128-byte header, then one element per variable, miMATRIX or miCOMPRESSED
# (zlib) holding a miMATRIX; 8-byte tags (or 4-byte "small" tags), data padded to 8 bytes except
# after compressed elements.

class MatFormatError(ValueError):
    """A MAT-file this reader cannot read: not v5, truncated, damaged or unsupported (one line)."""


class MatNotCellError(MatFormatError):
    """The variable read_mat_cells was asked for is not a cell array."""


_MAT_HEADER_BYTES = 128
_MI_MATRIX = 14
_MI_COMPRESSED = 15
# Stored data types (miINT8 ... miUINT64) as NumPy type codes; the byte order is added per file.
_MI_DTYPES = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4', 7: 'f4', 9: 'f8',
              12: 'i8', 13: 'u8'}
_MX_CELL, _MX_STRUCT, _MX_CHAR = 1, 2, 4
# Numeric array classes (mxDOUBLE_CLASS ... mxUINT64_CLASS): the dtype MATLAB has in memory.
_MX_DTYPES = {6: 'f8', 7: 'f4', 8: 'i1', 9: 'u1', 10: 'i2', 11: 'u2', 12: 'i4', 13: 'u4',
              14: 'i8', 15: 'u8'}
_MX_UNSUPPORTED = {3: 'object', 5: 'sparse', 16: 'function handle', 17: 'opaque object'}
# zlib expands at most about 1032:1; bounds the size a compressed variable may claim.
_ZLIB_MAX_RATIO = 1032


def read_mat_cells(path, variable='layers', count=None):
    """The first `count` elements (all if None) of the top-level cell array `variable`.

    Reads a MATLAB v5 MAT-file (compressed or not) up to the last element asked for and no
    further: other variables are skipped by their byte counts, and the rest of the cell array is
    neither read nor decompressed. Elements come in MATLAB's linear (column-major) order; with
    count larger than the cell array, all its elements are returned.
    Values: a 1x1 struct is a dict {field: value} in field order (other struct arrays: object
    arrays of such dicts, MATLAB's dims); numeric arrays have MATLAB's dims and the dtype of their
    MATLAB class (logical -> bool), whatever smaller type the file stores them in; a char array
    is a str (several rows: an array of str); a cell is an object array; an empty element
    ([] written as a bare tag) is an empty float64 array of shape (0, 0).
    Raises MatFormatError (path not included) for what it cannot read, OSError for I/O errors.
    """
    if count is not None and count < 0:
        raise ValueError('count must be >= 0, not %r' % (count,))
    with open(path, 'rb') as f:
        header, reader = _mat_find_variable(f, variable)
        if header.cls != _MX_CELL:
            raise MatNotCellError('variable %r is a %s array, not a cell array'
                                 % (variable, _mat_class_name(header.cls)))
        total = math.prod(header.dims)
        wanted = total if count is None else min(count, total)
        return [reader.matrix(header.end) for _ in range(wanted)]


def read_mat_variable(path, variable):
    """One whole top-level variable, converted as in read_mat_cells (a cell: an object array).

    Variables stored before it are skipped by their byte counts; those after it are not read.
    """
    with open(path, 'rb') as f:
        header, reader = _mat_find_variable(f, variable)
        return reader.body(header)


def _mat_find_variable(f, variable):
    """(header, reader) of the top-level variable named `variable` in the open file; the ones
    before it are skipped by their byte counts."""
    names = []
    for header, reader in _mat_variables(f):
        if header.name == variable:
            return header, reader
        names.append(header.name)
    raise MatFormatError('no variable named %r (variables: %s)'
                         % (variable, ', '.join(names) or 'none'))


def mat_variable_names(path):
    """The names of the top-level variables, in file order (reads only their headers)."""
    with open(path, 'rb') as f:
        return [header.name for header, _ in _mat_variables(f)]


def mat_file_truncated(path):
    """True if the MAT-file is shorter than its header and element tags say (a cut download).

    Reads only the header and the tag of each top-level variable (seeking over the data), so it
    is cheap. A complete file is False, compressed or not. Raises MatFormatError if the bytes
    that are there are not a v5 MAT-file (or a top-level tag is not a variable's).
    """
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_MAT_HEADER_BYTES)
        if len(head) < _MAT_HEADER_BYTES:
            if b'MATLAB'.startswith(head[:6]):
                return True
            _mat_check_header(head, size)  # raises: not a MAT-file
        f.seek(0)
        end = _MAT_HEADER_BYTES
        try:
            for pos, _, nbytes, _ in _mat_top_elements(f):
                end = pos + 8 + nbytes
        except _MatPartialTag:
            return True
        return end > size


_MX_NAMES = {_MX_CELL: 'cell', _MX_STRUCT: 'struct', _MX_CHAR: 'char', 6: 'double', 7: 'single',
             8: 'int8', 9: 'uint8', 10: 'int16', 11: 'uint16', 12: 'int32', 13: 'uint32',
             14: 'int64', 15: 'uint64', **_MX_UNSUPPORTED}


def _mat_class_name(cls):
    return _MX_NAMES.get(cls, 'unknown class %d' % cls)


def _mat_check_header(head, size):
    """Check the 128-byte header; return the byte order, '<' or '>'."""
    if size == 0:
        raise MatFormatError('empty file, not a MAT-file')
    if len(head) < _MAT_HEADER_BYTES:
        if b'MATLAB'.startswith(head[:6]):
            raise MatFormatError('truncated at byte %d (inside the %d-byte MAT-file header)'
                                 % (size, _MAT_HEADER_BYTES))
        raise MatFormatError('not a MATLAB v5 MAT-file (starts with %r)' % head[:16])
    if head[126:128] == b'IM':
        order = '<'
    elif head[126:128] == b'MI':
        order = '>'
    else:
        raise MatFormatError('not a MATLAB v5 MAT-file (starts with %r)' % head[:16])
    version = int.from_bytes(head[124:126], 'little' if order == '<' else 'big')
    if version == 0x0200 or head.startswith(b'MATLAB 7.3'):
        raise MatFormatError('MATLAB v7.3 (HDF5) MAT-file; only v5/v7 MAT-files can be read')
    if version != 0x0100:
        raise MatFormatError('not a MATLAB v5 MAT-file (version field 0x%04x)' % version)
    return order


def _mat_top_tag(raw, order, pos):
    byteorder = 'little' if order == '<' else 'big'
    mdtype = int.from_bytes(raw[:4], byteorder)
    if mdtype not in (_MI_MATRIX, _MI_COMPRESSED):
        raise MatFormatError('unexpected element type %d at offset %d (expected a variable: '
                             'miMATRIX 14 or miCOMPRESSED 15)' % (mdtype, pos))
    return mdtype, int.from_bytes(raw[4:8], byteorder)


class _MatPartialTag(MatFormatError):
    """The file ends inside a top-level tag."""


def _mat_top_elements(f):
    """Yield (pos, mdtype, nbytes, order) for each top-level element of the file open at its
    start, seeking over the data. Stops at the end of the file or at the zero padding after the
    last element; raises _MatPartialTag if the file ends inside a tag."""
    size = os.fstat(f.fileno()).st_size
    order = _mat_check_header(f.read(_MAT_HEADER_BYTES), size)
    pos = _MAT_HEADER_BYTES
    while pos < size:
        f.seek(pos)
        raw = f.read(8)
        if len(raw) < 8:
            if raw.strip(b'\0'):
                raise _MatPartialTag('truncated at byte %d (a variable tag at offset %d)'
                                     % (size, pos))
            return  # zero padding after the last element
        mdtype, nbytes = _mat_top_tag(raw, order, pos)
        yield pos, mdtype, nbytes, order
        pos += 8 + nbytes


def _mat_variables(f):
    """Yield (header, reader) for each top-level variable of the open file, in order.

    The reader is positioned after the header's array name. The next variable is found from the
    top-level tag's byte count, whatever was read of this one.
    """
    size = os.fstat(f.fileno()).st_size
    for pos, mdtype, nbytes, order in _mat_top_elements(f):
        following = pos + 8 + nbytes
        if mdtype == _MI_MATRIX:
            reader = _MatReader(_MatFileSource(f, size, pos), order)
            end = following
        else:
            reader = _MatReader(_MatZlibSource(f, pos, nbytes), order)
            end = _ZLIB_MAX_RATIO * nbytes + 64
        header = reader.header(end)
        if header is not None:  # a variable written as a bare tag has no name: skip it
            yield header, reader


class _MatFileSource:
    """Reads an uncompressed part of the file; positions are file offsets."""

    def __init__(self, f, size, pos):
        self._f = f
        self._size = size
        self.pos = pos
        f.seek(pos)

    def where(self, pos):
        return 'offset %d' % pos

    def need(self, n):
        """Raise MatFormatError now if the file ends before n more bytes."""
        if self.pos + n > self._size:
            raise MatFormatError('truncated at byte %d (%d bytes needed at offset %d)'
                                 % (self._size, n, self.pos))

    def read(self, n):
        self.need(n)
        data = self._f.read(n)
        if len(data) != n:
            raise MatFormatError('truncated at byte %d (%d bytes needed at offset %d)'
                                 % (self.pos + len(data), n, self.pos))
        self.pos += n
        return data

    def readinto(self, view):
        n = len(view)
        self.need(n)
        done = 0
        while done < n:
            got = self._f.readinto(view[done:])
            if not got:
                raise MatFormatError('truncated at byte %d (%d bytes needed at offset %d)'
                                     % (self.pos + done, n, self.pos))
            done += got
        self.pos += n

    def skip(self, n):
        self.need(n)
        self._f.seek(n, 1)
        self.pos += n


class _MatZlibSource:
    """Decompresses a miCOMPRESSED element on demand; positions count decompressed bytes.

    Compressed input is read in chunks and output is produced only as far as it is asked for
    (zlib's max_length), so nothing after the last element read is decompressed.
    """

    _IN_CHUNK = 1 << 17
    _OUT_MIN = 1 << 16

    def __init__(self, f, pos, nbytes):
        import zlib

        self._zlib_error = zlib.error
        self._z = zlib.decompressobj()
        self._f = f
        self._offset = pos
        self._in_pos = pos + 8
        self._in_end = pos + 8 + nbytes
        self._pending = b''
        self._pending_pos = 0
        self.pos = 0

    def where(self, pos):
        return 'byte %d of the variable compressed at offset %d' % (pos, self._offset)

    def need(self, n):
        pass  # the decompressed size is known only by decompressing

    def _more(self, max_length):
        """Up to max_length (> 0) more decompressed bytes, at least one."""
        while True:
            data = self._z.unconsumed_tail
            if not data:
                if self._z.eof:
                    raise MatFormatError('the compressed data at offset %d ends after %d bytes '
                                         'but its elements need more (damaged file)'
                                         % (self._offset, self.pos + len(self._pending)))
                want = min(self._IN_CHUNK, self._in_end - self._in_pos)
                if want <= 0:
                    raise MatFormatError('the compressed variable at offset %d ends before its '
                                         'data does (damaged file)' % self._offset)
                self._f.seek(self._in_pos)
                data = self._f.read(want)
                if not data:
                    raise MatFormatError('truncated at byte %d (inside the compressed variable '
                                         'at offset %d, which declares %d bytes)'
                                         % (self._in_pos, self._offset,
                                            self._in_end - self._offset - 8))
                self._in_pos += len(data)
            try:
                out = self._z.decompress(data, max_length)
            except self._zlib_error as error:
                raise MatFormatError('damaged compressed data in the variable at offset %d '
                                     '(zlib: %s)' % (self._offset, error)) from None
            if out:
                return out

    def read(self, n):
        start = self._pending_pos
        if len(self._pending) - start >= n:
            self._pending_pos += n
            self.pos += n
            return self._pending[start:start + n]
        parts = [self._pending[start:]]
        have = len(parts[0])
        while have < n:
            out = self._more(max(n - have, self._OUT_MIN))
            take = min(len(out), n - have)
            parts.append(out[:take] if take < len(out) else out)
            have += take
        self._pending = out
        self._pending_pos = take
        self.pos += n
        return b''.join(parts)

    def readinto(self, view):
        n = len(view)
        start = self._pending_pos
        done = min(n, len(self._pending) - start)
        view[:done] = self._pending[start:start + done]
        self._pending_pos += done
        while done < n:
            out = self._more(n - done)  # at most what is still needed: nothing is left over
            view[done:done + len(out)] = out
            done += len(out)
        self.pos += n

    def skip(self, n):
        left = n - min(n, len(self._pending) - self._pending_pos)
        self._pending_pos += n - left
        while left:
            left -= len(self._more(min(left, 1 << 20)))
        self.pos += n


class _MatHeader:
    """A miMATRIX element's header: class, flags, dims and name; end = where its data ends."""

    __slots__ = ('offset', 'end', 'cls', 'complex', 'logical', 'dims', 'name')


class _MatReader:
    """Parses miMATRIX elements from a source (_MatFileSource or _MatZlibSource)."""

    def __init__(self, source, order):
        self.src = source
        self.order = order
        self.byteorder = 'little' if order == '<' else 'big'

    def error(self, pos, what):
        return MatFormatError('%s at %s' % (what, self.src.where(pos)))

    def tag(self, end):
        """(type, byte count, data of a small element or None, offset) of the next element."""
        offset = self.src.pos
        raw = self.src.read(8)
        word = int.from_bytes(raw[:4], self.byteorder)
        if word >> 16:  # small data element: byte count and type in 4 bytes, data in the next 4
            nbytes = word >> 16
            if nbytes > 4:
                raise self.error(offset, 'bad small data element (%d bytes)' % nbytes)
            small = raw[4:4 + nbytes]
            word &= 0xFFFF
        else:
            nbytes = int.from_bytes(raw[4:8], self.byteorder)
            small = None
            if offset + 8 + nbytes > end:
                raise self.error(offset, 'element of %d bytes overrunning its enclosing element '
                                 '(which ends at %s)' % (nbytes, self.src.where(end)))
        return word, nbytes, small, offset

    def _pad(self, nbytes, end):
        pad = min(-nbytes % 8, end - self.src.pos)
        if pad > 0:
            self.src.skip(pad)

    def element(self, end):
        """(type, bytes, offset) of a small element: flags, dims, names, characters."""
        mdtype, nbytes, small, offset = self.tag(end)
        if small is not None:
            return mdtype, small, offset
        data = self.src.read(nbytes)
        self._pad(nbytes, end)
        return mdtype, data, offset

    def numbers(self, end, count, what):
        """A numeric element of `count` values, as a 1-D array of its stored type."""
        mdtype, nbytes, small, offset = self.tag(end)
        code = _MI_DTYPES.get(mdtype)
        if code is None:
            raise self.error(offset, 'unexpected element type %d for %s' % (mdtype, what))
        dtype = np.dtype(self.order + code)
        if nbytes != count * dtype.itemsize:
            raise self.error(offset, '%s of %d bytes for %d values of %d bytes'
                             % (what, nbytes, count, dtype.itemsize))
        if small is not None:
            return np.frombuffer(bytearray(small), dtype)
        self.src.need(nbytes)  # a damaged byte count fails here, not in a huge allocation
        buffer = np.empty(nbytes, np.uint8)
        self.src.readinto(memoryview(buffer))
        self._pad(nbytes, end)
        return buffer.view(dtype)

    def header(self, end):
        """Read a miMATRIX tag and its header; None for an empty element (a bare tag)."""
        mdtype, nbytes, small, offset = self.tag(end)
        if mdtype != _MI_MATRIX:
            raise self.error(offset, 'unexpected element type %d (expected miMATRIX %d)'
                             % (mdtype, _MI_MATRIX))
        if nbytes == 0:
            return None
        if small is not None:
            raise self.error(offset, 'miMATRIX in a small data element')
        header = _MatHeader()
        header.offset = offset
        header.end = end = offset + 8 + nbytes
        mdtype, flags, at = self.element(end)
        if mdtype not in (5, 6) or len(flags) != 8:
            raise self.error(at, 'bad array flags (type %d, %d bytes)' % (mdtype, len(flags)))
        word = int.from_bytes(flags[:4], self.byteorder)
        header.cls = word & 0xFF
        header.complex = bool(word & 0x800)
        header.logical = bool(word & 0x200)
        mdtype, dims, at = self.element(end)
        if mdtype not in (5, 6) or len(dims) % 4:
            raise self.error(at, 'bad dimensions (type %d, %d bytes)' % (mdtype, len(dims)))
        header.dims = tuple(int(d) for d in np.frombuffer(dims, self.order + 'i4'))
        if any(d < 0 for d in header.dims):
            raise self.error(at, 'negative dimensions %s' % (header.dims,))
        mdtype, name, at = self.element(end)
        if mdtype not in (1, 2, 16):
            raise self.error(at, 'unexpected element type %d for an array name' % mdtype)
        try:
            header.name = name.decode('utf-8')
        except UnicodeDecodeError:
            header.name = name.decode('latin-1')
        return header

    def matrix(self, end):
        """Read one whole miMATRIX element (within end) and return its value."""
        header = self.header(end)
        if header is None:
            return np.empty((0, 0))
        return self.body(header)

    def body(self, header):
        """The value of the array whose header was just read; leaves the source at its end."""
        cls, dims, end = header.cls, header.dims, header.end
        count = math.prod(dims)
        if header.cls in _MX_DTYPES:
            value = self.numeric(header, count)
        elif cls == _MX_CHAR:
            value = self.chars(header, count)
        elif cls == _MX_CELL:
            value = self.objects([self.matrix(end) for _ in range(count)], dims)
        elif cls == _MX_STRUCT:
            fields = self.field_names(end)
            records = [{field: self.matrix(end) for field in fields} for _ in range(count)]
            value = records[0] if count == 1 else self.objects(records, dims)
        else:
            raise self.error(header.offset, 'unsupported MATLAB class %s (%d)'
                             % (_MX_UNSUPPORTED.get(cls, 'unknown'), cls))
        left = end - self.src.pos
        if left < 0:
            raise self.error(header.offset, 'array contents overrunning the element')
        if left:
            self.src.skip(left)
        return value

    def numeric(self, header, count):
        dtype = np.dtype(_MX_DTYPES[header.cls])
        value = self.numbers(header.end, count, 'array data')
        if value.dtype != dtype:  # stored in a smaller type, or the other byte order
            value = value.astype(dtype)
        if header.complex:
            imag = self.numbers(header.end, count, 'imaginary part')
            both = np.empty(count, np.result_type(dtype, np.complex64))
            both.real = value
            both.imag = imag
            value = both
        if header.logical:
            value = value.astype(bool)
        return value.reshape(header.dims, order='F')

    def chars(self, header, count):
        mdtype, data, at = self.element(header.end)
        codecs = {1: 'latin-1', 2: 'latin-1', 16: 'utf-8'}
        if self.order == '<':
            codecs.update({4: 'utf-32-le', 17: 'utf-16-le', 18: 'utf-32-le'})
        else:
            codecs.update({4: 'utf-32-be', 17: 'utf-16-be', 18: 'utf-32-be'})
        if mdtype not in codecs:
            raise self.error(at, 'unexpected element type %d for characters' % mdtype)
        if mdtype == 4:  # miUINT16: one UTF-16 code unit per character
            if len(data) % 2:
                raise self.error(at, 'odd byte count %d for 16-bit characters' % len(data))
            data = np.frombuffer(data, self.order + 'u2').astype(self.order + 'u4').tobytes()
        try:
            text = data.decode(codecs[mdtype], 'surrogatepass')
        except UnicodeDecodeError as error:
            raise self.error(at, 'undecodable characters (%s)' % error) from None
        dims = header.dims
        rows = math.prod(dims[:-1])
        if count == 0:
            return ''
        if not data:
            text = ' ' * count  # MATLAB may write a blank char array with no data
        if rows == 1 and mdtype in (16, 17):
            return text  # the count is in UTF-16 code units, not in characters
        if len(text) != count:
            raise self.error(at, '%d characters for a char array of dims %s'
                             % (len(text), dims))
        if rows == 1:
            return text
        chars = np.array(list(text)).reshape(dims, order='F').reshape(rows, dims[-1])
        return np.array([''.join(row) for row in chars]).reshape(dims[:-1])

    def field_names(self, end):
        mdtype, data, at = self.element(end)
        if mdtype not in (5, 6) or len(data) != 4:
            raise self.error(at, 'bad field name length (type %d, %d bytes)'
                             % (mdtype, len(data)))
        length = int.from_bytes(data, self.byteorder)
        mdtype, names, at = self.element(end)
        if mdtype not in (1, 2) or (length and len(names) % length) or (names and not length):
            raise self.error(at, 'bad field names (type %d, %d bytes of %d-byte names)'
                             % (mdtype, len(names), length))
        fields = []
        seen = {}
        for i in range(0, len(names), length or 1):
            field = names[i:i + length].split(b'\0', 1)[0].decode('latin-1')
            if field in seen:  # a repeated name gets a prefix, as scipy.io.loadmat does
                seen[field] += 1
                field = '_%d_%s' % (seen[field] - 1, field)
            else:
                seen[field] = 1
            fields.append(field)
        return fields

    @staticmethod
    def objects(items, dims):
        array = np.empty(len(items), dtype=object)
        for i, item in enumerate(items):
            array[i] = item
        return array.reshape(dims, order='F')


# ----------------------------------------------------------------------------------------------
# Weights: read the MatConvNet file
# ----------------------------------------------------------------------------------------------

def read_vgg_weights(path, layers=VGG19_CONV_LAYERS):
    """Read the conv kernels and biases of MatConvNet's imagenet-vgg-verydeep-19.mat.

    Returns {name: (W, b)} with W float32 (3, 3, in, out) as stored (no transpose, as in the
    course) and b float32 (out,). Only the layer structs up to the deepest of `layers` are read
    (for all 16 conv layers: conv1_1 ... conv5_4, about 80 MB); the fully connected layers after
    them never are. Fields are read by name, so their order in the struct does not matter.
    Raises WeightsError with a one-line message when the file is not that file.
    """
    if not os.path.exists(path):
        raise WeightsError('%s: weights file not found' % path)
    if os.path.isdir(path):
        raise WeightsError('%s: is a directory, not a weights file' % path)
    with open(path, 'rb') as f:
        head = f.read(128)
    if not head.startswith(b'MATLAB 5.0 MAT-file'):
        what = 'an HTML page' if head.lstrip()[:1] == b'<' else (
            'empty' if not head else 'not a MATLAB v5 .mat file')
        raise WeightsError('%s: %s; expected MatConvNet imagenet-vgg-verydeep-19.mat '
                           '(delete it and download %s)' % (path, what, VGG_URL))
    damaged = ('%s: cannot be read (%%s); the file may be truncated or damaged, delete it and '
               'download %s again' % (path, VGG_URL))
    try:
        # The tags of the top-level variables give their sizes: a cut-off download shows here
        # even though the layers we read come first.
        if mat_file_truncated(path):
            raise MatFormatError('the file is shorter than its contents say')
        names = mat_variable_names(path)
        if 'normalization' in names:
            raise WeightsError('%s: is the old MatConvNet release of VGG-19 (top-level '
                               '"normalization"), whose layout differs; download the current '
                               'file from %s' % (path, VGG_URL))
        if 'layers' not in names:
            raise WeightsError('%s: has no "layers" variable; not a MatConvNet model file'
                               % path)
        deepest = max((VGG19_LAYERS.index(name) for name in layers), default=-1)
        cells = read_mat_cells(path, 'layers', count=deepest + 1)
    except MatNotCellError:
        raise WeightsError('%s: "layers" is not a 1xN cell array of layer structs'
                           % path) from None
    except MatFormatError as error:
        raise WeightsError(damaged % _one_line(error)) from None

    records = [cell if isinstance(cell, dict) else None for cell in cells]
    names_in_file = [_field_text(record, 'name') for record in records]
    weights = {}
    for name in layers:
        index = VGG19_LAYERS.index(name)
        record = records[index] if index < len(records) else None
        found = names_in_file[index] if index < len(names_in_file) else None
        if found != name:
            where = ('it holds %r' % found) if found else 'there is no layer struct there'
            hint = (' (%r is at index %d)' % (name, names_in_file.index(name))
                    if name in names_in_file else '')
            raise WeightsError('%s: layer %d should be %r but %s%s; not the MatConvNet VGG-19 file'
                               % (path, index, name, where, hint))
        weights[name] = _conv_weights(path, name, record)
    if tuple(layers) == VGG19_CONV_LAYERS[:len(layers)]:  # a graph can be built on them
        try:
            check_vgg_weights(weights)
        except WeightsError as error:
            raise WeightsError('%s: %s' % (path, error)) from None
    return weights


def _one_line(error):
    return ' '.join(str(error).split()) or type(error).__name__


def _field_text(record, field):
    """The text of a struct field (a layer's name or type), or None."""
    value = record.get(field) if record is not None else None
    return value if isinstance(value, str) else None


def _conv_weights(path, name, record):
    if 'weights' not in record:
        if 'filters' in record:
            raise WeightsError('%s: layer %s has "filters" instead of "weights": the old '
                               'MatConvNet release of VGG-19; download the current file from %s'
                               % (path, name, VGG_URL))
        raise WeightsError('%s: layer %s has no "weights" field' % (path, name))
    pair = record['weights']
    if not (isinstance(pair, np.ndarray) and pair.dtype == object and pair.size == 2):
        raise WeightsError('%s: layer %s: "weights" is not a {W, b} cell' % (path, name))
    kernel, bias = pair.reshape(-1, order='F')
    kernel = np.asarray(kernel)
    bias = np.asarray(bias)
    if kernel.dtype.kind != 'f' or bias.dtype.kind != 'f':
        raise WeightsError('%s: layer %s: weights are %s and %s, expected float32'
                           % (path, name, kernel.dtype, bias.dtype))
    if kernel.ndim != 4 or kernel.shape[:2] != (3, 3):
        raise WeightsError('%s: layer %s: kernel has shape %s, expected (3, 3, in, out)'
                           % (path, name, kernel.shape))
    if bias.size != kernel.shape[3]:
        raise WeightsError('%s: layer %s: %d biases for %d output channels'
                           % (path, name, bias.size, kernel.shape[3]))
    return kernel.astype(np.float32, copy=False), bias.reshape(-1).astype(np.float32, copy=False)


def check_vgg_weights(weights):
    """Check that the conv layers are conv1_1 ... up to some layer, in order, and that
    consecutive ones fit together (input channels = previous outputs)."""
    expected = VGG19_CONV_LAYERS[:len(weights)]
    if set(weights) != set(expected):
        raise WeightsError('the weights hold %s; expected the first layers in order, %s'
                           % (', '.join(sorted(weights)), ', '.join(expected)))
    channels = 3
    for name in expected:
        kernel = weights[name][0]
        if kernel.shape[2] != channels:
            raise WeightsError('layer %s: kernel has shape %s, expected %d input channels'
                               % (name, kernel.shape, channels))
        channels = kernel.shape[3]


# ----------------------------------------------------------------------------------------------
# The VGG graph
# ----------------------------------------------------------------------------------------------

def bfloat16_support():
    """This CPU's native bfloat16 arithmetic: 'amx' (AMX-BF16), 'avx512' (AVX512_BF16 only)
    or None."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return None
    if 'amx_bf16' in flags:
        return 'amx'
    return 'avx512' if 'avx512_bf16' in flags else None


VGG_WEIGHTS_COLLECTION = 'vgg_weights'


def build_vgg_graph(weights, image_height=None, image_width=None, pooling='avg',
                    precision='float32', sess=None):
    """Build the course's VGG-19 graph in the default tf.compat.v1 graph.

    weights: {name: (W, b)} from read_vgg_weights.
    Returns a dict: 'input' a tf.Variable (1, image_height, image_width, 3) float32; conv1_1 ...
    conv5_4 = relu(conv2d(x, W, SAME) + b); avgpool1 ... avgpool5 = 2x2 stride-2 SAME pooling
    (average, as the course; 'max' gives the file's own pooling under the same keys).
    precision='bfloat16' runs the convolutions and pools in bfloat16; the dict's tensors are
    still float32, so the costs built on them stay in float32.

    With a session (sess, or the default session of this graph, as in the notebook) the weights
    are variables loaded into it once, kept out of GLOBAL_VARIABLES so that
    global_variables_initializer() leaves them alone. Constants, as the course uses without a
    session, would be copied into every executor the session builds: a style-transfer run
    builds three (content, style, training), which costs about 80 MB each at full width.
    """
    tf = import_tf()

    if pooling not in ('avg', 'max'):
        raise ValueError("pooling must be 'avg' or 'max', not %r" % (pooling,))
    if precision not in ('float32', 'bfloat16'):
        raise ValueError("precision must be 'float32' or 'bfloat16', not %r" % (precision,))
    check_vgg_weights(weights)
    image_height = image_height or CONFIG.IMAGE_HEIGHT
    image_width = image_width or CONFIG.IMAGE_WIDTH
    pool = _avg_pool_2x2 if pooling == 'avg' else _max_pool_2x2
    compute_dtype = tf.bfloat16 if precision == 'bfloat16' else tf.float32

    def exposed(tensor):
        # The costs read float32; the cast runs only for the layers a cost uses.
        return tensor if tensor.dtype == tf.float32 else tf.cast(tensor, tf.float32)

    if sess is None:
        sess = tf.get_default_session()
    if sess is not None and sess.graph is not tf.get_default_graph():
        sess = None
    to_load = {}  # initial-value tensor -> array, fed in one session run
    created = []
    derived = []  # variables computed from loaded ones, initialised after them

    def weight(value, name):
        value = value.astype(compute_dtype.as_numpy_dtype, copy=False)
        if sess is None:
            return tf.constant(value, name=name)
        variable = tf.Variable(tf.zeros(value.shape, compute_dtype), trainable=False,
                               collections=[VGG_WEIGHTS_COLLECTION], name=name)
        to_load[variable.initial_value] = value
        created.append(variable)
        return variable

    graph = {}
    graph['input'] = tf.Variable(np.zeros((1, image_height, image_width, CONFIG.COLOR_CHANNELS)),
                                 dtype='float32', name='input')
    current = tf.cast(graph['input'], compute_dtype)
    for name in VGG19_LAYERS[:37]:
        if name.startswith('conv') and name not in weights:
            break  # the weights stop here: so does the graph (see layers_needed)
        if name.startswith('conv'):
            kernel, bias = weights[name]
            with tf.variable_scope(name):
                transposed = _runs_transposed(kernel.shape[2])
                kernel, bias = weight(kernel, 'W'), weight(bias, 'b')
                rotated = None
                if transposed and sess is not None:
                    # Stored, rotated in the session (no second copy in NumPy); with constants
                    # grappler folds the rotation instead.
                    rotated = tf.Variable(rotate_kernel(kernel), trainable=False,
                                          collections=[VGG_WEIGHTS_COLLECTION], name='W_rotated')
                    derived.append(rotated)
                current = tf.nn.relu(_conv2d_same(current, kernel, rotated) + bias)
            graph[name] = exposed(current)
        elif name.startswith('pool'):
            key = 'avg' + name
            current = pool(current, name=key)
            graph[key] = exposed(current)
    if to_load:
        sess.run([v.initializer for v in created], feed_dict=to_load)
        sess.run([v.initializer for v in derived])
    return graph


# Below this many input channels tf.nn.conv2d is as fast as the transposed form (measured on
# oneDNN 3.x, AVX-512, fp32: at 300x400x64 both run at ~330 GFLOP/s).
TRANSPOSED_CONV_MIN_CHANNELS = int(os.environ.get('NST_TRANSPOSED_CONV_MIN_CHANNELS', 256))


def _max_pool_2x2(x, name=None):
    """2x2 stride-2 SAME max pooling, the file's own."""
    tf = import_tf()
    return tf.nn.max_pool(x, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1], padding='SAME', name=name)


def _avg_pool_2x2(x, name=None):
    """2x2 stride-2 SAME average pooling, as the course's (tf.nn.avg_pool), with a faster
    gradient.

    x: (1, H, W, C). Returns (1, ceil(H/2), ceil(W/2), C). SAME pads an odd edge at its end,
    and the padding is not counted: such an edge's windows average 2 (or 1) pixels, not 4.
    The gradient spreads each output's gradient over its window, divided by the window's count,
    as a broadcast and a reshape: TensorFlow's AvgPoolGrad takes about three times as long
    (5.0 against 1.7 ms at 300x400x64 on our machines).
    """
    tf = import_tf()
    _, height, width, channels = x.get_shape().as_list()
    out_height, out_width = -(-height // 2), -(-width // 2)
    if height % 2 == 0 and width % 2 == 0:
        scale = 0.25
    else:
        rows = np.full(out_height, 2.0)
        rows[height // 2:] = height % 2 or 2.0  # the last window of an odd edge holds one row
        cols = np.full(out_width, 2.0)
        cols[width // 2:] = width % 2 or 2.0
        scale = (1.0 / np.outer(rows, cols)).reshape(1, out_height, out_width, 1)

    @tf.custom_gradient
    def pool(inputs):
        outputs = tf.nn.avg_pool(inputs, ksize=[1, 2, 2, 1], strides=[1, 2, 2, 1],
                                 padding='SAME')

        def gradient(d_outputs):
            share = d_outputs * tf.constant(scale, d_outputs.dtype)
            # (1, oh, ow, C) -> (1, oh, 1, ow, 1, C) -> (1, oh, 2, ow, 2, C) -> (1, 2oh, 2ow, C)
            share = tf.reshape(share, [1, out_height, 1, out_width, 1, channels])
            spread = tf.broadcast_to(share, [1, out_height, 2, out_width, 2, channels])
            d_inputs = tf.reshape(spread, [1, 2 * out_height, 2 * out_width, channels])
            if (2 * out_height, 2 * out_width) != (height, width):
                d_inputs = d_inputs[:, :height, :width, :]  # drop the padding's share
            return d_inputs

        return outputs, gradient

    return tf.identity(pool(x), name=name)


def layers_needed(layer_names):
    """The conv layers whose weights the given layers of the dict depend on.

    layer_names: keys of the VGG dict (conv3_1, avgpool2, ...). Returns a prefix of
    VGG19_CONV_LAYERS. Reading only those skips conv5_2 ... conv5_4 (28 MB) for the course's
    layers.
    """
    deepest = max(VGG19_LAYERS.index(name[3:] if name.startswith('avgpool') else name)
                  for name in layer_names)
    return tuple(name for name in VGG19_CONV_LAYERS if VGG19_LAYERS.index(name) <= deepest)


def rotate_kernel(kernel):
    """(3, 3, C_in, C_out) tensor -> rotated by 180 degrees, channel axes swapped:
    (3, 3, C_out, C_in)."""
    tf = import_tf()
    return tf.transpose(tf.reverse(kernel, axis=[0, 1]), [0, 1, 3, 2])


# Up to this many input channels (conv1_1's 3 colours) the input gradient of a convolution is
# computed as one matmul and a sum of shifted slices (_narrow_conv_input_gradient).
NARROW_CONV_MAX_CHANNELS = 4
_NARROW_CONV_GRADIENT = 'NSTNarrowConv2DGradient'


def _narrow_conv_input_gradient(op, d_outputs):
    """Gradient of a stride-1 SAME 3x3 Conv2D with few input channels, for its input only
    (the weights are not trained).

    oneDNN's backward-data convolution runs such a layer at a sixth of its usual speed (7 ms
    for conv1_1 at 300x400, about 60 GFLOP/s). The same sum, split: each kernel tap's
    contribution, dy (H*W, C_out) times the tap's (C_out, C_in) weights, for all nine taps at
    once as one matmul; then each tap's plane shifted into place and added (about 4.7 ms).
    dx[c, i, j] = sum over taps (ky, kx) of taps[ky, kx, c, i - ky + 1, j - kx + 1].
    """
    tf = import_tf()
    inputs, kernel = op.inputs
    _, height, width, channels_in = inputs.get_shape().as_list()
    k_height, k_width, _, channels_out = kernel.get_shape().as_list()
    taps = tf.matmul(tf.reshape(kernel, [k_height * k_width * channels_in, channels_out]),
                     tf.reshape(d_outputs, [height * width, channels_out]), transpose_b=True)
    # (9 C_in, H*W) -> (3, 3, C_in, H, W), zero-padded by one pixel around each plane
    taps = tf.reshape(taps, [k_height, k_width, channels_in, height, width])
    taps = tf.pad(taps, [[0, 0], [0, 0], [0, 0], [1, 1], [1, 1]])
    d_inputs = tf.add_n([taps[ky, kx, :, 2 - ky:2 - ky + height, 2 - kx:2 - kx + width]
                         for ky in range(k_height) for kx in range(k_width)])  # (C_in, H, W)
    return tf.transpose(d_inputs, [1, 2, 0])[tf.newaxis], None  # -> (1, H, W, C_in)


def _register_narrow_conv_gradient():
    tf = import_tf()
    try:
        tf.RegisterGradient(_NARROW_CONV_GRADIENT)(_narrow_conv_input_gradient)
    except KeyError:  # registered by an earlier graph
        pass


def _runs_transposed(channels_in):
    """Whether _conv2d_same runs a layer with this many input channels as a transposed
    convolution (and so wants its rotated kernel)."""
    return NARROW_CONV_MAX_CHANNELS < channels_in and channels_in >= TRANSPOSED_CONV_MIN_CHANNELS


def _conv2d_same(x, kernel, rotated=None):
    """conv2d(x, kernel, stride 1, SAME), fast in both directions on oneDNN.

    oneDNN's forward convolution runs wide layers well below its backward-data convolution
    (at 38x50x512: ~190 against ~320 GFLOP/s), and a stride-1 SAME convolution is the
    backward-data (transposed) convolution of the kernel rotated by 180 degrees with its
    channel axes swapped. So from TRANSPOSED_CONV_MIN_CHANNELS input channels on, the forward
    pass runs as that transposed convolution, and its gradient, the ordinary backward-data
    convolution of the kernel as stored, stays one too.
    x: (1, H, W, C_in); kernel: (3, 3, C_in, C_out); rotated: rotate_kernel(kernel), stored
    beside it (else computed in the graph at every run). Returns (1, H, W, C_out).
    """
    tf = import_tf()
    strides = [1, 1, 1, 1]
    _, height, width, channels_in = x.get_shape().as_list()
    channels_out = kernel.get_shape().as_list()[3]
    if channels_in <= NARROW_CONV_MAX_CHANNELS:
        # The Conv2D op itself, so that grappler still fuses it with the bias and the ReLU.
        _register_narrow_conv_gradient()
        with tf.get_default_graph().gradient_override_map({'Conv2D': _NARROW_CONV_GRADIENT}):
            return tf.nn.conv2d(x, kernel, strides=strides, padding='SAME')
    if not _runs_transposed(channels_in):
        return tf.nn.conv2d(x, kernel, strides=strides, padding='SAME')
    if rotated is None:
        rotated = rotate_kernel(kernel)

    # The kernels are arguments, not captured: custom_gradient looks for the variables a
    # function reads among the global ones, and the weights are kept out of those.
    @tf.custom_gradient
    def conv(inputs, kernel, rotated):
        outputs = tf.nn.conv2d_backprop_input([1, height, width, channels_out], rotated, inputs,
                                              strides=strides, padding='SAME')

        def gradient(d_outputs):
            d_inputs = tf.nn.conv2d_backprop_input([1, height, width, channels_in], kernel,
                                                   d_outputs, strides=strides, padding='SAME')
            return d_inputs, None, None  # the weights are not trained
        return outputs, gradient

    return conv(x, kernel, rotated)


def load_vgg_model(path=None, image_height=None, image_width=None, pooling='avg',
                   precision='float32'):
    """The course's loader: read the MatConvNet file at path and build the VGG graph.

    At the default 300x400: conv4_2 is (1, 38, 50, 512), avgpool4 (1, 19, 25, 512),
    avgpool5 (1, 10, 13, 512).
    """
    weights = read_vgg_weights(path or CONFIG.VGG_MODEL)
    return build_vgg_graph(weights, image_height, image_width, pooling, precision)


# ----------------------------------------------------------------------------------------------
# Memory: estimate a run before building it
# ----------------------------------------------------------------------------------------------

# Conv layers per block of VGG-19 (conv1_1..conv1_2, ..., conv5_1..conv5_4): 2, 2, 4, 4, 4.
VGG19_BLOCK_DEPTHS = tuple(sum(name.startswith('conv%d_' % block) for name in VGG19_CONV_LAYERS)
                           for block in range(1, 6))
VGG19_WIDTHS = (64, 128, 256, 512, 512)  # output channels of each block in the real file


def vgg_widths(weights):
    """The 5 block widths (output channels of conv1_1, conv2_1, ..., conv5_1) of read weights.

    A block whose weights were not read (see layers_needed) counts as wide as the one before,
    which errs on the safe side for the memory estimate.
    """
    widths = []
    for block in range(1, 6):
        name = 'conv%d_1' % block
        widths.append(int(weights[name][0].shape[3]) if name in weights else widths[-1])
    return tuple(widths)


def vgg_conv_sizes(height, width, widths=VGG19_WIDTHS):
    """Elements of each of the 16 conv outputs for one height x width image, in graph order.

    Block b (0-based) works at ceil(height / 2^b) x ceil(width / 2^b): each 2x2 stride-2 SAME
    pool rounds up. Returns [(elements, in_channels, out_channels), ...].
    """
    sizes = []
    channels = 3
    for block, (depth, out) in enumerate(zip(VGG19_BLOCK_DEPTHS, widths)):
        h, w = -(-height // 2 ** block), -(-width // 2 ** block)
        for _ in range(depth):
            sizes.append((h * w * out, channels, out))
            channels = out
    return sizes


# Constants of estimate_run_memory, calibrated against ru_maxrss (see its docstring).
_MEMORY_RUNTIME = 640 * 2 ** 20       # TensorFlow's libraries, thread pools and Python
_MEMORY_BACKWARD_COPIES = 4           # extra copies of the largest activation while back-propagating
_MEMORY_IMAGE_COPIES = 17             # float32 copies of the image, plus 2 per style
_MEMORY_LBFGS_IMAGE_COPIES = 76       # L-BFGS-B's history (10 pairs, float64) and work arrays
_MEMORY_WEIGHT_COPIES = 4             # the weights: file read, feed, session variables


def estimate_run_memory(height, width, widths=VGG19_WIDTHS, styles=1, optimizer='adam'):
    """Estimate in bytes the peak memory of a style-transfer run at height x width.

    widths: the 5 block widths of the weights (VGG19_WIDTHS for the real file; vgg_widths()).
    With A_l the elements of conv output l (vgg_conv_sizes), X = 3 * height * width the
    elements of the image and K the elements of the conv kernels and biases, all float32 (4 B):

        bytes = 4 * (sum(A_l)                  forward activations, kept for the ReLU gradients
                     + 4 * max(A_l)            gradients and temporaries at the largest layer
                     + (17 + 2 * styles) * X   the input variable, Adam's m and v, its gradient,
                                               fetched copies, the float64 content/style/noise
                                               arrays of the set-up (+ 76 X for L-BFGS-B)
                     + 4 * K)                  the weights: as read, as fed, as session variables
                + 640 MiB                      TensorFlow's runtime

    Calibrated on 2 CPUs (TensorFlow 2.21, oneDNN) from the peak ru_maxrss of whole CLI runs
    (3 Adam iterations, 4:3 content, one style, weights as session variables), in MiB:

        tiny widths (4, 8, 8, 16, 16)      real widths (64, 128, 256, 512, 512)
        width  measured  estimated         width  measured  estimated
           16       640        640            16       925        946
          400       683        681           200       928       1015
          800       812        802           400      1071       1225
         1600      1320       1287           800      1825       2061
         3200      3270       3226          1200      3213       3456
         4800      6338       6458          1600      4956       5406

    i.e. -3 % .. +14 %, erring on the safe side with the real widths. Three styles, tiny, 3200:
    3665 measured, 3577 estimated. L-BFGS-B: tiny 3200: 10004 / 9905; real 1600: 6678 / 7076.
    Per pixel that is about 2.2 KB with the real widths (of which 1.2 KB the activations).
    """
    sizes = vgg_conv_sizes(height, width, widths)
    activations = sum(elements for elements, _, _ in sizes)
    largest = max(elements for elements, _, _ in sizes)
    kernels = sum(9 * cin * cout + cout for _, cin, cout in sizes)
    image_copies = _MEMORY_IMAGE_COPIES + 2 * styles
    if optimizer == 'lbfgs':
        image_copies += _MEMORY_LBFGS_IMAGE_COPIES
    image = 3 * height * width
    return (4 * (activations + _MEMORY_BACKWARD_COPIES * largest + image_copies * image
                 + _MEMORY_WEIGHT_COPIES * kernels) + _MEMORY_RUNTIME)


def available_memory():
    """Bytes this process can still allocate: MemAvailable from /proc/meminfo, lowered to the
    room left under a cgroup (container) memory limit; os.sysconf where there is no /proc.
    None when it cannot be told."""
    available = None
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
        except (AttributeError, ValueError, OSError):
            pass
    room = _cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def _cgroup_room():
    """The room under this process's cgroup memory limit (v2, then v1), or None.

    The usage counts the page cache; its inactive part can be reclaimed, so it counts as room.
    """
    for limit_file, usage_file, stat_file, reclaimable in (
            ('memory.max', 'memory.current', 'memory.stat', 'inactive_file'),
            ('memory/memory.limit_in_bytes', 'memory/memory.usage_in_bytes',
             'memory/memory.stat', 'total_inactive_file')):
        try:
            with open(os.path.join('/sys/fs/cgroup', limit_file)) as f:
                limit = f.read().strip()
            with open(os.path.join('/sys/fs/cgroup', usage_file)) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit == 'max' or not limit.isdigit() or int(limit) >= 1 << 60:
            return None  # no limit
        try:
            with open(os.path.join('/sys/fs/cgroup', stat_file)) as f:
                for line in f:
                    key, _, value = line.partition(' ')
                    if key == reclaimable:
                        usage -= min(usage, int(value))
        except (OSError, ValueError):
            pass
        return max(0, int(limit) - usage)
    return None


def format_bytes(count):
    """1536 -> '1.5 KiB'; 123456789 -> '117.7 MiB'."""
    value = float(count)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'):
        if value < 1024 or unit == 'PiB':
            return ('%d %s' % (value, unit)) if unit == 'B' else ('%.1f %s' % (value, unit))
        value /= 1024


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------

def generate_noise_image(content_image, noise_ratio=CONFIG.NOISE_RATIO):
    """The content image blended with uniform(-20, 20) noise, as the course starts from.

    content_image: (1, height, width, 3) mean-subtracted. Returns float32 of the same shape.
    """
    noise_image = np.random.uniform(-20, 20, content_image.shape).astype('float32')
    input_image = noise_image * noise_ratio + content_image * (1 - noise_ratio)
    return input_image.astype('float32')


def reshape_and_normalize_image(image):
    """(height, width, 3) pixels 0-255 -> (1, height, width, 3) with the mean pixel removed."""
    image = np.reshape(image, ((1,) + image.shape))  # (H, W, 3) -> (1, H, W, 3)
    return image - CONFIG.MEANS


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
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(_to_rgb(image), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError('%s: not an image Pillow can read' % path) from None
    except Image.DecompressionBombError as error:  # not an OSError: would escape as a traceback
        raise ImageError('%s: too large to decode safely (%s)' % (path, _one_line(error))) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError('%s: cannot be decoded (%s); the file may be truncated or damaged'
                         % (path, _one_line(error))) from None


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
    image = image + CONFIG.MEANS
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
        raise ImageError('%s: cannot be written (%s)' % (path, _one_line(error))) from None


def save_image(path, image):
    """The course's save_image: a (1, height, width, 3) mean-subtracted image to 8-bit RGB."""
    save_pixels(path, to_pixels(image))


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
