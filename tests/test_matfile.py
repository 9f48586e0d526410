"""Tests of the streaming MAT-file reader in nst.matfile (read_mat_cells and friends).

Expected values come from scipy.io.loadmat (an independent implementation of the format), from
the arrays nst/synthetic.py wrote, or from byte offsets measured on the files themselves;
never from the code under test. MATLAB-written files shipped with SciPy's test suite are used
when present (they have what savemat never writes: big-endian files, chars stored as miUINT16,
doubles stored in smaller types, small data elements, complex arrays, struct arrays).
"""

import glob
import os
import re
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from nst import matfile
from nst import synthetic
from nst.errors import MatFormatError
from nst.matfile import mat_file_truncated, read_mat_cells
from nst.synthetic import write_mat

NEEDED = 37  # conv1_1 .. pool5


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def loadmat(path, **options):
    """scipy.io.loadmat with MATLAB's dtypes (as the streaming reader gives them).

    loadmat(mat_dtype=True) drops imaginary parts (SciPy 1.17), so complex arrays are taken from
    a second loadmat(mat_dtype=False); both are merged into a _Both.
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', np.exceptions.ComplexWarning)
        matlab_types = scipy.io.loadmat(path, mat_dtype=True, **options)
    stored_types = scipy.io.loadmat(path, mat_dtype=False, **options)
    return {name: _Both(value, stored_types[name]) if isinstance(value, np.ndarray) else value
            for name, value in matlab_types.items()}


class _Both:
    """A loadmat value with MATLAB's dtypes, and the same with the stored ones (for complex)."""

    def __init__(self, matlab, stored):
        self.matlab, self.stored = matlab, stored

    def __getitem__(self, index):
        return _Both(self.matlab[index], self.stored[index])

    @property
    def shape(self):
        return self.matlab.shape

    def pick(self):
        stored = self.stored
        if isinstance(stored, np.ndarray) and stored.dtype.kind == 'c':
            return stored
        return self.matlab


def from_loadmat(value):
    """loadmat's representation turned into the reader's: 1x1 structs as dicts, chars as str."""
    if isinstance(value, _Both):
        if isinstance(value.matlab, np.ndarray) and (value.matlab.dtype.names is not None
                                                     or value.matlab.dtype == object):
            return _from_loadmat_container(value.matlab, value.stored)
        value = value.pick()
    return _from_loadmat_container(value, value)


def _from_loadmat_container(value, stored):
    if isinstance(value, np.ndarray) and value.dtype.names is not None:
        flat, flat_stored = value.reshape(-1, order='F'), stored.reshape(-1, order='F')
        records = [{field: from_loadmat(_Both(flat[i][field], flat_stored[i][field]))
                    for field in value.dtype.names} for i in range(value.size)]
        if value.size == 1:
            return records[0]
        array = np.empty(len(records), dtype=object)
        for i, record in enumerate(records):
            array[i] = record
        return array.reshape(value.shape, order='F')
    if isinstance(value, np.ndarray) and value.dtype == object:
        array = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            array[index] = from_loadmat(_Both(value[index], stored[index]))
        return array
    if isinstance(value, np.ndarray) and value.dtype.kind == 'U':
        return str(value.reshape(-1)[0]) if value.size == 1 else ('' if value.size == 0 else value)
    return value


