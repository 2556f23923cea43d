"""Regression tests for issue #12: the layer-rate policies in the rest of the fastai lifecycle.

One group of tests per numbered point of the issue's "Why". Every test compares with something computed without the code
under test: a formula, a twin learner that never had a policy, or a hand-set reference. The comment above each test
records how it failed on main@ae6f530, before the rewrite.
"""
import threading
import numpy as np, pandas as pd, pytest, torch
from functools import partial
from torch import nn
from fastai.basics import Learner, Callback, CancelFitException, Datasets, ItemGetter, CrossEntropyLossFlat, noop
from fastai.callback.progress import ProgressCallback
from fastai.callback.training import GradientAccumulation
from fastai.callback.tracker import TerminateOnNaNCallback
import fastai.callback.schedule, fastai.callback.hook  # noqa: F401 (patch Learner.fit_one_cycle, Learner.summary)
from fastai.optimizer import Optimizer, OptimWrapper, SGD, Adam, RMSProp
from fastai.torch_core import params
from fastai_llr.core import synth_learner, synth_model, synth_dls
from fastai_llr.cyclical import CyclicalLLR
from fastai_llr.adaptive import LARS, LARC, MADLR
from fastai_llr.stats import GradClip, LayerStats
import fastai_llr.schedules  # noqa: F401 (patches Learner.fit_stlr, fit_warm_restarts, ...)

# ----------------------------------------------------------------------------------------------------------------------
# Shared helpers

NAMES = [n for n,_ in synth_model().named_parameters()]  # the user's module paths: '0.weight', '0.bias', ... '10.bias'
N_ITER = len(synth_dls().train)  # optimizer steps per epoch (6)

def quiet(learn):
    "No progress bar, no printed table"
    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn

def mk(cbs=None, opt_func=SGD, **kwargs):
    "The 6-layer MLP learner on synthetic data; plain fastai SGD (no momentum, no weight decay) unless told"
    return quiet(synth_learner(6, cbs=cbs, opt_func=opt_func, **kwargs))

def eval_learner(cbs=None, **kwargs):
    "The same model and data through fastai `Datasets`, so that `predict` can decode"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    dss = Datasets(list(zip(x, y)), tfms=[[ItemGetter(0)], [ItemGetter(1)]], splits=[list(range(64, 256)), list(range(64))])
    dls = dss.dataloaders(bs=32, shuffle=False, drop_last=True)
    return quiet(Learner(dls, synth_model(), loss_func=CrossEntropyLossFlat(), opt_func=SGD, cbs=cbs, **kwargs))

def weights(model): return {n: p.detach().clone() for n,p in model.named_parameters()}

def rows(x):
    "Number of recorded steps of a record (a list of 1-D tensors, a tensor, an array or a DataFrame of steps)"
    if x is None: return 0
    if isinstance(x, pd.DataFrame): return x['step'].nunique() if len(x) else 0
    return len(x)

def as_np(x):
    "A record as one numpy array (a list of equal 1-D tensors is stacked)"
    if isinstance(x, (list, tuple)): return np.stack([np.asarray(o) for o in x]) if len(x) else np.zeros((0,))
    return np.asarray(x)

def within(f, timeout=60):
    "Run `f` in a thread: a call that leaves fastai's `learn.lock` held makes the next evaluation hang, not the test suite"
    res = {}
    def _run():
        try: res['value'] = f()
        except BaseException as e: res['error'] = e
    t = threading.Thread(target=_run, daemon=True)
    t.start(); t.join(timeout)
    if t.is_alive(): pytest.fail(f"hung for {timeout}s (fastai's learn.lock is held)")
    if 'error' in res: raise res['error']
    return res.get('value')

ITEM = (torch.linspace(-1, 1, 8), torch.tensor(0))
EVALS = {
    'validate': lambda l: np.asarray(l.validate(), dtype=float),
    'get_preds': lambda l: l.get_preds()[0],
    'predict': lambda l: l.predict(ITEM)[2],
    'summary': lambda l: str(l.summary()).split('Callbacks:')[0],  # the callback list differs with and without the policy
}

def same(a, b):
    if isinstance(a, str): assert a == b
    else: torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b))

