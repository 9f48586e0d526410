"""The course notebook, run end to end in a Jupyter kernel (nbclient + ipykernel) on a tiny
generated VGG-19 at 64x48 for 21 iterations: it must run without an error, print the course's
values in its test cells, display its images and save the run's images."""
import os
import re
import time

import pytest

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(PROJECT_DIR, 'Art_Generation_with_Neural_Style_Transfer.ipynb')

WIDTH, HEIGHT, ITERATIONS = 64, 48, 21  # iterations 0 and 20 print and save
CELL_TIMEOUT = 300  # seconds for any one cell; the whole run takes about 15 s

# The course's expected outputs, with the tolerances of tests/test_costs.py: the course prints
# J_content and J_style_layer to 5 decimals (float32 results), GA to 8 digits and J as a float64.
COURSE_VALUES = {
    'J_content': (6.76559, 5e-6),
    'J_style_layer': (9.19028, 5e-5),
}
COURSE_GA = [[6.42230511, -4.42912197, -2.09668207],
             [-4.42912197, 19.46583748, 19.56387138],
             [-2.09668207, 19.56387138, 20.6864624]]
COURSE_GA_TOLERANCE = 1e-5
COURSE_J = 35.34667875478276
COURSE_J_RELATIVE_TOLERANCE = 1e-15

NUMBER = r'[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?'


def read_notebook():
    nbformat = pytest.importorskip('nbformat')
    return nbformat.read(NOTEBOOK, as_version=4)


def tagged(notebook, tag):
    return [cell for cell in notebook.cells if tag in cell.metadata.get('tags', [])]


def stdout_of(cells):
    return ''.join(output.get('text', '') for cell in cells for output in cell.get('outputs', [])
                   if output.output_type == 'stream' and output.name == 'stdout')


def test_notebook_is_saved_without_outputs():
    """Outputs are not kept in git: every code cell is saved cleared."""
    notebook = read_notebook()
    code_cells = [cell for cell in notebook.cells if cell.cell_type == 'code']
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.fixture(scope='module')
def executed(tiny_vgg_file, tmp_path_factory):
    """The notebook after a run in a fresh kernel; returns (notebook, output folder, seconds)."""
    nbclient = pytest.importorskip('nbclient')
    pytest.importorskip('ipykernel')
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    work = tmp_path_factory.mktemp('notebook')
    output_dir = work / 'output'
    # A 'python3' kernel spec for this very interpreter: the spec pip installs runs whichever
    # `python` comes first on PATH, which need not be the one with the project's packages.
    specs = work / 'kernels'
    write_kernel_spec(specs / 'python3')
    kernel_manager = KernelManager(
        kernel_name='python3',
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)],
                                              ensure_native_kernel=False))

    env = dict(os.environ)
    env.update({
        'NST_NOTEBOOK_MODEL': tiny_vgg_file,
        'NST_NOTEBOOK_WIDTH': str(WIDTH),
        'NST_NOTEBOOK_HEIGHT': str(HEIGHT),
        'NST_NOTEBOOK_ITERATIONS': str(ITERATIONS),
        'NST_NOTEBOOK_OUTPUT_DIR': str(output_dir),
        # Keep IPython's history and Jupyter's files out of the home folder.
        'IPYTHONDIR': str(work / 'ipython'),
        'JUPYTER_RUNTIME_DIR': str(work / 'runtime'),
    })
    env.pop('MPLBACKEND', None)  # the notebook's %matplotlib inline decides
    saved_runtime_dir = os.environ.get('JUPYTER_RUNTIME_DIR')
    os.environ['JUPYTER_RUNTIME_DIR'] = env['JUPYTER_RUNTIME_DIR']  # the connection file
    try:
        notebook = read_notebook()
        client = nbclient.NotebookClient(
            notebook, km=kernel_manager, timeout=CELL_TIMEOUT, startup_timeout=120,
            resources={'metadata': {'path': PROJECT_DIR}})  # the kernel's working folder
        start = time.monotonic()
        client.execute(env=env)  # raises CellExecutionError on the first failing cell
        seconds = time.monotonic() - start
    finally:
        if saved_runtime_dir is None:
            os.environ.pop('JUPYTER_RUNTIME_DIR', None)
        else:
            os.environ['JUPYTER_RUNTIME_DIR'] = saved_runtime_dir
    return notebook, output_dir, seconds


def test_notebook_runs_every_cell(executed):
    notebook, _, seconds = executed
    for cell in notebook.cells:
        if cell.cell_type == 'code':
            assert cell.execution_count is not None, cell.source[:60]
            assert not [o for o in cell.outputs if o.output_type == 'error'], cell.source[:60]
    print('notebook ran in %.1f s' % seconds)


def test_notebook_prints_the_course_values(executed):
    notebook, _, _ = executed
    cells = tagged(notebook, 'course-value')
    assert len(cells) == 4
    text = stdout_of(cells)

    for name, (expected, tolerance) in COURSE_VALUES.items():
        found = re.findall(r'^%s = (%s)$' % (name, NUMBER), text, re.MULTILINE)
        assert len(found) == 1, (name, text)
        assert float(found[0]) == pytest.approx(expected, abs=tolerance), name

    match = re.search(r'^GA = (\[\[.*?\]\])$', text, re.MULTILINE | re.DOTALL)
    assert match, text
    rows = [[float(x) for x in re.findall(NUMBER, row)]
            for row in re.findall(r'\[([^\[\]]*)\]', match.group(1))]
    assert len(rows) == 3 and all(len(row) == 3 for row in rows), rows
    for row, expected_row in zip(rows, COURSE_GA):
        for value, expected in zip(row, expected_row):
            assert value == pytest.approx(expected, abs=COURSE_GA_TOLERANCE), rows

    found = re.findall(r'^J = (%s)$' % NUMBER, text, re.MULTILINE)
    assert len(found) == 1, text
    assert float(found[0]) == pytest.approx(COURSE_J, rel=COURSE_J_RELATIVE_TOLERANCE)


def test_notebook_prints_the_training_costs(executed):
    notebook, _, _ = executed
    [cell] = tagged(notebook, 'training')
    text = stdout_of([cell])
    blocks = re.findall(r'^Iteration (\d+) :\ntotal cost = (%s)\ncontent cost = (%s)\n'
                        r'style cost = (%s)$' % (NUMBER, NUMBER, NUMBER), text, re.MULTILINE)
    assert [int(block[0]) for block in blocks] == [0, 20], text
    for block in blocks:
        total, content, style = (float(x) for x in block[1:])
        assert total > 0 and content >= 0 and style > 0
        assert total == pytest.approx(10 * content + 40 * style, rel=1e-4)


def test_notebook_displays_its_images(executed):
    notebook, _, _ = executed
    cells = tagged(notebook, 'shows-image')
    assert len(cells) == 5  # content, style, starting image, result, progression
    for cell in cells:
        images = [o for o in cell.outputs
                  if o.output_type == 'display_data' and 'image/png' in o.get('data', {})]
        assert len(images) == 1, cell.source[:60]


def test_notebook_saves_the_run(executed):
    _, output_dir, _ = executed
    names = set(os.listdir(output_dir))
    assert {'0.png', '20.png', 'generated_image.jpg'} <= names, names

    from nst.images import read_image
    for name in ('0.png', '20.png', 'generated_image.jpg'):
        assert read_image(str(output_dir / name)).shape == (HEIGHT, WIDTH, 3), name
