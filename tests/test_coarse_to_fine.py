"""benchmarks/coarse_to_fine.py: a --width that cannot make the comparison is refused at once,
one line and exit 2 (it ran for minutes, then failed to find a stage image, or raised)."""
import os
import sys

import pytest

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'benchmarks')
if BENCHMARKS_DIR not in sys.path:
    sys.path.insert(0, BENCHMARKS_DIR)

import coarse_to_fine  # noqa: E402


@pytest.mark.parametrize('width, says', [(200, 'a single stage at this size'),
                                         (99999999999, 'stages')])
def test_a_width_without_stages_to_compare_is_refused(monkeypatch, capsys, width, says):
    monkeypatch.setattr(sys, 'argv', ['coarse_to_fine.py', '--width', str(width)])
    monkeypatch.setattr(coarse_to_fine.problem, 'weights_file', fail_if_called)
    with pytest.raises(SystemExit) as exit_info:
        coarse_to_fine.main()
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith('coarse_to_fine.py: error: --width %d: ' % width) and says in line


def fail_if_called(*args, **kwargs):
    raise AssertionError('the weights file was asked for before the width was checked')