def assert_same(ours, expected, where='value'):
    """Exact equality of the reader's value with from_loadmat(...): types, shapes, dtypes."""
    if isinstance(expected, dict):
        assert isinstance(ours, dict), '%s: %r is not a dict' % (where, type(ours))
        assert list(ours) == list(expected), '%s: fields %s != %s' % (where, list(ours),
                                                                        list(expected))
        for field in expected:
            assert_same(ours[field], expected[field], '%s.%s' % (where, field))
    elif isinstance(expected, str):
        assert isinstance(ours, str) and ours == expected, '%s: %r != %r' % (where, ours,
                                                                           expected)
    else:
        assert isinstance(ours, np.ndarray), '%s: %r is not an array' % (where, type(ours))
        if expected.dtype == object:
            assert ours.dtype == object and ours.shape == expected.shape, (
                '%s: %s %s != object %s' % (where, ours.dtype, ours.shape, expected.shape))
            for index in np.ndindex(expected.shape):
                assert_same(ours[index], expected[index], '%s%s' % (where, list(index)))
        elif expected.size == 0 and expected.dtype == np.float64 and ours.shape == (0, 0):
            # An empty element (a bare miMATRIX tag): loadmat gives shape (1, 0), we (0, 0).
            assert ours.dtype == np.float64, where
        else:
            assert ours.dtype == expected.dtype.newbyteorder('='), (
                '%s: dtype %s != %s' % (where, ours.dtype, expected.dtype))
            assert ours.shape == expected.shape, '%s: shape %s != %s' % (where, ours.shape,
                                                                        expected.shape)
            assert np.array_equal(ours, expected, equal_nan=ours.dtype.kind in 'fc'), where


def first_tag(path, offset=128):
    """(type, byte count) of the top-level element at offset, read with plain NumPy."""
    with open(path, 'rb') as f:
        f.seek(offset)
        mdtype, nbytes = np.frombuffer(f.read(8), '<u4')
    return int(mdtype), int(nbytes)


def end_of_needed_cells(tmp_path, **options):
    """File offset where cell 37 starts in a 43-layer file written with these options.

    Measured on a 37-layer file written with the same seed (the first 37 layers are the same
    and its 1x37 header is as long as the 1x43 one): its `layers` variable ends there.
    """
    path = write_mat(tmp_path, 'first37.mat', with_fc=False, **options)
    mdtype, nbytes = first_tag(path)
    assert mdtype == 14  # miMATRIX, uncompressed
    return 128 + 8 + nbytes


def overwrite(path, start, stop=None, byte=b'\0'):
    size = os.path.getsize(path)
    stop = size if stop is None else stop
    with open(path, 'r+b') as f:
        f.seek(start)
        f.write(byte * (stop - start))


def cut(path, size):
    with open(path, 'r+b') as f:
        f.truncate(size)


def truncated_at(error):
    match = re.search(r'truncated at byte (\d+)', str(error))
    assert match, 'no "truncated at byte N" in %r' % str(error)
    return int(match.group(1))


# ----------------------------------------------------------------------------------------------
# Values: the first 37 cells and all 43, against loadmat
# ----------------------------------------------------------------------------------------------

VARIANTS = {
    'current': {},
    'reordered': {'layers_override': synthetic.reorder_fields},
    'old': {'layout': 'old'},
    'shuffled': {'layers_override': lambda ls: synthetic.reorder_fields(
        ls, order=lambda fields: fields[1:] + fields[:1])},
}


@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'zlib'])
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_first_cells_equal_loadmat(tmp_path, variant, compressed):
    path = write_mat(tmp_path, do_compression=compressed, **VARIANTS[variant])
    written = synthetic.build_layers(layout='old' if variant == 'old' else 'current')
    expected = loadmat(path)['layers']
    assert expected.shape == (1, 43)

    cells = read_mat_cells(path, 'layers', NEEDED)

    assert len(cells) == NEEDED
    for i, cell in enumerate(cells):
        assert_same(cell, from_loadmat(expected[0, i]), 'layers{%d}' % i)
    assert [cell['name'] for cell in cells] == list(synthetic.LAYER_NAMES[:NEEDED])
    # The kernels are the very arrays the fixture wrote (dtype, shape, bits).
    for name, (kernel, bias) in synthetic.weights_by_name(written[:NEEDED]).items():
        cell = cells[synthetic.LAYER_NAMES.index(name)]
        if variant == 'old':
            got_kernel, got_bias = cell['filters'], cell['biases']
            bias = bias.reshape(1, -1)
        else:
            assert cell['weights'].shape == (1, 2)
            got_kernel, got_bias = cell['weights'][0, 0], cell['weights'][0, 1]
        assert got_kernel.dtype == np.float32 and got_kernel.shape == kernel.shape
        assert np.array_equal(got_kernel, kernel) and np.array_equal(got_bias, bias)
        assert got_kernel.flags.writeable


