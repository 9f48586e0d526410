"""benchmarks/benchmark.py: the start-up's stages are marked inside problem.build without
changing the code it runs; the machine line names a cap on oneDNN's instruction set."""
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


def test_compare_rounds_alternates_which_loop_goes_first(monkeypatch):
    """Round 1 reuses the run already measured; later rounds run both again, PyTorch first in
    every other one; the ratio of a round is its medians' ratio."""
    calls = []
    ours = iter([{'iteration_s': [1.0, 3.0, 2.0], 'startup_s': 4.0},
                 {'iteration_s': [1.5], 'startup_s': 5.0}])
    torch = iter([2.0, 3.0, 4.0])

    def measure(spec):
        calls.append(('ours', spec['profile'], spec['quality_iterations']))
        return next(ours)

    def pytorch_seconds(args):
        calls.append('torch')
        return next(torch)

    monkeypatch.setattr(benchmark, 'measure', measure)
    monkeypatch.setattr(benchmark, 'pytorch_seconds', pytorch_seconds)
    first = {'iteration_s': [1.2, 1.2], 'startup_s': 3.5}
    rounds = benchmark.compare_rounds(types.SimpleNamespace(rounds=3),
                                      {'profile': True, 'quality_iterations': 200}, first)
    assert calls == ['torch', 'torch', ('ours', False, 0), ('ours', False, 0), 'torch']
    assert [r['startup_s'] for r in rounds] == [3.5, 4.0, 5.0]
    assert benchmark.round_ratios(rounds) == [1.2 / 2.0, 2.0 / 3.0, 1.5 / 4.0]


def test_startup_runs_time_only_the_start_up_in_fresh_processes(monkeypatch):
    """Each extra start-up run is a worker of its own that times one iteration without the
    profile or the quality run; its start-up is what is kept."""
    specs = []
    startups = iter([3.1, 2.9, 3.4])

    def measure(spec):
        specs.append(spec)
        return {'iteration_s': [1.0], 'startup_s': next(startups)}

    monkeypatch.setattr(benchmark, 'measure', measure)
    spec = {'weights': 'w.mat', 'warmup': 3, 'iterations': 10, 'profile': True,
            'quality_iterations': 200, 'save_final': 'f.npy', 'evaluate': ['b.npy']}
    assert benchmark.startup_runs(spec, 3) == [3.1, 2.9, 3.4]
    assert benchmark.startup_runs(spec, 0) == []
    assert len(specs) == 3
    for run in specs:
        assert (run['weights'], run['warmup'], run['iterations'], run['profile']) == \
            ('w.mat', 0, 1, False)
        assert (run['quality_iterations'], run['save_final'], run['evaluate']) == (0, None, [])
    assert spec['iterations'] == 10  # the caller's spec is left as it was


def test_machine_lines_say_when_onednn_is_capped(monkeypatch):
    """An AVX2 CPU imitated on an AVX-512 one (ONEDNN_MAX_CPU_ISA=AVX2) is not reported as the
    AVX-512 machine it runs on, by benchmark.py or tuning_report.py."""
    import benchmark_problem
    import tuning_report
    for name in ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA'):
        monkeypatch.delenv(name, raising=False)
    for machine in (lambda: benchmark.machine(None), tuning_report.machine):
        monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
        assert benchmark_problem.onednn_text(True, machine()['onednn_isa_limit']) == 'on'
        monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'avx2')
        assert (benchmark_problem.onednn_text(True, machine()['onednn_isa_limit'])
                == 'on, capped at AVX2 by ONEDNN_MAX_CPU_ISA')
    assert benchmark_problem.onednn_text(False, 'AVX2') == 'OFF'