class Probe(Callback):
    "Weights before and after the optimizer step at training iteration `at`, and the raw gradient (before any policy)"
    order = -1000
    def __init__(self, at=0, model=None): self.at,self.model = at,model
    def _mine(self): return self.training and self.train_iter == self.at
    def _ps(self): return (self.model or self.learn.model).named_parameters()
    def before_batch(self):
        if self._mine(): self.w0 = {n: p.detach().clone() for n,p in self._ps()}
    def before_step(self):
        if self._mine(): self.g = {n: None if p.grad is None else p.grad.clone() for n,p in self._ps()}
    def after_batch(self):
        if self._mine(): self.w1 = {n: p.detach().clone() for n,p in self._ps()}
    def delta(self, n): return self.w1[n] - self.w0[n]

def assert_sgd_step(probe, lr, names=None):
    "The probed step is plain SGD without momentum nor weight decay: `-lr * g` to float32 rounding"
    names = names or list(probe.g)
    assert max((lr*probe.g[n]).abs().max() for n in names) > 1e-5, "the step is too small to tell rates apart"
    for n in names:
        torch.testing.assert_close(probe.delta(n), -lr*probe.g[n], rtol=1e-3, atol=1e-7,
                                   msg=lambda m: f"{n}: step is not -{lr:g}*g\n{m}")

def all_policies(clip_mode='layer'):
    return [CyclicalLLR(start=(.5, 1., 2.), end=(2., 1., .5)), LARC(), MADLR(), GradClip(.05, mode=clip_mode), LayerStats()]

def snapshot(learn, cbs):
    "Every record of the policies `cbs`, as numpy arrays / DataFrames"
    res = {}
    for i,cb in enumerate(cbs):
        k = f'{i}:{type(cb).__name__}'
        if isinstance(cb, CyclicalLLR): res[k] = (np.array(cb.lrs), np.array(cb.iters), list(cb.lr_names))
        elif isinstance(cb, MADLR): res[k] = (as_np(cb.hist), as_np(cb.raw_hist))
        elif isinstance(cb, LARS): res[k] = (as_np(cb.hist),)
        elif isinstance(cb, GradClip): res[k] = (as_np(cb.norms), as_np(cb.factors))
        elif isinstance(cb, LayerStats): res[k] = (learn.layer_stats.copy(), list(cb.layer_names or []))
    return res

def assert_same_records(a, b):
    assert a.keys() == b.keys()
    for k in a:
        for x,y in zip(a[k], b[k]):
            if isinstance(x, pd.DataFrame): pd.testing.assert_frame_equal(x, y, obj=k)
            elif isinstance(x, list): assert x == y, k
            else: np.testing.assert_array_equal(x, y, err_msg=k)

def fail_in_opt_step(monkeypatch, cls, at, exc):
    "Make the optimizer's `step` raise `exc` at its `at`-th call (0-based), the way Ctrl-C or a bug inside the step would"
    real,n = cls.step,[0]
    def step(self, *args, **kwargs):
        n[0] += 1
        if n[0] == at+1: raise exc('boom inside opt.step')
        return real(self, *args, **kwargs)
    monkeypatch.setattr(cls, 'step', step)
    return lambda: monkeypatch.setattr(cls, 'step', real)

POLICIES = {'CyclicalLLR': lambda: CyclicalLLR(start=(.5, 2.), end=(2., .5)), 'LARS': LARS, 'LARC': LARC, 'MADLR': MADLR,
            'GradClip': lambda: GradClip(.1, mode='layer'), 'LayerStats': LayerStats}

# ----------------------------------------------------------------------------------------------------------------------
# Point 1: attached policies break evaluation (before any fit, after a fit, and in a fit with zero optimizer steps)

# main@ae6f530: AttributeError "Exception occured in `<Policy>` when calling event `before_fit`: 'NoneType' object has no
# attribute 'hypers'" (and for validate/get_preds/predict learn.lock stays held, so the next get_preds would hang)
@pytest.mark.parametrize('call', list(EVALS))
@pytest.mark.parametrize('policy', list(POLICIES))
def test_evaluation_before_any_fit(policy, call):
    learn,ref = eval_learner(cbs=POLICIES[policy]()),eval_learner()
    assert learn.opt is None
    got = within(lambda: EVALS[call](learn))
    assert not learn.lock.locked()
    same(got, EVALS[call](ref))
    same(within(lambda: learn.get_preds()[0]), ref.get_preds()[0])  # and the next evaluation does not hang