@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'zlib'])
def test_count_none_reads_all_cells(tmp_path, compressed):
    path = write_mat(tmp_path, do_compression=compressed)
    expected = loadmat(path)['layers']

    cells = read_mat_cells(path)

    assert len(cells) == 43
    for i, cell in enumerate(cells):
        assert_same(cell, from_loadmat(expected[0, i]), 'layers{%d}' % i)
    assert [c['name'] for c in read_mat_cells(path, 'layers', 100)] == list(
        synthetic.LAYER_NAMES)
    assert read_mat_cells(path, 'layers', 0) == []
    with pytest.raises(ValueError):
        read_mat_cells(path, 'layers', -1)


@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'zlib'])
def test_other_variables_read_whole(tmp_path, compressed):
    path = write_mat(tmp_path, do_compression=compressed)
    expected = loadmat(path)

    assert matfile.mat_variable_names(path) == ['layers', 'meta']
    assert_same(matfile.read_mat_variable(path, 'meta'), from_loadmat(expected['meta']))
    assert_same(matfile.read_mat_variable(path, 'layers'), from_loadmat(expected['layers']))


def test_cell_array_column_major_order(tmp_path):
    """A 2x3 cell: elements come in MATLAB's linear order, down the columns first."""
    path = str(tmp_path / 'grid.mat')
    grid = synthetic.make_cell(['a', 'b', 'c', 'd', 'e', 'f'], shape=(2, 3))
    scipy.io.savemat(path, {'grid': grid})
    expected = loadmat(path)['grid'].matlab

    cells = read_mat_cells(path, 'grid')

    assert cells == [str(expected[i, j][0]) for j in range(3) for i in range(2)]
    assert cells == ['a', 'd', 'b', 'e', 'c', 'f']  # grid is [['a', 'b', 'c'], ['d', 'e', 'f']]
    assert read_mat_cells(path, 'grid', 3) == ['a', 'd', 'b']


def test_assorted_values_equal_loadmat(tmp_path):
    """Types savemat writes that the VGG file does not use, inside the cells read."""
    path = str(tmp_path / 'assorted.mat')
    rng = np.random.default_rng(3)
    nested = synthetic.make_struct({'inner': synthetic.make_struct({'x': np.int16(-7)}),
                                      'empty': np.zeros((0, 3)), 'text': 'naïve ☃'})
    records = np.empty((1, 2), dtype=[('p', object), ('q', object)])
    records['p'][0, 0], records['q'][0, 0] = 1.5, 'one'
    records['p'][0, 1], records['q'][0, 1] = np.arange(3, dtype=np.uint8), 'two'
    items = [
        rng.standard_normal((2, 3, 4)),
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.array([[1, 2], [3, 4]], dtype=np.uint32),
        np.array([[True, False, True]]),
        (rng.standard_normal((2, 2)) + 1j * rng.standard_normal((2, 2))).astype(np.complex64),
        np.array(['abc', 'xyz']),  # a 2x3 char array
        '',
        nested,
        records,
        synthetic.make_cell([np.float32(2.5), 'deep', synthetic.make_cell([])]),
        np.float64(np.nan),
    ]
    scipy.io.savemat(path, {'stuff': synthetic.make_cell(items)})
    expected = loadmat(path)['stuff']

    cells = read_mat_cells(path, 'stuff')

    assert len(cells) == len(items)
    for i, cell in enumerate(cells):
        assert_same(cell, from_loadmat(expected[0, i]), 'stuff{%d}' % i)
    assert cells[5].tolist() == ['abc', 'xyz']
    assert cells[7]['inner'] == {'x': np.array([[-7]], dtype=np.int16)}
    assert cells[8].shape == (1, 2) and cells[8][0, 1]['q'] == 'two'


