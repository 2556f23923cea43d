"""`benchmarks/gpu.py` on a CPU: the no-CUDA exit, the command line, and the pieces that do not need a GPU (the sync
guard with a fake mode setter, the step timer with fake events, the interleaved rounds with both, the table). No timings
are asserted."""
import subprocess, sys, time
from pathlib import Path
import pytest, torch
from fastai.basics import Callback, CancelBatchException, CancelStepException
from fastai_llr.core import synth_dls, synth_learner, synth_model

BENCH = Path(__file__).resolve().parents[1]/'benchmarks'
sys.path.insert(0, str(BENCH))
import gpu

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Tiny fits are many times faster on one thread than with the threads contending (restored afterwards)"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _run(*args):
    return subprocess.run([sys.executable, str(BENCH/'gpu.py'), *args], capture_output=True, text=True, timeout=120)

@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available: the script would time it")
def test_no_cuda_exit():
    r = _run()
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == gpu.NO_CUDA and 'peers.py' in r.stdout

def test_help():
    "Every option is listed with its help text"
    r = _run('--help')
    assert r.returncode == 0, r.stderr
    out = ' '.join(r.stdout.split())
    for opt,words in (('--rounds', 'interleaved rounds'), ('--batches', 'batches (steps) per epoch'), ('--json PATH', 'as JSON'),
                      ('--models NAME', 'peers.MODELS')):
        assert opt in out and words in out, (opt, out)

class Mode:
    "A fake `set_mode`: the current mode and every call"
    def __init__(self): self.now,self.calls = 0,[]
    def __call__(self, m): self.now = m; self.calls.append(m)

class Watch(Callback):
    "Records the mode in the step's events, in the optimizer's step and at the end of each training batch; may raise in `before_step`"
    def __init__(self, mode, raise_=None): self.mode,self.raise_,self.seen = mode,raise_,[]
    def before_fit(self):
        step = self.opt.step
        def _step(*a, **k): self.seen.append(('step', self.mode.now)); return step(*a, **k)
        self.opt.step = _step
    def before_step(self):
        self.seen.append(('before_step', self.mode.now))
        if self.raise_: raise self.raise_
    def after_step(self): self.seen.append(('after_step', self.mode.now))
    def after_batch(self):
        if self.training: self.seen.append(('after_batch', self.mode.now))

def _fit(raise_=None):
    "A fit of a tiny learner with the guard on a fake mode setter; returns the setter and what `Watch` saw"
    mode = Mode(); w = Watch(mode, raise_)
    gpu.guarded_fit(synth_learner(3), [w] + gpu.sync_guard(mode), mode)
    return mode,w.seen

def test_guard_step():
    "'error' from the first `before_step` callback to the last `after_step` one, the optimizer's step included; 0 between steps"
    mode,seen = _fit()
    assert seen[:4] == [('before_step', 'error'), ('step', 'error'), ('after_step', 'error'), ('after_batch', 0)]
    assert seen == seen[:4]*6  # 6 training batches
    assert mode.calls[:12] == ['error', 0]*6 and mode.now == 0

@pytest.mark.parametrize('exc', [CancelBatchException, CancelStepException])
def test_guard_cancel(exc):
    "A cancellation raised inside the guarded region: the mode is 0 again by the end of the batch"
    mode,seen = _fit(exc())
    assert ('step', 'error') not in seen and seen.count(('before_step', 'error')) == 6
    assert [s for s in seen if s[0] == 'after_batch'] == [('after_batch', 0)]*6 and mode.now == 0