# main@ae6f530: ValueError "Exception occured in `CyclicalLLR` when calling event `after_fit`: cannot reshape array of
# size 0 into shape (0,newaxis)"
@pytest.mark.parametrize('call', list(EVALS))
def test_evaluation_after_fit_cyclical(call):
    cb = CyclicalLLR(start=(.5, 1., 2.), end=(2., 1., .5))  # one optimizer group: depth groups (the split path)
    learn = eval_learner(cbs=cb)
    learn.fit(1, 1e-2)
    np.testing.assert_allclose(cb.lrs[0], [5e-3, 1e-2, 2e-2], rtol=1e-6)  # pct 0: lr * start
    before = snapshot(learn, [cb])
    got = within(lambda: EVALS[call](learn))
    assert not learn.lock.locked()
    assert_same_records(before, snapshot(learn, [cb]))
    learn.remove_cb(cb)
    same(got, EVALS[call](learn))

# main@ae6f530: ValueError "... `CyclicalLLR` when calling event `after_fit`: cannot reshape array of size 0 into shape
# (0,newaxis)" (GradientAccumulation: the step is always cancelled; start_epoch=n: every epoch is skipped)
@pytest.mark.parametrize('how', ['GradientAccumulation', 'resume-finished', 'fit0'])
def test_fit_with_zero_steps(how):
    cbs = all_policies()
    learn = mk(cbs=cbs)
    if how in ('resume-finished', 'fit0'): learn.fit_one_cycle(2, 1e-2)
    w0 = weights(learn.model)
    if how == 'GradientAccumulation': learn.fit(1, 1e-2, cbs=GradientAccumulation(n_acc=10_000))
    elif how == 'fit0': learn.fit(0, 1e-2)
    else: learn.fit_one_cycle(2, 1e-2, start_epoch=2)
    for n,w in weights(learn.model).items(): assert torch.equal(w, w0[n]), n
    cyc,larc,mad,clip,stats = cbs
    assert cyc.lrs.shape[0] == 0 and len(cyc.iters) == 0
    assert rows(larc.hist) == rows(mad.hist) == rows(mad.raw_hist) == rows(clip.norms) == rows(clip.factors) == 0
    assert rows(learn.layer_stats) == 0

# ----------------------------------------------------------------------------------------------------------------------
# Point 2: evaluation after a fit wipes the training records

# main@ae6f530: AssertionError "Arrays are not equal 0:LARC (shapes (6, 12), (0,) mismatch)": validate/get_preds/
# predict/summary fire before_fit, which resets every record (LARC.hist, MADLR.hist, GradClip.norms, layer_stats)
@pytest.mark.parametrize('call', list(EVALS))
def test_evaluation_keeps_training_records(call):
    cbs = [LARC(), MADLR(), GradClip(.05, mode='layer'), LayerStats()]
    learn = eval_learner(cbs=cbs, wd=1e-2)
    learn.fit(1, 1e-2)
    before = snapshot(learn, cbs)
    assert len(before['3:LayerStats'][0]) == N_ITER*len(NAMES) == 72
    assert all(rows(cb.hist) == N_ITER for cb in cbs[:2]) and rows(cbs[2].norms) == N_ITER
    within(lambda: EVALS[call](learn))
    assert_same_records(before, snapshot(learn, cbs))

# ----------------------------------------------------------------------------------------------------------------------
# Point 3: an interrupted fit leaves the optimizer modified

