"""A streaming reader for MATLAB v5 MAT-files: reads the first cells of a cell array and stops.

scipy.io.loadmat reads whole variables: for imagenet-vgg-verydeep-19.mat that is all 550 MB
(fc6 alone is 411 MB) although the course needs only layers 0..36 (about 80 MB), which come
first in the `layers` cell array. read_mat_cells reads the first elements of a top-level cell
array and stops there. Format: MathWorks "MAT-File Format" (Level 5), as written by MATLAB and
by scipy.io.savemat: a 128-byte header, then one element per variable, miMATRIX or miCOMPRESSED
(zlib) holding a miMATRIX; 8-byte tags (or 4-byte "small" tags), data padded to 8 bytes except
after compressed elements.

No library reads part of a variable (scipy's loadmat reads it whole), hence this module.
"""

import math
import os

import numpy as np

from nst.errors import MatFormatError, MatNotCellError

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
# Numeric data is read into buffers aligned to this many bytes. TensorFlow feeds an array to a
# session without copying it only when its data is aligned to Eigen's widest vector (64 bytes);
# NumPy aligns its allocations to 16. The VGG weights (80 MB) are fed once, at start-up.
_ALIGNMENT = 64


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


def _aligned_bytes(nbytes):
    """An uninitialised uint8 array of nbytes whose data starts on an _ALIGNMENT boundary."""
    raw = np.empty(nbytes + _ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    return raw[start:start + nbytes]


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
        buffer = _aligned_bytes(nbytes)
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
