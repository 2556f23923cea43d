"""Schedules exact at every step count (issue #13), read from real fits.

For a seeded random sample of 500 sizes (epochs 1-30 x batches per epoch 1-64), each `fit_*` with a torch or paper
counterpart runs for real; the rate the optimizer held at every batch (the Recorder's `hps`, set by fastai's
`ParamScheduler` from its own accumulated `pct_train`) equals the counterpart's rate at that step:
step decay = `MultiStepLR` (milestones ceil(p*N) in exact rationals), SGDR = `CosineAnnealingWarmRestarts`,
CLR = `CyclicLR`, slanted triangular = ULMFiT's formula (the documented bounded variant where T*cut_frac is not whole).
The forward/backward pass is skipped (a callback cancels each batch right after the scheduler set the rates), so
the 4 x 500 fits take a few minutes on 2 cores."""
import bisect, math, random
from fractions import Fraction
import pytest, torch
from torch import nn
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.losses import MSELossFlat
from fastai.callback.core import Callback, CancelBatchException
from fastai.callback.schedule import ParamScheduler
import fastai_llr.schedules  # Learner.fit_step_decay, fit_warm_restarts, fit_clr, fit_stlr

SIZES = (lambda r: [(r.randint(1, 30), r.randint(1, 64)) for _ in range(500)])(random.Random(0))

class _SkipBatch(Callback):
    "Cancel every batch once `ParamScheduler` has set its rates: the schedule runs, the model does not"
    order = ParamScheduler.order+1
    def before_batch(self): raise CancelBatchException()

def _fit_lrs(B, fit):
    x = torch.zeros(B, 1); ds = list(zip(x, x))
    learn = Learner(DataLoaders(DataLoader(ds, bs=1), DataLoader(ds[:1], bs=1)), nn.Linear(1, 1), loss_func=MSELossFlat())
    with learn.no_bar(), learn.no_logging(): fit(learn)
    return learn.recorder.hps['lr']

def _torch_lrs(make, N):
    o = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.); ref,res = make(o),[]
    for _ in range(N): res.append(o.param_groups[0]['lr']); o.step(); ref.step()
    return res

def _stlr(T, cf=.1, ratio=32.):
    c = max(1, math.floor(T*cf))
    return [(1 + (t/c if t < c else (1 - (t-c)/(T-c)))*(ratio-1))/ratio for t in range(T)]

CASES = {
    'step decay': (lambda E,B: (lambda l: l.fit_step_decay(E, 1., cbs=_SkipBatch())),
                   lambda E,B: [.1**bisect.bisect_right([math.ceil(Fraction(str(p))*E*B) for p in (.5, .75, .9)], i) for i in range(E*B)]),
    'SGDR': (lambda E,B: (lambda l: l.fit_warm_restarts(E, 1, 1., cbs=_SkipBatch())),
             lambda E,B: _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=B), E*B)),
    'CLR': (lambda E,B: (lambda l: l.fit_clr(E, 1., cycle_epochs=2, moms=None, cbs=_SkipBatch())),
            lambda E,B: _torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(o, .1, 1., step_size_up=max(2, 2*B)//2,
                                   step_size_down=max(2, 2*B)-max(2, 2*B)//2, cycle_momentum=False), E*B)),
    'slanted triangular': (lambda E,B: (lambda l: l.fit_stlr(E, 1., cbs=_SkipBatch())), lambda E,B: _stlr(E*B)),
}

@pytest.mark.parametrize('name', list(CASES))
def test_schedule_matches_counterpart_on_500_sizes(name):
    fit,ref = CASES[name]
    bad = []
    for E,B in SIZES:
        got,exp = _fit_lrs(B, fit(E, B)),ref(E, B)
        if len(got) != len(exp) or any(abs(a-b) > 1e-9*max(1., abs(b)) for a,b in zip(got, exp)): bad.append((E, B))
    assert not bad, f'{name}: {len(bad)} of {len(SIZES)} sizes differ, e.g. {bad[:5]}'

def test_the_check_can_fail():
    "A float threshold on fastai's `pct` (what SchedStep did without `n_iter`) is caught: step 60 of 80 reads 0.7499999999999998"
    from fastai_llr.schedules import SchedStep
    from fastai.callback.schedule import ParamScheduler
    got = _fit_lrs(8, lambda l: l.fit(10, cbs=[ParamScheduler({'lr': SchedStep(1.)}), _SkipBatch()]))
    exp = CASES['step decay'][1](10, 8)
    assert got != pytest.approx(exp)