# main@ae6f530: AssertionError "0.weight: step is not -0.001*g" (LARS: "0.bias: ...", an excluded tensor): the repair
# in before_fit puts back the rate saved by the interrupted step (.1) over the 1e-3 that `fit` just set
@pytest.mark.parametrize('exc', [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize('policy', ['CyclicalLLR', 'LARS'])
def test_interrupted_step_then_fresh_fit(monkeypatch, policy, exc):
    def run(cbs):
        learn = mk(cbs=cbs)
        undo = fail_in_opt_step(monkeypatch, Optimizer, at=2, exc=exc)
        with pytest.raises(exc): learn.fit(1, .1)
        undo()
        probe = Probe()
        learn.fit(1, 1e-3, cbs=probe)
        return learn,probe
    if policy == 'CyclicalLLR': learn,probe = run(CyclicalLLR(start=1., end=1.))  # factor 1 everywhere
    else: learn,probe = run(LARS())  # gradient mode on SGD: the biases are excluded (factor 1)
    assert_sgd_step(probe, 1e-3, NAMES if policy == 'CyclicalLLR' else [n for n in NAMES if n.endswith('.bias')])
    twin,_ = run(None)
    assert learn.opt.hypers == twin.opt.hypers

# main@ae6f530: AssertionError: 3 param groups after the interrupted fit instead of 1 (the per-slot groups stay in the
# optimizer; a later slice would be spread over the wrong groups)
@pytest.mark.parametrize('opt', ['fastai', 'torch'])
def test_interrupted_split_path_keeps_param_groups(monkeypatch, opt):
    opt_func,cls = (SGD, Optimizer) if opt == 'fastai' else (partial(OptimWrapper, opt=torch.optim.SGD), torch.optim.SGD)
    def run(cbs):
        learn = mk(opt_func=opt_func)
        learn.create_opt()
        fail_in_opt_step(monkeypatch, cls, at=2, exc=RuntimeError)
        with pytest.raises(RuntimeError): learn.fit(1, 1e-2, cbs=cbs)
        return learn
    learn,twin = run(CyclicalLLR(start=(.5, 1., 2.), end=(.5, 1., 2.))),run(None)
    assert len(twin.opt.param_lists) == 1
    assert len(learn.opt.param_lists) == 1
    assert [list(map(id, pl)) for pl in learn.opt.param_lists] == [list(map(id, learn.model.parameters()))]
    assert learn.opt.hypers == twin.opt.hypers

# main@ae6f530: AssertionError [0.0] != [0.01]: gradient-mode LARC moves weight decay into the gradients and zeroes the
# optimizer's wd for the step; the interrupted step never puts it back
@pytest.mark.parametrize('exc', [RuntimeError, KeyboardInterrupt])
def test_interrupted_larc_restores_weight_decay(monkeypatch, exc):
    learn = mk(opt_func=partial(SGD, mom=0., wd=1e-2))
    fail_in_opt_step(monkeypatch, Optimizer, at=1, exc=exc)
    with pytest.raises(exc): learn.fit(1, 1e-2, cbs=LARC())
    assert [h['wd'] for h in learn.opt.hypers] == [1e-2]

# ----------------------------------------------------------------------------------------------------------------------
# Point 4: gradient-mode LARS/LARC/MADLR decay the biases fastai exempts from weight decay (wd_bn_bias=False)

# main@ae6f530: AssertionError "0.bias: Tensor-likes are not close! ... Greatest absolute difference: 0.00336": the bias
# (factor 1, do_wd=False) is decayed through the gradient (lr .1, wd .1)
@pytest.mark.parametrize('policy', [LARS, LARC, MADLR])
def test_grad_mode_respects_do_wd(policy):
    def first_step(cbs):
        learn,probe = mk(opt_func=partial(SGD, mom=0., wd=1e-1)),Probe()
        assert not learn.wd_bn_bias
        learn.fit(1, .1, cbs=[probe] + cbs)
        return probe
    p,ref = first_step([policy()]),first_step([])
    biases = [n for n in NAMES if n.endswith('.bias')]
    for n in biases: torch.testing.assert_close(p.delta(n), ref.delta(n), rtol=1e-5, atol=1e-7, msg=lambda m: f"{n}: {m}")
    # ...and fastai's own step for a bias is plain SGD, no decay (the reference is what we think it is)
    assert_sgd_step(ref, .1, biases)

# ----------------------------------------------------------------------------------------------------------------------
# Point 5: a fit stopped mid-epoch loses the records of its last epoch

class CancelAt(Callback):
    "Cancel the fit after `n` optimizer steps (fastai's TrainEvalCallback has counted the step by now)"
    def __init__(self, n): self.n = n
    def after_batch(self):
        if self.training and self.train_iter == self.n: raise CancelFitException()

class NaNLossAt(Callback):
    "Report a NaN loss at training iteration `at` (after its step is taken), as a diverging run does"
    def __init__(self, at): self.at = at
    def after_loss(self):
        if self.training and self.train_iter == self.at: self.learn.loss = self.loss*float('nan')

# main@ae6f530: AssertionError 6 != 9: records are flushed only in after_epoch, which a cancelled fit skips (the three
# steps of the second epoch are lost)
@pytest.mark.parametrize('how', ['CancelFitException', 'TerminateOnNaN'])
def test_cancelled_fit_keeps_records_up_to_stop(how):
    k = N_ITER + 3  # stop after the 3rd step of the 2nd epoch: 9 completed steps
    stop = [CancelAt(k)] if how == 'CancelFitException' else [NaNLossAt(k-1), TerminateOnNaNCallback()]
    cbs = all_policies()
    learn = mk(cbs=cbs, opt_func=partial(SGD, mom=.9))
    learn.fit(2, 1e-2, cbs=stop)
    assert learn.train_iter == k
    cyc,larc,mad,clip,stats = cbs
    assert cyc.lrs.shape[0] == k and list(cyc.iters) == list(range(k))
    assert [rows(r) for r in (larc.hist, mad.hist, mad.raw_hist, clip.norms, clip.factors)] == [k]*5
    assert rows(learn.layer_stats) == k and learn.layer_stats['step'].max() == k-1

# ----------------------------------------------------------------------------------------------------------------------
# Point 6: the set of tensors with gradients changes inside a fit (unfreezing at an epoch boundary)

class UnfreezeAt(Callback):
    def __init__(self, epoch=1): self.at = epoch
    def before_epoch(self):
        if self.epoch == self.at: self.learn.unfreeze()

def frozen_learner(cbs):
    learn = mk(cbs=cbs, splitter=lambda m: [params(m[:6]), params(m[6:])])
    learn.freeze()
    frozen = [n for n,p in learn.model.named_parameters() if not p.requires_grad]
    assert len(frozen) == 6  # 0, 2, 4 (weight and bias)
    return learn,frozen

# main@ae6f530: RuntimeError "Exception occured in `LayerStats` when calling event `after_fit`: Sizes of tensors must
# match except in dimension 0. Expected size 6 but got size 12"
def test_unfreeze_inside_fit_layer_stats():
    cb,probes = LayerStats(),[Probe(at=0), Probe(at=N_ITER)]
    learn,frozen = frozen_learner(cb)
    learn.fit(2, 1e-2, cbs=[UnfreezeAt(1)] + probes)
    assert sorted(cb.layer_names) == sorted(NAMES)
    g = learn.layer_stats.pivot(index='step', columns='layer', values='g_norm')
    assert g.shape == (2*N_ITER, len(NAMES))
    first = g.index < N_ITER
    assert g.loc[first, frozen].isna().all().all()  # no gradient while frozen: NaN, not 0
    assert g.loc[first, [n for n in NAMES if n not in frozen]].notna().all().all()
    assert g.loc[~first].notna().all().all()
    for pr in probes:  # each column holds its own tensor's gradient norm, before and after the set changed
        names = [n for n in NAMES if pr.g[n] is not None]
        np.testing.assert_allclose(g.loc[pr.at, names].to_numpy(float), [pr.g[n].norm().item() for n in names], rtol=1e-5)

# main@ae6f530: RuntimeError "Exception occured in `GradClip` when calling event `after_epoch`: Sizes of tensors must
# match except in dimension 0. Expected size 6 but got size 12" (the per-tensor records of the two sets of tensors)
def test_unfreeze_inside_fit_gradclip_layer():
    cb,probes = GradClip(1e-3, mode='layer'),[Probe(at=0), Probe(at=N_ITER)]
    learn,frozen = frozen_learner(cb)
    learn.fit(2, 1e-2, cbs=[UnfreezeAt(1)] + probes)
    norms,factors = torch.as_tensor(cb.norms, dtype=torch.float32),torch.as_tensor(cb.factors, dtype=torch.float32)
    for rec in (norms, factors):
        assert rec.shape == (2*N_ITER, len(NAMES))
        assert (rec[:N_ITER].isnan().sum(1) == len(frozen)).all()  # one NaN column per frozen tensor
        assert not rec[N_ITER:].isnan().any()
    assert (factors[N_ITER:] < 1).all()  # max_norm 1e-3 clips every tensor
    for pr in probes:  # the recorded pre-clip norms are the gradients' norms (columns in any order)
        got = norms[pr.at][~norms[pr.at].isnan()].sort().values
        ref = torch.tensor(sorted(pr.g[n].norm().item() for n in NAMES if pr.g[n] is not None))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)

# ----------------------------------------------------------------------------------------------------------------------
# Point 7: LayerStats' eff_q* for non-Adam adaptive optimizers

def _rmsprop_eff(opt, p, h): return h['lr']/(opt.state[p]['sqr_avg'].sqrt() + h['eps'])  # fastai RMSProp: no bias correction
def _torch_rmsprop_eff(opt, p, h): return h['lr']/(opt.opt.state[p]['square_avg'].sqrt() + h['eps'])
def _adagrad_eff(opt, p, h):
    s = opt.opt.state[p]
    return h['lr']/(1 + (float(s['step'])-1)*h['lr_decay'])/(s['sum'].sqrt() + h['eps'])

EFF = {'fastai-RMSProp': (RMSProp, _rmsprop_eff),
       'torch-RMSprop': (partial(OptimWrapper, opt=torch.optim.RMSprop), _torch_rmsprop_eff),
       'torch-Adagrad': (partial(OptimWrapper, opt=partial(torch.optim.Adagrad, lr_decay=.1)), _adagrad_eff)}

# main@ae6f530: AssertionError on eff_q50 of 0.weight: fastai RMSProp ~10x low (Adam's bias correction applied); torch
# RMSprop and Adagrad report 0 (state 'square_avg' / 'sum' not read)
@pytest.mark.parametrize('opt', list(EFF))
def test_effective_step_quantiles(opt):
    opt_func,eff = EFF[opt]
    learn = mk(opt_func=opt_func)
    learn.fit(1, 1e-2, cbs=LayerStats(max_elements=1024))  # largest tensor has 256 elements: no subsampling
    df = learn.layer_stats
    last = df[df['step'] == df['step'].max()].set_index('layer')
    # the torch optimizers' own param_groups hold their hyper-parameters under torch's names
    hs = learn.opt.opt.param_groups if isinstance(learn.opt, OptimWrapper) else learn.opt.hypers
    q = torch.tensor([.1, .5, .9], dtype=torch.float64)
    for n,p in learn.model.named_parameters():
        ref = torch.quantile(eff(learn.opt, p, hs[0]).flatten().double(), q).numpy()
        got = last.loc[n, ['eff_q10', 'eff_q50', 'eff_q90']].to_numpy(dtype=float)
        np.testing.assert_allclose(got, ref, rtol=1e-4, err_msg=n)

# ----------------------------------------------------------------------------------------------------------------------
# Point 8: names under wrappers, splitter groups without parameters, parameters on the root module

def compile_eager(model):
    "`torch.compile` (the eager backend: the same `_orig_mod.` wrapper as inductor without a C++ build)"
    try: return torch.compile(model, backend='eager')
    except Exception as e: pytest.skip(f"torch.compile unavailable here: {e}")

# main@ae6f530: AssertionError: LayerStats names are '_orig_mod.0.weight'...; and `exclude='10.*'` matches nothing, so
# layer 10's step is clipped ("10.weight: step is not -0.01*g")
def test_compiled_model_uses_user_names():
    learn = mk()
    orig = learn.model
    learn.model = compile_eager(orig)
    stats,clip,probe = LayerStats(),GradClip(1e-3, mode='layer', exclude='10.*'),Probe(model=orig)
    learn.fit(1, 1e-2, cbs=[probe, clip, stats])
    assert sorted(stats.layer_names) == sorted(NAMES)
    assert set(learn.layer_stats['layer']) == set(NAMES)
    assert_sgd_step(probe, 1e-2, ['10.weight', '10.bias'])  # excluded: not clipped
    for n in ('0.weight', '8.weight'):  # clipped to the norm max_norm
        assert probe.g[n].norm() > 1e-2
        torch.testing.assert_close(probe.delta(n).norm(), torch.tensor(1e-2*1e-3), rtol=1e-2, atol=0)

# main@ae6f530: AssertionError: lr_names ['_orig_mod.0…_orig_mod.2', ...] / ['module.0…module.2', ...] instead of the
# unwrapped model's ['0…2', '4…6', '8…10']
@pytest.mark.parametrize('wrapper', ['compile', 'DataParallel'])
def test_depth_group_names_under_wrappers(wrapper):
    def names(wrap):
        cb,learn = CyclicalLLR(start=1., end=1., n_groups=3),mk()
        learn.model = wrap(learn.model)
        learn.fit(1, 1e-3, cbs=cb)
        return list(cb.lr_names)
    ref = names(lambda m: m)
    got = names(compile_eager if wrapper == 'compile' else nn.DataParallel)  # DataParallel on CPU: DDP's `module.` prefix
    assert len(ref) == 3
    assert not any('_orig_mod' in n or 'module.' in n for n in got), got
    assert got == ref

def applied_rate(probe, n, tol=1e-5):
    "The rate plain SGD applied to tensor `n` at the probed step, read from the update: median of -Δw/g"
    g = probe.g[n]; ok = g.abs() > tol
    return (-probe.delta(n)[ok]/g[ok]).median().item()

# main@ae6f530: AssertionError on 4.weight: trains at 2e-2 instead of 5e-3. With an empty optimizer group the 3 slots
# (opt group x depth group) happen to number the optimizer's 3 groups, so the multipliers are applied per optimizer
# group, shifted by one after the empty group (and `lrs` columns follow the slots, not what was applied)
def test_empty_splitter_group_keeps_columns_aligned():
    cb,probe = CyclicalLLR(start=(.5, 2.), end=(.5, 2.)),Probe()  # two depth groups: layers 0 2 4 | 6 8 10
    learn = mk(cbs=cb, splitter=lambda m: [params(m[:4]), [], params(m[4:])])
    learn.fit(1, 1e-2, cbs=probe)
    for n,m in [('0.weight', .5), ('2.weight', .5), ('4.weight', .5), ('6.weight', 2.), ('10.weight', 2.)]:
        assert applied_rate(probe, n) == pytest.approx(1e-2*m, rel=1e-3), n  # the hand-set rates
    assert cb.lrs.shape == (N_ITER, len(cb.lr_names))
    assert cb.lr_names == ['0…4', '6…10']  # one column per layer group of the policy: the empty optimizer group has none
    named = [0, 1]
    assert sorted(set(cb.lrs[0][named].round(8))) == [5e-3, 2e-2], (cb.lr_names, cb.lrs[0])
    assert cb.lrs[0, 0] == pytest.approx(5e-3) and cb.lrs[0, -1] == pytest.approx(2e-2), (cb.lr_names, cb.lrs[0])
    assert '10' in cb.lr_names[-1] and '10' not in cb.lr_names[0]

class RootScaled(nn.Module):
    "A body and a parameter of the root module used at the output"
    def __init__(self):
        super().__init__()
        self.body = synth_model()
        self.scale = nn.Parameter(torch.full((3,), 1.5))
    def forward(self, x): return self.body(x)*self.scale

# main@ae6f530: AssertionError: the root's `scale` trains at 5e-3 (group 0's multiplier .5) instead of 2e-2 (the last
# group's multiplier 2)
def test_root_parameter_in_last_depth_group():
    learn = quiet(Learner(synth_dls(), RootScaled(), loss_func=CrossEntropyLossFlat(), opt_func=SGD))
    cb,probe = CyclicalLLR(start=(.5, 1., 2.), end=(.5, 1., 2.)),Probe()
    learn.fit(1, 1e-2, cbs=[cb, probe])
    assert applied_rate(probe, 'body.0.weight') == pytest.approx(5e-3, rel=1e-3)
    assert applied_rate(probe, 'body.10.weight') == pytest.approx(2e-2, rel=1e-3)
    assert applied_rate(probe, 'scale') == pytest.approx(2e-2, rel=1e-3)

# ----------------------------------------------------------------------------------------------------------------------
# Point 9: host-to-device copies on the batch path (`torch.tensor(..., device=...)` synchronises on CUDA)

class Window(Callback):
    "Open the window just after the first optimizer step, close it just before the last one"
    order = -1000
    def __init__(self, flag, total): self.flag,self.total = flag,total
    def before_fit(self): self.n = 0
    def after_step(self):
        self.n += 1
        if self.n == 1: self.flag['on'] = True
    def before_step(self):
        if self.n == self.total-1: self.flag['on'] = False
    def after_fit(self): self.flag['on'] = False

# main@ae6f530: AssertionError: 23 calls, e.g. stats.py `torch.tensor(self.quantiles, device=desc.device)` at every
# recorded step and adaptive.py `torch.tensor(self.init, device=p.device)` per new tensor
def test_no_device_tensor_on_the_batch_path(monkeypatch):
    flag,calls,real = {'on': False},[],torch.tensor
    def counting(*args, **kwargs):
        if flag['on'] and kwargs.get('device') is not None:
            import traceback
            fr = traceback.extract_stack(limit=2)[0]
            calls.append(f"{fr.filename.rsplit('/', 1)[-1]}:{fr.lineno} {fr.line}")
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, 'tensor', counting)
    def run(cbs):
        calls.clear()
        learn = mk(opt_func=Adam)
        learn.fit(2, 1e-3, cbs=[Window(flag, 2*N_ITER)] + cbs)
        return list(calls)
    assert run([]) == []  # fastai itself makes none (the window is right)
    got = run([LayerStats(), MADLR()])
    assert got == [], f"{len(got)} calls, e.g. {got[:2]}"

