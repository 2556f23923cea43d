"""Range tests leave no trace (issue #13): after any range-test entry point, a `fit_one_cycle` is bitwise identical
(weights and every recorded loss) to the same fit on a twin learner that never ran the test. Shuffled DataLoaders and a
model with dropout, so the DataLoaders' own generators and torch's RNG both matter; with and without an optimizer."""
import random, pytest, torch, numpy as np
from torch import nn
from functools import partial
from fastai.learner import Learner
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import SGD
from fastai_llr.core import rng_state, set_rng_state
from fastai_llr.cyclical import CyclicalLLR
import fastai_llr.lr_find  # Learner.lr_find_repeated, _groups, _wd_sweep, _bs_sweep
from fastai.callback.schedule import *  # Learner.lr_find, fit_one_cycle

def _learner():
    random.seed(0); torch.manual_seed(0)  # the DataLoaders draw their generators' seeds from Python's `random`
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g); y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    ds = list(zip(x, y))
    dls = DataLoaders(DataLoader(ds[64:], bs=32, shuffle=True, drop_last=True), DataLoader(ds[:64], bs=32))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(.3), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), opt_func=partial(SGD, mom=.9), cbs=CyclicalLLR(start=(2., 1., .5), end=1.))
    return learn

ENTRY = {
    'lr_find_repeated': lambda l: l.lr_find_repeated(n_runs=2, num_it=12, show_plot=False),
    'lr_find_wd_sweep': lambda l: l.lr_find_wd_sweep(wds=(0., 1e-2), n_runs=1, num_it=12, show_plot=False),
    'lr_find_bs_sweep': lambda l: l.lr_find_bs_sweep(bss=(16, 48), n_runs=1, num_it=12, show_plot=False),
    'lr_find_groups': lambda l: l.lr_find_groups(hold_lr=1e-3, n_groups=3, n_runs=1, num_it=12, show_plot=False),
    'fastai lr_find with a policy': lambda l: l.lr_find(num_it=12, show_plot=False),
}

def _states(learn):
    "Comparable snapshots of every random state a range test could move"
    st = rng_state(learn)
    return (st['py'], tuple(map(str, st['np'])), st['torch'].tolist(), [s for _,s in st['dls']])

def _fit(learn):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2)
    return [p.detach().clone() for p in learn.model.parameters()],[float(v) for v in learn.recorder.losses]

@pytest.mark.parametrize('with_opt', [False, True], ids=['no-opt', 'opt'])
@pytest.mark.parametrize('entry', list(ENTRY))
def test_range_test_leaves_no_trace(entry, with_opt, tmp_path):
    ref,learn = _learner(),_learner()
    for l in (ref, learn):
        l.path = tmp_path
    if with_opt:  # an optimizer with state, and DataLoaders that have moved
        g = rng_state(); _fit(ref); set_rng_state(g); _fit(learn)
    g = rng_state()  # the global random states, the same for both fits
    before = _states(learn)
    with learn.no_bar(), learn.no_logging(): ENTRY[entry](learn)
    assert _states(learn) == before, entry  # every random state as it was: Python's, NumPy's, torch's, the DataLoaders'
    w1,l1 = _fit(learn)
    set_rng_state(g); w0,l0 = _fit(ref)
    assert l0 == l1, entry
    for a,b in zip(w0, w1): assert torch.equal(a, b), entry

def test_the_check_can_fail(tmp_path):
    "Moving the DataLoader's generator (what the range tests used to do) breaks the equality"
    ref,learn = _learner(),_learner()
    g = rng_state()
    learn.dls.train.rng.random()
    w1,l1 = _fit(learn)
    set_rng_state(g); w0,l0 = _fit(ref)
    assert l0 != l1
