"""No host-device synchronisation on the per-batch path.

On a CPU there is no device to wait for, so the guard makes every Tensor -> Python conversion that would synchronise
a CUDA device (`.item()`, `float()`, `int()`, `bool()`, `.tolist()`, `.numpy()`, `.cpu()`) raise while the layer-rate
mechanism runs its per-step code (`StepPipeline.__call__`, called by `opt.step`). On CUDA, `torch.cuda.set_sync_debug_mode('error')` is used as well.
"""
import pytest, torch
from functools import partial
from fastai.optimizer import Adam, SGD, OptimWrapper
from fastai.torch_core import params, trainable_params
from fastai_llr.core import LayerRates, LayerRatePolicy, StepPipeline, synth_learner
from fastai_llr.cyclical import CyclicalLLR
from fastai_llr.adaptive import LARS, LARC, MADLR
from fastai_llr.stats import GradClip, LayerStats

_SYNCING = ('item', '__float__', '__int__', '__bool__', '__index__', 'tolist', 'numpy', 'cpu')

class _Guard:
    "While `active`: Tensor->Python conversions raise; on CUDA, `torch.cuda.set_sync_debug_mode('error')` as well"
    def __init__(self): self._active,self.hits = False,[]
    @property
    def active(self): return self._active
    @active.setter
    def active(self, v):
        self._active = v
        if torch.cuda.is_available(): torch.cuda.set_sync_debug_mode('error' if v else 0)
    def wrap(self, name, f):
        guard = self
        def _inner(*args, **kwargs):
            if guard.active: guard.hits.append(name); raise RuntimeError(f'host sync: Tensor.{name} on the per-batch path')
            return f(*args, **kwargs)
        return _inner

@pytest.fixture
def guard(monkeypatch):
    g = _Guard()
    for n in _SYNCING: monkeypatch.setattr(torch.Tensor, n, g.wrap(n, getattr(torch.Tensor, n)))
    def with_guard(f, on):
        "`f` with the guard on (the mechanism's code) or off (the optimizer's own step inside it)"
        def _inner(*args, **kwargs):
            prev,g.active = g.active,on
            try: return f(*args, **kwargs)
            finally: g.active = prev
        return _inner
    # the mechanism's whole per-step work runs inside `opt.step`, in `StepPipeline.__call__`; the optimizer's own step inside
    # it (`orig`) is not ours to guard (torch's Adam reads its CPU step counter with `.item()`)
    step = StepPipeline.__call__
    monkeypatch.setattr(StepPipeline, '__call__', with_guard(lambda self, orig, *a, **k: step(self, with_guard(orig, False), *a, **k), True))
    return g

def _fit_guarded(learn, cbs):
    "On CUDA the model and data move there; the sync debug mode is on only while the mechanism's own code runs (fastai's loop syncs by design)"
    if torch.cuda.is_available(): learn.model.cuda(); learn.dls.cuda()
    learn.fit_one_cycle(2, 1e-2, cbs=cbs)

def test_guard_catches_a_sync(guard):
    "The guard is real: a policy whose multipliers come from a tensor is caught"
    class Bad(LayerRatePolicy):
        n_groups = 2
        def group_mults(self, pct): return [torch.tensor(1.).item(), 1.]
    learn = synth_learner(4)
    with pytest.raises(RuntimeError, match='host sync'): learn.fit(1, 1e-2, cbs=Bad())
    assert guard.hits

@pytest.mark.parametrize('opt_func,splitter', [(Adam, None), (partial(SGD, mom=.9), lambda m: [params(m[:4]), params(m[4:])]),
                                               (partial(OptimWrapper, opt=torch.optim.AdamW), None)])
def test_cyclical_llr_does_not_sync(guard, opt_func, splitter):
    learn = synth_learner(6, opt_func=opt_func, splitter=splitter or trainable_params)
    _fit_guarded(learn, [CyclicalLLR(), CyclicalLLR.staggered_one_cycle(2)])
    assert guard.hits == []
    assert len(learn.layer_rates.lrs) == 2*6


@pytest.mark.parametrize('opt_func', [partial(SGD, mom=.9, wd=1e-2), partial(OptimWrapper, opt=torch.optim.AdamW)], ids=['sgd', 'adamw'])
@pytest.mark.parametrize('policy', ['LARS', 'LARC', 'MADLR', 'MADLR-weights', 'all+CyclicalLLR'])
def test_adaptive_policies_do_not_sync(guard, opt_func, policy):
    "Grad mode (SGD) and update mode (AdamW), first steps (state creation) included"
    make = {'LARS': lambda: [LARS()], 'LARC': lambda: [LARC(sgd_below=1e-4)], 'MADLR': lambda: [MADLR()],
            'MADLR-weights': lambda: [MADLR(source='weights', per='group', n_groups=2)],
            'all+CyclicalLLR': lambda: [CyclicalLLR(), LARC(), MADLR(max_mult=10.)]}[policy]
    learn = synth_learner(6, opt_func=opt_func)
    _fit_guarded(learn, make())
    assert guard.hits == []
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


@pytest.mark.parametrize('opt_func', [partial(SGD, mom=.9), partial(OptimWrapper, opt=torch.optim.AdamW), Adam], ids=['sgd', 'torch-adamw', 'fastai-adam'])
@pytest.mark.parametrize('policy', ['clip-global', 'clip-layer', 'clip-value', 'clip-agc', 'stats', 'stats-group', 'everything'])
def test_clip_and_stats_do_not_sync(guard, opt_func, policy):
    "GradClip in every mode and LayerStats (Adam quantiles included) during batch events"
    make = {'clip-global': lambda: [GradClip(.1, exclude='10.*')], 'clip-layer': lambda: [GradClip(.05, mode='layer')],
            'clip-value': lambda: [GradClip(.01, mode='value')], 'clip-agc': lambda: [GradClip(.01, mode='agc')],
            'stats': lambda: [LayerStats()], 'stats-group': lambda: [LayerStats(per='group', n_groups=3)],
            'everything': lambda: [GradClip(.1), CyclicalLLR(), LARC(), MADLR(max_mult=10.), LayerStats(every=2)]}[policy]
    learn = synth_learner(6, opt_func=opt_func)
    _fit_guarded(learn, make())
    assert guard.hits == []
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())