# ----------------------------------------------------------------------------------------------------------------------
# Point 10: input checks

NUMERIC = [(LARS, 'trust_coeff', np.float32(1e-3)), (LARS, 'eps', np.float32(1e-6)), (LARC, 'trust_coeff', torch.tensor(.02)),
           (LARC, 'eps', np.int64(0)), (MADLR, 'beta', np.float32(.5)), (MADLR, 'init', np.int64(1)), (MADLR, 'init', torch.tensor(1.)),
           (GradClip, 'max_norm', np.float32(.5)), (GradClip, 'max_norm', torch.tensor(.5)), (LayerStats, 'every', np.int64(2))]

# main@ae6f530: ValueError "`trust_coeff` must be a finite number > 0, got np.float32(0.001)" (and the like for every case:
# only Python int/float, and np.float64 as a float subclass, are accepted)
@pytest.mark.parametrize('cls,arg,value', NUMERIC, ids=[f'{c.__name__}-{a}-{type(v).__name__}' for c,a,v in NUMERIC])
def test_numpy_and_tensor_scalars_accepted(cls, arg, value):
    def fit(v):
        learn = mk(opt_func=partial(SGD, mom=.9, wd=1e-2))
        learn.fit(1, 1e-2, cbs=cls(**{arg: v}))
        return learn
    got,ref = fit(value),fit(value.item())  # the same Python number
    for n,w in weights(ref.model).items(): torch.testing.assert_close(weights(got.model)[n], w, msg=lambda m: f"{n}: {m}")
    if cls is LayerStats: assert sorted(got.layer_stats['step'].unique()) == [0, 2, 4]