# ----------------------------------------------------------------------------------------------
# Reading no further than needed
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('fill', [b'\0', b'\xff'], ids=['zeros', 'ones'])
def test_bytes_after_the_needed_cells_are_not_read(tmp_path, fill):
    path = write_mat(tmp_path)
    boundary = end_of_needed_cells(tmp_path)
    assert boundary < os.path.getsize(path) - 1000  # fc6 ... prob and meta follow
    layers = loadmat(path)['layers']
    expected = [from_loadmat(layers[0, i]) for i in range(NEEDED)]
    overwrite(path, boundary, byte=fill)
    with pytest.raises(Exception):
        loadmat(path)  # the damage is real

    cells = read_mat_cells(path, 'layers', NEEDED)

    for i, (cell, want) in enumerate(zip(cells, expected)):
        assert_same(cell, want, 'layers{%d}' % i)
    with pytest.raises(MatFormatError):
        read_mat_cells(path, 'layers', NEEDED + 1)


def test_damage_just_before_the_boundary_is_noticed(tmp_path):
    """The boundary measured above is exact: the last 8 bytes of cell 36 are needed."""
    path = write_mat(tmp_path)
    boundary = end_of_needed_cells(tmp_path)
    overwrite(path, boundary - 8, byte=b'\xff')

    with pytest.raises(MatFormatError):
        read_mat_cells(path, 'layers', NEEDED)
    assert len(read_mat_cells(path, 'layers', NEEDED - 1)) == NEEDED - 1


def compressed_input_needed(path, decompressed_bytes):
    """Compressed bytes (from the start of the zlib data) that yield that many output bytes."""
    mdtype, nbytes = first_tag(path)
    assert mdtype == 15  # miCOMPRESSED
    with open(path, 'rb') as f:
        f.seek(136)
        data = f.read(nbytes)
    inflate = zlib.decompressobj()
    produced = 0
    for used in range(0, len(data), 64):
        produced += len(inflate.decompress(data[used:used + 64]))
        if produced >= decompressed_bytes:
            return used + 64
    raise AssertionError('the compressed data is shorter than %d bytes' % decompressed_bytes)


def test_compressed_data_after_the_needed_cells_is_not_read(tmp_path):
    path = write_mat(tmp_path, do_compression=True)
    # The zlib stream decompresses to the uncompressed variable (tag included), so cell 37
    # starts at the same offset in it as in the file minus the 128-byte header.
    needed = compressed_input_needed(path, end_of_needed_cells(tmp_path) - 128)
    layers = loadmat(path)['layers']
    expected = [from_loadmat(layers[0, i]) for i in range(NEEDED)]
    cut(path, 136 + needed)
    with pytest.raises(Exception):
        loadmat(path)

    cells = read_mat_cells(path, 'layers', NEEDED)

    for i, (cell, want) in enumerate(zip(cells, expected)):
        assert_same(cell, want, 'layers{%d}' % i)
    with pytest.raises(MatFormatError) as error:
        read_mat_cells(path, 'layers', NEEDED + 1)
    assert truncated_at(error.value) == 136 + needed
    assert mat_file_truncated(path)


def test_variables_before_are_skipped_unread(tmp_path):
    path = str(tmp_path / 'before.mat')
    layers = synthetic.build_layers()
    scipy.io.savemat(path, {'before': np.arange(5000, dtype=np.float64).reshape(50, 100),
                            'sparse': scipy.sparse.csc_matrix(np.eye(4)),
                            'layers': synthetic.make_cell(layers),
                            'meta': synthetic.make_meta(10)})
    expected = loadmat(path)['layers']
    # Damage the data of the first variable (its header, 64 bytes with the name, stays).
    _, nbytes = first_tag(path)
    overwrite(path, 128 + 64, 128 + 8 + nbytes, byte=b'\xff')

    cells = read_mat_cells(path, 'layers', NEEDED)

    for i, cell in enumerate(cells):
        assert_same(cell, from_loadmat(expected[0, i]), 'layers{%d}' % i)
    assert matfile.mat_variable_names(path) == ['before', 'sparse', 'layers', 'meta']
    with pytest.raises(MatFormatError, match='unsupported.*sparse'):
        matfile.read_mat_variable(path, 'sparse')


