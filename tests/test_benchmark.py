"""benchmarks/benchmark.py: the start-up's stages are marked inside problem.build without
changing the code it runs."""
import os
import sys
import types

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'benchmarks')
if BENCHMARKS_DIR not in sys.path:
    sys.path.insert(0, BENCHMARKS_DIR)

import benchmark  # noqa: E402


def test_staged_marks_around_a_call_and_restores_the_function():
    events = []
    module = types.SimpleNamespace(work=lambda x: events.append(('work', x)) or 2 * x)
    original = module.work
    with benchmark.staged(module, 'work', before=lambda: events.append('before'),
                          after=lambda: events.append('after')):
        assert module.work(3) == 6
    assert events == ['before', ('work', 3), 'after']
    assert module.work is original


def test_staged_restores_the_function_after_an_error():
    module = types.SimpleNamespace(work=lambda: 1)
    original = module.work
    try:
        with benchmark.staged(module, 'work', after=lambda: None):
            raise RuntimeError('stop')
    except RuntimeError:
        pass
    assert module.work is original