# main@ae6f530: TypeError without the argument's name ("can't multiply sequence by non-int of type 'float'", "'>' not
# supported between instances of 'str' and 'int'") at the first step; LARS/LayerStats likewise
@pytest.mark.parametrize('make', [lambda: CyclicalLLR(start=1., end=2., n_groups=2.5), lambda: CyclicalLLR(start=1., end=2., n_groups='3'),
                                  lambda: LARS(per='group', n_groups=2.5), lambda: LayerStats(per='group', n_groups='3')],
                         ids=['CyclicalLLR-2.5', 'CyclicalLLR-str', 'LARS-2.5', 'LayerStats-str'])
def test_bad_n_groups_rejected(make):
    learn = mk()
    w0 = weights(learn.model)
    with pytest.raises((ValueError, TypeError), match='n_groups'): learn.fit(1, 1e-2, cbs=make())
    for n,w in weights(learn.model).items(): assert torch.equal(w, w0[n]), n

# main@ae6f530: Failed: DID NOT RAISE (a negative AGC eps is accepted)
def test_gradclip_negative_eps_rejected():
    learn = mk()
    w0 = weights(learn.model)
    with pytest.raises(ValueError, match='eps'): learn.fit(1, 1e-2, cbs=GradClip(.01, mode='agc', eps=-1))
    for n,w in weights(learn.model).items(): assert torch.equal(w, w0[n]), n