def test_compressed_variables_before_are_skipped(tmp_path):
    path = str(tmp_path / 'before_z.mat')
    layers = synthetic.build_layers()
    rng = np.random.default_rng(1)
    scipy.io.savemat(path, {'noise': rng.standard_normal((300, 300)), 'layers':
                            synthetic.make_cell(layers)}, do_compression=True)
    expected = loadmat(path)['layers']

    cells = read_mat_cells(path, 'layers', NEEDED)

    for i, cell in enumerate(cells):
        assert_same(cell, from_loadmat(expected[0, i]), 'layers{%d}' % i)


def test_unsupported_cells_after_the_needed_ones_are_skipped(tmp_path):
    path = str(tmp_path / 'mixed.mat')
    items = [synthetic.make_struct({'name': 'first'}), scipy.sparse.csc_matrix(np.eye(3)),
             synthetic.make_struct({'name': 'third'})]
    scipy.io.savemat(path, {'mixed': synthetic.make_cell(items)})

    assert read_mat_cells(path, 'mixed', 1) == [{'name': 'first'}]
    with pytest.raises(MatFormatError, match='unsupported MATLAB class sparse'):
        read_mat_cells(path, 'mixed', 2)


# ----------------------------------------------------------------------------------------------
# Truncated and damaged files
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'zlib'])
@pytest.mark.parametrize('fraction', [0.1, 0.3, 0.5])
def test_truncated_file_raises_with_the_offset(tmp_path, compressed, fraction):
    path = write_mat(tmp_path, do_compression=compressed)
    size = int(os.path.getsize(path) * fraction)
    cut(path, size)

    with pytest.raises(MatFormatError) as error:
        read_mat_cells(path, 'layers', NEEDED)

    assert truncated_at(error.value) == size
    assert '\n' not in str(error.value)
    assert mat_file_truncated(path)


@pytest.mark.parametrize('size', [0, 10, 127])
def test_truncated_header(tmp_path, size):
    path = write_mat(tmp_path)
    cut(path, size)

    assert mat_file_truncated(path)
    with pytest.raises(MatFormatError, match='empty' if size == 0 else 'truncated at byte %d'
                       % size):
        read_mat_cells(path)


@pytest.mark.parametrize('layout', ['current', 'old', 'no_fc'])
@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'zlib'])
def test_mat_file_truncated_false_for_complete_files(tmp_path, compressed, layout):
    options = {'with_fc': False} if layout == 'no_fc' else {'layout': layout}
    path = write_mat(tmp_path, do_compression=compressed, **options)
    loadmat(path)  # complete

    assert mat_file_truncated(path) is False