def test_guard_exception():
    "A real exception inside the region skips every later fastai event: `guarded_fit`'s `finally` puts the mode back"
    mode,learn = Mode(),synth_learner(3)
    with pytest.raises(RuntimeError, match='boom'):
        with learn.no_bar(), learn.no_logging(): learn.fit(1, .1, cbs=[Watch(mode, RuntimeError('boom'))] + gpu.sync_guard(mode))
    assert mode.now == 'error'  # fastai alone leaves it on...
    mode = Mode()
    with pytest.raises(RuntimeError, match='boom'): gpu.guarded_fit(synth_learner(3), [Watch(mode, RuntimeError('boom'))] + gpu.sync_guard(mode), mode)
    assert mode.calls == ['error', 0] and mode.now == 0  # ...`guarded_fit` does not

class FakeEvent:
    "A CUDA event stand-in on the host clock; counts the waits"
    waits = 0
    def record(self): self.t = time.perf_counter()
    def synchronize(self): FakeEvent.waits += 1
    def elapsed_time(self, end): return 1e3*(end.t - self.t)

def test_step_timer():
    "One time per training step (validation batches left out), read after one wait per fit"
    FakeEvent.waits, timer = 0, gpu.StepTimer(FakeEvent)
    learn = synth_learner(3)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, .1, cbs=timer.callbacks())
    ms = timer.ms()
    assert len(ms) == 6 and all(t >= 0 for t in ms) and FakeEvent.waits == 1

class Syncs(Callback):
    "Stands in for a host sync under the debug mode: raises torch's error when the fake mode is 'error'"
    def __init__(self, mode): self.mode = mode
    def before_step(self):
        if self.mode.now == 'error': raise RuntimeError('called a synchronizing CUDA operation')

def test_run_model():
    "A guarded config that syncs is reported and dropped, its unguarded peer with the same sync runs, the rest are timed"
    from fastai.optimizer import SGD
    mode,none = Mode(),(lambda: [])
    cfgs,peer_keys = gpu.configs({'A': ((SGD, lambda: [Syncs(mode)]), (SGD, lambda: [Syncs(mode)])), 'B': ((SGD, none), (SGD, none))}, none)
    assert peer_keys == {'A': 'A | peer', 'B': 'none'} and set(cfgs) == {'A | ours', 'A | peer', 'B | ours', 'none'}
    times,errors = gpu.run_model(cfgs, {'A | ours', 'B | ours'}, synth_dls(), lambda: synth_model(3), 2, torch.device('cpu'), mode, FakeEvent)
    assert list(errors) == ['A | ours'] and errors['A | ours'].startswith('host sync inside the step: ')
    assert times['A | ours'] == [] and all(len(times[k]) == 2*6 for k in ('A | peer', 'B | ours', 'none')) and mode.now == 0
    res = gpu.model_results(times, errors, peer_keys)
    assert res['A']['side'] == 'ours' and 'ratio' in res['B']
    assert 'ours: host sync' in gpu.format_table({r: {'m': v} for r,v in res.items()}, ['m'], {})

def test_table():
    "Ratios are median(ours)/median(peer); missing cells and errors are shown as such"
    times = {'X | ours': [1., 2., 300.], 'none': [4., 4., 8.], 'Y | ours': [3., 3., 3.], 'Y | peer': [2., 1., 1.]}
    res = gpu.model_results(times, {}, {'X': 'none', 'Y': 'Y | peer'})
    assert res['X'] == dict(ours_ms=2., peer_ms=4., ratio=.5) and res['Y']['ratio'] == 3.
    err = gpu.model_results({}, {'Z | peer': 'failed: ValueError: no'}, {'Z': 'Z | peer'})
    assert err == {'Z': dict(side='peer', error='failed: ValueError: no')}
    table = gpu.format_table({'X': {'a': res['X'], 'b': res['Y']}, 'Z': {'a': err['Z']}}, ['a', 'b'], {'X': 1.05})
    lines = table.splitlines()
    assert lines[1].split() == ['ours', '/', 'peer', 'a', 'b', 'target']
    assert lines[2].split() == ['X', '0.50', '3.00', '≤', '1.05']
    assert lines[3].split() == ['Z', 'peer:', 'failed', '-']
    assert 'a: 2.00/4.00' in table and 'b: 3.00/1.00' in table