# main@ae6f530: ZeroDivisionError "float division by zero" (TriangularMult with cycle 0) instead of ValueError
def test_triangular_zero_cycle_rejected():
    with pytest.raises(ValueError): CyclicalLLR.triangular([0])

# main@ae6f530: fit_stlr ZeroDivisionError "division by zero" (in ParamScheduler); fit_warm_restarts TypeError
# "'numpy.float64' object cannot be interpreted as an integer" (regex 'cycle_len' did not match); fit_step_decay /
# fit_linear_decay: DID NOT RAISE ValueError (they train at negative rates)
@pytest.mark.parametrize('call,err,match', [
    (lambda l: l.fit_stlr(1, 1e-2, cut_frac=0), ValueError, 'cut_frac'),
    (lambda l: l.fit_warm_restarts(2, cycle_len=.5, lr_max=1e-2), (ValueError, TypeError), 'cycle_len'),
    (lambda l: l.fit_step_decay(2, 1e-2, factor=-.1), ValueError, 'factor'),
    (lambda l: l.fit_linear_decay(2, 1e-2, lr_end=-1e-2), ValueError, 'lr_end')],
    ids=['stlr-cut_frac', 'warm_restarts-cycle_len', 'step_decay-factor', 'linear_decay-lr_end'])
def test_schedule_arguments_rejected(call, err, match):
    learn = mk()
    w0 = weights(learn.model)
    with pytest.raises(err, match=match): call(learn)
    for n,w in weights(learn.model).items(): assert torch.equal(w, w0[n]), n