@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'zlib'])
def test_mat_file_truncated_true_for_cut_files(tmp_path, compressed):
    path = write_mat(tmp_path, do_compression=compressed)
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        original = f.read()
    for keep in [130, 136, 137, 1000, size // 3, size // 2, size - 100, size - 8, size - 1]:
        with open(path, 'wb') as f:
            f.write(original[:keep])
        assert mat_file_truncated(path) is True, keep


def test_mat_file_truncated_reads_only_tags(tmp_path):
    """Damage inside the variables does not matter to the check; a damaged tag does."""
    path = write_mat(tmp_path)
    _, nbytes = first_tag(path)
    overwrite(path, 200, 128 + 8 + nbytes, byte=b'\xff')
    assert mat_file_truncated(path) is False
    overwrite(path, 128 + 8 + nbytes, 128 + 8 + nbytes + 4, byte=b'\x03')
    with pytest.raises(MatFormatError, match='unexpected element type 50529027 at offset %d'
                       % (128 + 8 + nbytes)):
        mat_file_truncated(path)


def test_damaged_byte_count_fails_before_allocating(tmp_path):
    """A (1, 10) double whose dims and byte counts are made to claim 3.2 GB."""
    path = str(tmp_path / 'huge.mat')
    scipy.io.savemat(path, {'x': np.zeros((1, 10))})
    with open(path, 'r+b') as f:
        f.seek(152)
        tags = np.frombuffer(f.read(32), '<u4')
        assert tags[:4].tolist() == [5, 8, 1, 10]  # dims element: miINT32, 8 bytes, 1, 10
        assert tags[6:].tolist() == [9, 80]  # data element: miDOUBLE, 80 bytes
        f.seek(132)
        f.write(np.array([3_200_000_048], '<u4').tobytes())
        f.seek(164)
        f.write(np.array([400_000_000], '<u4').tobytes())
        f.seek(180)
        f.write(np.array([3_200_000_000], '<u4').tobytes())

    assert mat_file_truncated(path)
    tracemalloc.start()
    try:
        with pytest.raises(MatFormatError) as error:
            matfile.read_mat_variable(path, 'x')
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert truncated_at(error.value) == os.path.getsize(path)
    assert peak < 1 << 20


def test_damaged_compressed_data(tmp_path):
    path = write_mat(tmp_path, do_compression=True)
    overwrite(path, 2000, 2400, byte=b'\x55')

    with pytest.raises(MatFormatError, match='compressed'):
        read_mat_cells(path, 'layers', NEEDED)


def test_error_messages(tmp_path):
    path = write_mat(tmp_path)
    with pytest.raises(MatFormatError, match=r"no variable named 'weights' \(variables: "
                                             r"layers, meta\)"):
        read_mat_cells(path, 'weights')
    with pytest.raises(MatFormatError, match="'meta' is a struct array, not a cell array"):
        read_mat_cells(path, 'meta')

    html = str(tmp_path / 'page.mat')
    synthetic.write_html_page(html)
    with pytest.raises(MatFormatError, match='not a MATLAB v5 MAT-file') as error:
        read_mat_cells(html)
    assert isinstance(error.value, ValueError)
    with pytest.raises(MatFormatError, match='not a MATLAB v5 MAT-file'):
        mat_file_truncated(html)

    hdf5 = str(tmp_path / 'v73.mat')
    with open(hdf5, 'wb') as f:
        f.write(b'MATLAB 7.3 MAT-file, Platform: GLNXA64'.ljust(116) + bytes(8)
                + b'\x00\x02IM' + bytes(384) + b'\x89HDF\r\n\x1a\n' + bytes(100))
    with pytest.raises(MatFormatError, match='v7.3'):
        read_mat_cells(hdf5)

    with open(path, 'r+b') as f:
        f.seek(128)
        f.write(np.array([3], '<u4').tobytes())
    with pytest.raises(MatFormatError, match='unexpected element type 3 at offset 128'):
        read_mat_cells(path)


# ----------------------------------------------------------------------------------------------
# MATLAB-written files from SciPy's test data (big-endian, miUINT16 chars, small elements ...)
# ----------------------------------------------------------------------------------------------

SCIPY_DATA = os.path.join(os.path.dirname(scipy.io.matlab.__file__), 'tests', 'data')
MATLAB_FILES = sorted(
    name for name in map(os.path.basename, glob.glob(os.path.join(SCIPY_DATA, '*.mat')))
    if re.search(r'_(5\.3|6\.1|6\.5\.1|7\.1|7\.4)_(SOL2|GLNX86)\.mat$|_8_WIN64\.mat$|'
                 r'^(big|little)_endian\.mat$|^testsimplecell\.mat$|^one_by_zero_char\.mat$|'
                 r'^single_empty_string\.mat$|^test_skip_variable\.mat$|'
                 r'^nasty_duplicate_fieldnames\.mat$|^miuint32_for_miint32\.mat$', name))
UNSUPPORTED = re.compile(r'^test(sparse|sparsecomplex|sparsefloat|object|func)_')


@pytest.mark.skipif(not MATLAB_FILES, reason="SciPy's MATLAB test files are not installed")
@pytest.mark.parametrize('name', MATLAB_FILES or ['none'])
def test_matlab_written_files(name):
    path = os.path.join(SCIPY_DATA, name)
    if name == 'testhdf5_7.4_GLNX86.mat':
        with pytest.raises(MatFormatError, match='v7.3'):
            read_mat_cells(path)
        return
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        expected = {k: v for k, v in loadmat(path).items() if not k.startswith('__')}

    names = matfile.mat_variable_names(path)

    assert sorted(names) == sorted(expected)
    assert mat_file_truncated(path) is False
    for variable in names:
        if UNSUPPORTED.match(name):
            with pytest.raises(MatFormatError, match='unsupported'):
                matfile.read_mat_variable(path, variable)
            continue
        value = matfile.read_mat_variable(path, variable)
        assert_same(value, from_loadmat(expected[variable]), '%s:%s' % (name, variable))
        if expected[variable].matlab.dtype == object:  # a cell array, not a struct array
            cells = read_mat_cells(path, variable)
            assert len(cells) == value.size
            for i, cell in enumerate(cells):
                assert_same(cell, value.reshape(-1, order='F')[i], '%s{%d}' % (variable, i))


def test_big_endian_file_was_covered():
    """The parametrized test above includes big-endian files (the SOL2 ones)."""
    if not MATLAB_FILES:
        pytest.skip("SciPy's MATLAB test files are not installed")
    big = [n for n in MATLAB_FILES if open(os.path.join(SCIPY_DATA, n), 'rb').read(128)[126:]
           == b'MI']
    assert len(big) >= 5


@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'zlib'])
def test_numeric_data_starts_on_64_byte_boundaries(tmp_path, compressed):
    # TensorFlow feeds such arrays to a session without copying them (the weights, at start-up).
    path = write_mat(tmp_path, do_compression=compressed)

    cells = read_mat_cells(path, 'layers', NEEDED)

    arrays = [array for cell in cells if 'weights' in cell for array in cell['weights'].flat]
    assert len(arrays) == 2 * 16
    assert [array.ctypes.data % 64 for array in arrays] == [0] * len(arrays)


# ----------------------------------------------------------------------------------------------
# Real widths (about 80 MB, a few seconds): values, time and memory
# ----------------------------------------------------------------------------------------------

def test_real_widths_equal_loadmat_fast_one_copy(real_width_vgg_file):
    path = real_width_vgg_file
    # The arrays written to that file, rebuilt (deterministic per seed) rather than kept in memory.
    weights = synthetic.weights_by_name(
        synthetic.build_layers(synthetic.REAL_WIDTHS, with_fc=False))
    total = sum(k.nbytes + b.nbytes for k, b in weights.values())
    assert 79e6 < total < 81e6

    tracemalloc.start()
    try:
        start = time.perf_counter()
        cells = read_mat_cells(path, 'layers', NEEDED)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < total * 1.02 + (2 << 20), 'peak %d bytes for %d bytes of arrays' % (peak,
                                                                                        total)
    assert seconds < 3.0  # about 0.1 s on a warm page cache; generous for slow machines
    for name, (kernel, bias) in weights.items():
        cell = cells[synthetic.LAYER_NAMES.index(name)]
        assert cell['name'] == name
        assert np.array_equal(cell['weights'][0, 0], kernel)
        assert np.array_equal(cell['weights'][0, 1], bias)
    expected = loadmat(path)['layers'][0]
    for index in (0, 34, 35, 36):  # conv1_1, conv5_4, relu5_4, pool5
        assert_same(cells[index], from_loadmat(expected[index]), 'layers{%d}' % index)


def test_compressed_read_allocates_one_copy(tmp_path):
    # fc6 (12.8 MB) is larger than the cells read: decompressing it would show in the peak.
    path = write_mat(tmp_path, widths=(32, 64, 128, 128, 128), fc_widths=(512, 16, 10),
                     do_compression=True)
    expected = loadmat(path)['layers'][0]
    total = sum(c[0, 0]['weights'][0, 0].nbytes + c[0, 0]['weights'][0, 1].nbytes
                for c in expected.matlab[:NEEDED] if c[0, 0]['type'][0] == 'conv')
    assert total > 5e6

    tracemalloc.start()
    try:
        cells = read_mat_cells(path, 'layers', NEEDED)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < total * 1.02 + (2 << 20), 'peak %d bytes for %d bytes of arrays' % (peak,
                                                                                        total)
    for index in (0, 16, 34, 36):
        assert_same(cells[index], from_loadmat(expected[index]), 'layers{%d}' % index)
