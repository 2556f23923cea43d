"""The usage matrix of issue #12: every policy × how it is attached × fastai workflow × optimizer.

Factors
-------
- policy (17): `CyclicalLLR()` (Smith's default), `.depth_linear(3)`, `.staggered_one_cycle(3)`, `.triangular([.25, .5, 1.])`,
  `.soft_unfreeze(3)`, `.soft_freeze(3)`; `LARS()`, `LARC()`, `MADLR(source='grad')`, `MADLR(source='weights')`;
  `GradClip` in modes 'global', 'layer', 'value', 'agc'; `LayerStats()` per tensor and `per='group'`; all families together.
- attach (3): `Learner(cbs=...)`, `learn.fit(..., cbs=...)` (every training call), `learn.add_cbs(...)`.
- workflow (18): see `WORKFLOWS` (fit, fit_one_cycle, fit_flat_cos, fit_sgdr, fine_tune with a splitter, freeze→fit→unfreeze→fit,
  unfreeze inside a fit, lr_find then fit, evaluation before and after a fit, two fits, a zero-step fit, a fit cancelled
  mid-epoch, an exception inside `opt.step` then a fresh fit, save/load then continue, export→load_learner→predict→fit,
  GradientAccumulation, CPU mixed precision, a `torch.compile`d model).
- optimizer (10): fastai SGD, Adam, RAdam, RMSProp, Lamb, ranger; `OptimWrapper` of torch SGD, AdamW, Adagrad, RMSprop.

The full product has 17·3·18·10 = 9180 cells. The sample: one case for every (policy, workflow) pair (306 cases), visited
in an order shuffled by `random.Random(SEED)`; each pair gets the (optimizer, attach) that covers the most pairs not yet
covered among (workflow, optimizer), (policy, optimizer) [weight 4 each] and (policy, attach), (workflow, attach),
(optimizer, attach) [weight 1 each], ties broken by least use and then by the seeded generator. Combinations fastai itself
cannot run are left out (`INFEASIBLE`: `fit_one_cycle`/`fine_tune` schedule `mom`, which torch's Adagrad lacks), and a case
that is expected to raise (see `expects_error`) covers only its (policy, optimizer) pair. `test_sample_covers_all_pairs`
checks that the sample is pairwise complete for (policy, workflow), (workflow, optimizer), (policy, optimizer) and every
pair with the attach mode. Each policy appears 18 times, each workflow 17, each optimizer 30–31, each attach mode 102;
44 cases check the applied rate against the formula. The list is generated at
import, deterministically (independent of PYTHONHASHSEED); ids read `policy-workflow-optimizer-attach`. The whole file
(306 cases + the coverage tests) takes about 1 minute on 2 CPU cores. The quick run (`pytest -m "not slow"`) keeps a
cheap form of it, the 58 cases of `QUICK` (every (policy, attach) pair, workflow and optimizer, and a formula check of
every policy the sample checks against its formula); the others are marked `slow`.

Every case runs on the tiny setup of `fastai_llr.core.synth_learner` (its 6-layer MLP and its data, built as fastai
`Datasets` so that `predict` and `export` work: 6 batches per epoch) with 1–3 epochs per fit, on one CPU thread, and asserts
only things computed without the code under test:
- the weights are finite;
- each policy's record has one row per optimizer step actually taken in the last training fit (counted by `_Probe`, a
  callback of order 90 observing `after_step` and `after_cancel_step`): `CyclicalLLR.lrs`, `len(LARS/LARC/MADLR.hist)`,
  `len(GradClip.norms)`, `learn.layer_stats['step'].nunique()`; per-tensor records have one column per tensor that had a
  gradient at some step of that fit; record names are the user's module paths (no `_orig_mod.`, no `module.`);
- the optimizer after the workflow (and right after an exception inside `opt.step`) has the same hypers, groups (names of
  their parameters), frozen index, `requires_grad` and `do_wd` flags as a twin run of the same workflow without the policy;
- where the formula is cheap (fastai SGD / torch SGD without momentum or weight decay, and workflows whose schedule leaves
  momentum at 0) each step's weight change against `-lr(t) · factor · g` from the documented formula of the policy;
- evaluation (`validate`, `get_preds`, and in the evaluation workflow also `predict` and `summary`) after the workflow leaves
  every record unchanged;
- an unsupported combination raises a `TypeError`/`ValueError` naming the optimizer before any weight changes.
"""
import math, random, re, signal
from collections import Counter
from functools import partial

import numpy as np, pandas as pd, pytest, torch
from fastai.basics import Learner, Callback, CancelFitException, Datasets, ItemGetter, CrossEntropyLossFlat
from fastai.learner import load_learner
from fastai.callback.schedule import ParamScheduler
from fastai.callback.training import GradientAccumulation
import fastai.callback.hook  # noqa: F401 (patches Learner.summary)
from fastai.optimizer import SGD, Adam, RAdam, RMSProp, Lamb, ranger, OptimWrapper
from fastai.torch_core import params

from fastai_llr.all import CyclicalLLR, LARS, LARC, MADLR, GradClip, LayerStats, CPUMixedPrecision
try: from fastai_llr.core import synth_model
except ImportError: from fastai_llr.all import synth_model

SEED = 20240612
LR, LR2 = 1e-2, 3e-3  # LR2: a second fit at another rate, so that a stale rate from the first fit shows
CASE_TIMEOUT = 180  # seconds; a hang (e.g. fastai's `learn.lock` left held) fails the case instead of blocking the run

# ----------------------------------------------------------------------------------------------------------------------
# Factors

def _cyc_default(): return [CyclicalLLR()]
def _cyc_depth_linear(): return [CyclicalLLR.depth_linear(3)]
def _cyc_staggered(): return [CyclicalLLR.staggered_one_cycle(3)]
def _cyc_triangular(): return [CyclicalLLR.triangular([.25, .5, 1.])]
def _cyc_soft_unfreeze(): return [CyclicalLLR.soft_unfreeze(3)]
def _cyc_soft_freeze(): return [CyclicalLLR.soft_freeze(3)]
def _all(): return [CyclicalLLR.depth_linear(3), LARC(trust_coeff=.05), MADLR(min_mult=.1, max_mult=10.), GradClip(1.), LayerStats()]

POLICIES = {
    'cyc_default': _cyc_default, 'cyc_depth_linear': _cyc_depth_linear, 'cyc_staggered': _cyc_staggered,
    'cyc_triangular': _cyc_triangular, 'cyc_soft_unfreeze': _cyc_soft_unfreeze, 'cyc_soft_freeze': _cyc_soft_freeze,
    'lars': lambda: [LARS()], 'larc': lambda: [LARC()],
    'mad_grad': lambda: [MADLR(source='grad', min_mult=.1, max_mult=10.)],
    'mad_weights': lambda: [MADLR(source='weights', min_mult=.1, max_mult=10.)],
    # thresholds that clip some steps/tensors/units and not others on this model (gradient norms 0.07..0.4 in total)
    'clip_global': lambda: [GradClip(.1, mode='global')], 'clip_layer': lambda: [GradClip(.02, mode='layer')],
    'clip_value': lambda: [GradClip(.02, mode='value')], 'clip_agc': lambda: [GradClip(.015, mode='agc')],
    'stats_tensor': lambda: [LayerStats()], 'stats_group': lambda: [LayerStats(per='group', n_groups=3)],
    'all': _all,
}
GROUP_POLICIES = {k for k in POLICIES if k.startswith('cyc_')} | {'all'}  # policies with per-layer-group multipliers (3 groups)

OPTS = {
    'SGD': SGD, 'Adam': Adam, 'RAdam': RAdam, 'RMSProp': RMSProp, 'Lamb': Lamb, 'ranger': ranger,
    'torch_SGD': partial(OptimWrapper, opt=torch.optim.SGD), 'torch_AdamW': partial(OptimWrapper, opt=torch.optim.AdamW),
    'torch_Adagrad': partial(OptimWrapper, opt=torch.optim.Adagrad), 'torch_RMSprop': partial(OptimWrapper, opt=torch.optim.RMSprop),
}
PLAIN_SGD = {'SGD', 'torch_SGD'}  # no momentum, no weight decay by default: a step is exactly `-rate * g`
ATTACH = ('learner', 'fit', 'add_cb')

def expects_error(pol, opt):
    """A documented unsupported combination, whose case asserts the error instead. None today: fastai's `Lookahead`
    (ranger), the last one, is stepped through to its inner optimizer since issue #12."""
    return False

# ----------------------------------------------------------------------------------------------------------------------
# Data, model, harness callbacks

def _dls(bs=32):
    "`synth_dls` (same data: 192 training samples, 6 batches; 64 validation samples) as fastai `Datasets`"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g); y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    dsets = Datasets(list(zip(x, y)), tfms=[[ItemGetter(0)], [ItemGetter(1)]], splits=[list(range(64, 256)), list(range(64))])
    return dsets.dataloaders(bs=bs, shuffle=False, drop_last=True, num_workers=0)

ITEM = (torch.linspace(-1, 1, 8), 0)  # an item for `predict`

def _split2(m): return [params(m[:6]), params(m[6:])]  # 2 optimizer groups: layers 0,2,4 | 6,8,10 (not the 3 depth groups)

LAYERS = ['0', '2', '4', '6', '8', '10']  # the Linear layers of synth_model(6), input side first
def _depth_group(name): return LAYERS.index(name.split('.')[0]) // 2  # 3 depth groups of 2 layers (numpy.array_split)

_WRAPPERS = re.compile(r'(^|[^\w])(_orig_mod|module)\.')
def _clean(n): return n.replace('_orig_mod.', '')  # the user's module path of a parameter of a compiled model

def _named(model): return [(_clean(n), p) for n,p in model.named_parameters()]
def _weights(learn): return [p.detach().clone() for p in learn.model.parameters()]

class _Probe(Callback):
    "Count optimizer steps actually taken (per fit and in total), the tensors that had a gradient, and check each step's update"
    order = 90
    def __init__(self, ref=None): self.ref,self.total,self.cur,self.cur_seen,self.lr_const,self._grads = ref,0,0,set(),None,[]; self._reset()
    def _reset(self): self.checked,self.bad,self._pending,self._cancelled,self._stepped = 0,[],None,False,False
    def before_fit(self): self.cur,self.cur_seen = 0,set(); self._pending = None
    def before_batch(self): self._cancelled,self._stepped = False,False
    def _lr(self):
        "The global rate fastai sets at this step: the ParamScheduler's schedule, else the rate given to `fit`"
        ps = [cb for cb in self.learn.cbs if isinstance(cb, ParamScheduler) and 'lr' in cb.scheds]
        v = ps[0].scheds['lr'](self.learn.pct_train) if ps else self.lr_const
        if v is None: return None
        v = np.asarray(v, dtype=float).reshape(-1)
        return float(v[0]) if np.all(v == v[0]) else None
    @torch.no_grad()
    def after_backward(self):
        named = _named(self.learn.model)
        self._grads = [n for n,p in named if p.requires_grad and p.grad is not None]
        if REFS.get(self.ref) is None or self.learn.opt is None: return
        sc = getattr(self.learn, 'scaler', None)
        s = sc.get_scale() if sc is not None and sc.is_enabled() else 1.
        self._pending = dict(pct=self.learn.pct_train, lr=self._lr(), names=[n for n,_ in named], w=[p.detach().clone() for _,p in named],
                             g=[p.grad.detach().clone()/s if p.requires_grad and p.grad is not None else None for _,p in named])
    def after_cancel_step(self): self._cancelled = True
    def after_step(self):
        if self._cancelled: return
        self.total += 1; self.cur += 1; self._stepped = True
        self.cur_seen.update(self._grads)
    @torch.no_grad()
    def after_batch(self):
        pend,self._pending = self._pending,None
        if not (self.training and self._stepped and pend is not None and pend['lr'] is not None): return
        ref = REFS[self.ref]
        tr = [i for i,g in enumerate(pend['g']) if g is not None]
        exp = ref(pend['lr'], pend['pct'], [pend['names'][i] for i in tr], [pend['w'][i] for i in tr], [pend['g'][i] for i in tr])
        exp = dict(zip(tr, exp))
        for i,(p,w0) in enumerate(zip(self.learn.model.parameters(), pend['w'])):
            d = p.detach() - w0
            e = exp.get(i, torch.zeros_like(d))  # a tensor without a gradient (frozen) must not move
            err,tol = (d - e).norm().item(),1e-4*e.norm().item() + 6e-7*w0.norm().item() + 1e-12  # float32 rounding of w: ~1e-7|w|
            if not err <= tol: self.bad.append(f"step at pct={pend['pct']:.3f}, {pend['names'][i]}: |Δw - expected| = {err:.3g} > {tol:.3g}"
                                               f" (|Δw| = {d.norm().item():.4g}, |expected| = {e.norm().item():.4g})")
        self.checked += 1
    def after_fit(self): self._pending = None

class _UnfreezeAt(Callback):
    "Unfreeze the model at the start of epoch `epoch` (inside the fit)"
    def __init__(self, epoch): self.at = epoch
    def before_epoch(self):
        if self.epoch == self.at: self.learn.unfreeze()

class _CancelAt(Callback):
    "Cancel the fit from `after_batch` once `it` optimizer steps are done (mid-epoch), before the policies' `after_batch`"
    order = -9
    def __init__(self, it): self.it = it
    def after_batch(self):
        if self.training and self.train_iter == self.it: raise CancelFitException()

class _Injected(RuntimeError): pass

def _arm(opt):
    "Make the next step of `opt` raise from inside the optimizer, before it changes any weight"
    o = opt
    while True:
        if isinstance(o, torch.optim.Optimizer):
            h = None
            def _hook(*_):
                h.remove(); raise _Injected('injected failure inside opt.step')
            h = o.register_step_pre_hook(_hook); return
        if 'cbs' in vars(o):  # a fastai Optimizer: its step functions
            orig = o.cbs
            def _boom(*_, **__):
                o.cbs = orig; raise _Injected('injected failure inside opt.step')
            o.cbs = [_boom] + list(orig); return
        o = vars(o)['opt']  # OptimWrapper -> torch optimizer, Lookahead -> fastai Optimizer

class _FailStepAt(Callback):
    "Raise inside `opt.step` at iteration `it` (after every policy's `before_step`)"
    order = 95
    def __init__(self, it): self.it = it
    def before_step(self):
        if self.train_iter == self.it: _arm(self.learn.opt)

# ----------------------------------------------------------------------------------------------------------------------
# Reference updates (section 2 of the design notes and the policies' documented defaults), for plain SGD without momentum
# or weight decay: each returns the expected `w_new - w_old` of every tensor that has a gradient.

def _lin(s, e, a, b): return lambda p: s if p <= a else e if p >= b else s + (e-s)*(p-a)/(b-a)
def _cosi(a, b, f): return a + (b-a)*(1-math.cos(math.pi*f))/2
def _one_cycle(peak, div=25., div_final=1e4):
    return lambda p: _cosi(1/div, 1., p/peak) if p <= peak else _cosi(1., 1/div_final, (p-peak)/(1-peak))
def _tri(c, lo=.5, hi=2.): return lambda p: lo + (hi-lo)*(1 - abs(2*((p/c) % 1.) - 1))
_one = lambda p: 1.

MULTS = {  # m_g(pct) of the 3 depth groups
    'cyc_default': [_lin(2., .5, 0., .1), _one, _lin(.5, 2., 0., 1.)],  # Smith's example: start (2,1,.5), end (.5,1,2), pct_end (.1,1,1)
    'cyc_depth_linear': [_lin(1.5, .5, 0., 1.), _one, _lin(.5, 1.5, 0., 1.)],
    'cyc_staggered': [_one_cycle(.1), _one_cycle(.3), _one_cycle(.5)],
    'cyc_triangular': [_tri(.25), _tri(.5), _tri(1.)],
    'cyc_soft_unfreeze': [_lin(0., 1., .25, .5), _lin(0., 1., 0., .25), _one],  # output side first, all unfrozen by pct .5
    'cyc_soft_freeze': [_lin(1., 0., .5, .75), _lin(1., 0., .75, 1.), _one],  # input side first from pct .5, last group kept
}

def _ref_mults(key, lr, pct, names, ws, gs): return [-lr*MULTS[key][_depth_group(n)](pct)*g for n,g in zip(names, gs)]
def _ref_plain(lr, pct, names, ws, gs): return [-lr*g for g in gs]  # an observer changes nothing

def _ref_lars(lr, pct, names, ws, gs, eta=1e-3, eps=1e-8, larc=False):
    "LARS: rate `lr·η‖w‖/(‖g‖+ε)` (wd = 0); LARC: `min(lr, η‖w‖/(‖g‖+ε))`; biases (1-D) keep `lr`; factor 1 where a norm is 0"
    res = []
    for w,g in zip(ws, gs):
        wn,gn,f = w.norm(),g.norm(),1.
        if w.ndim >= 2 and wn > 0 and gn > 0:
            r = (eta*wn/(gn + eps)).item()
            f = min(1., r/lr) if larc else r
        res.append(-lr*f*g)
    return res

def _ref_clip_global(lr, pct, names, ws, gs, mx=.1):
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in gs])).item()
    return [-lr*min(1., mx/(total + 1e-6))*g for g in gs]
def _ref_clip_layer(lr, pct, names, ws, gs, mx=.02): return [-lr*min(1., mx/(g.norm().item() + 1e-6))*g for g in gs]
def _ref_clip_value(lr, pct, names, ws, gs, v=.02): return [-lr*g.clamp(-v, v) for g in gs]
def _unit_norm(x): return x.norm() if x.ndim <= 1 else x.norm(dim=tuple(range(1, x.ndim)), keepdim=True)
def _ref_agc(lr, pct, names, ws, gs, lam=.015, eps=1e-3):
    "Unit-wise (per output unit) clipping: `g_u · λ·max(‖w_u‖, ε)/‖g_u‖` where `‖g_u‖` exceeds `λ·max(‖w_u‖, ε)`"
    res = []
    for w,g in zip(ws, gs):
        mx,un = _unit_norm(w).clamp(min=eps)*lam,_unit_norm(g)
        res.append(-lr*g*torch.where(un > mx, mx/un.clamp(min=1e-12), torch.ones_like(un)))
    return res

REFS = {None: None, **{k: partial(_ref_mults, k) for k in MULTS},
        'lars': _ref_lars, 'larc': partial(_ref_lars, eta=.02, larc=True),
        'clip_global': _ref_clip_global, 'clip_layer': _ref_clip_layer, 'clip_value': _ref_clip_value, 'clip_agc': _ref_agc,
        'stats_tensor': _ref_plain, 'stats_group': _ref_plain}

# ----------------------------------------------------------------------------------------------------------------------
# Records

def _record(pol, learn):
    "The record of `pol` (a copy), per the policy's documented attribute"
    if isinstance(pol, LayerStats):
        df = getattr(learn, 'layer_stats', None)
        assert isinstance(df, pd.DataFrame), "LayerStats: `learn.layer_stats` is not a DataFrame after a fit"
        return df.copy()
    if isinstance(pol, GradClip): attr = 'norms'
    elif isinstance(pol, CyclicalLLR): attr = 'lrs'
    else: attr = 'hist'
    v = getattr(pol, attr, None)
    assert v is not None, f"{type(pol).__name__}.{attr} is missing or None after a fit"
    if isinstance(v, np.ndarray): return v.copy()
    if isinstance(v, torch.Tensor): return v.detach().clone()
    return [x.detach().clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True) for x in v]

def _rows(rec): return rec['step'].nunique() if isinstance(rec, pd.DataFrame) and 'step' in rec.columns else len(rec)

def _same(a, b):
    if isinstance(a, pd.DataFrame):
        try: pd.testing.assert_frame_equal(a, b); return True
        except AssertionError: return False
    if isinstance(a, list): return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x,y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    a,b = np.asarray(a),np.asarray(b)
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == 'f')

def _widths(rec):
    "Number of columns of each row of a per-tensor record"
    if isinstance(rec, (torch.Tensor, np.ndarray, pd.DataFrame)): return {rec.shape[1]} if rec.ndim == 2 else set()
    return {int(np.prod(tuple(r.shape))) for r in rec}

# ----------------------------------------------------------------------------------------------------------------------
# Optimizer snapshot: what "policies never leave the optimizer modified" compares with the twin run

def _plain(v):
    if isinstance(v, torch.Tensor): return v.tolist()
    if isinstance(v, np.ndarray): return v.tolist()
    if isinstance(v, np.generic): return v.item()
    if isinstance(v, (list, tuple)): return [_plain(x) for x in v]
    return v

def _opt_snapshot(learn):
    opt = learn.opt
    if opt is None: return None
    nm = {id(p): n for n,p in _named(learn.model)}
    snap = dict(type=type(opt).__name__,
                groups=[[nm.get(id(p), '<not in model>') for p in pl] for pl in opt.param_lists],
                hypers=[{k: _plain(v) for k,v in h.items()} for h in opt.hypers],
                frozen_idx=getattr(opt, 'frozen_idx', None),
                requires_grad={n: p.requires_grad for n,p in _named(learn.model)})
    inner = vars(opt).get('opt')
    if isinstance(inner, torch.optim.Optimizer):
        snap['param_groups'] = [{k: _plain(v) for k,v in pg.items() if k != 'params'} for pg in inner.param_groups]
    else:
        st = opt.state
        snap['flags'] = {n: (st[p].get('do_wd', True), st[p].get('force_train', False)) if p in st else None for n,p in _named(learn.model)}
    return snap

def _diff(a, b, path='opt'):
    "Where two snapshots differ (floats up to 1e-12 relative), or None"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b): return f"{path}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            d = _diff(a[k], b[k], f"{path}[{k!r}]")
            if d: return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b): return f"{path}: length {len(a)} vs {len(b)} in the twin"
        for i,(x,y) in enumerate(zip(a, b)):
            d = _diff(x, y, f"{path}[{i}]")
            if d: return d
        return None
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return None if a == b or math.isclose(a, b, rel_tol=1e-12) or (math.isnan(a) and math.isnan(b)) else f"{path}: {a!r} vs {b!r} in the twin"
    return None if a == b else f"{path}: {a!r} vs {b!r} in the twin"

# ----------------------------------------------------------------------------------------------------------------------
# Running a workflow

class _ErrorSeen(Exception): pass

class _Run:
    "One workflow on one learner (or the learners it creates), with or without the case's policies"
    def __init__(self, pol, wf, opt, attach, path, with_pols=True):
        self.pol,self.wf,self.opt,self.attach,self.path,self.with_pols = pol,wf,opt,attach,path,with_pols
        self.expect_error = with_pols and expects_error(pol, opt)
        self.ref = pol if (with_pols and not self.expect_error and opt in PLAIN_SGD and wf not in NO_REF_WORKFLOWS
                           and REFS.get(pol) is not None) else None
        self.snaps,self.values,self.errs,self.last_steps,self.last_seen,self.error = {},{},[],None,set(),None

    def new_learner(self, splitter=False, compiled=False):
        self.pols = POLICIES[self.pol]() if self.with_pols else []
        self.probe = _Probe(self.ref)
        model = synth_model(6)
        if compiled: model = torch.compile(model)
        kw = dict(splitter=_split2) if splitter else {}
        self.learn = Learner(_dls(), model, loss_func=CrossEntropyLossFlat(), opt_func=OPTS[self.opt], path=self.path,
                             cbs=[self.probe] + (self.pols if self.attach == 'learner' else []), **kw)
        if self.attach == 'add_cb': self.learn.add_cbs(self.pols)
        return self.learn

    def adopt(self, learn):
        "Continue with `learn` (from `load_learner`): its copies of the policies and of the probe"
        self.learn = learn
        self.probe = next(cb for cb in learn.cbs if isinstance(cb, _Probe))
        if self.attach != 'fit':
            types = [type(p) for p in self.pols]
            self.pols = [cb for cb in learn.cbs if type(cb) in types]
            assert len(self.pols) == len(types), f"load_learner lost policies: {self.pols}"

    def train(self, meth, *args, lr_const=None, cbs=(), records=True, raises=None, **kwargs):
        "A training call; `records`: it is the fit whose records the policies must hold afterwards"
        learn,attached = self.learn,self.with_pols and (self.attach != 'fit' or meth != 'lr_find')
        if meth == 'lr_find': kwargs.update(show_plot=False)
        else: kwargs['cbs'] = list(cbs) + (self.pols if self.attach == 'fit' else [])
        self.probe.lr_const,ref = lr_const,self.probe.ref
        if meth == 'lr_find': self.probe.ref = None  # a range test runs the multipliers of pct 0 (design 3b: "as today")
        w0,self.probe.cur,self.probe.cur_seen = _weights(learn),0,set()
        try:
            with learn.no_bar(), learn.no_logging():
                if self.expect_error and attached:
                    with pytest.raises((TypeError, ValueError)) as ei: getattr(learn, meth)(*args, **kwargs)
                    self.error = ei.value
                    assert all(torch.equal(a, b) for a,b in zip(w0, _weights(learn))), "the error came after weights changed"
                    raise _ErrorSeen()
                if raises is None: getattr(learn, meth)(*args, **kwargs)
                else:
                    with pytest.raises(raises): getattr(learn, meth)(*args, **kwargs)
        finally:
            self.probe.ref = ref
            if records: self.last_steps,self.last_seen = self.probe.cur,set(self.probe.cur_seen)
        return self.probe.cur

    def evaluate(self, full=False):
        "Evaluation calls: validate and get_preds; with `full` also predict and summary"
        learn = self.learn
        calls = [('validate', lambda: learn.validate()), ('get_preds', lambda: learn.get_preds())]
        if full: calls += [('predict', lambda: learn.predict(ITEM)), ('summary', lambda: learn.summary())]
        res = {}
        with learn.no_bar():
            for nm,f in calls:
                lock = getattr(learn, 'lock', None)
                assert lock is None or not lock.locked(), f"fastai's learn.lock is held before {nm}: an earlier evaluation call raised inside"
                res[nm] = f()
        return res

    def checkpoint(self, name):
        "Take the optimizer snapshot `name` (compared with the twin) and check the records against the steps just taken"
        self.snaps[name] = _opt_snapshot(self.learn)
        if self.with_pols: self.check_records(name)

    def records(self):
        "The records available now (a missing one is reported by `check_records`)"
        res = {}
        for i,p in enumerate(self.pols):
            try: res[f'{i}:{type(p).__name__}'] = _record(p, self.learn)
            except AssertionError: pass
        return res

    def compare_records(self, before, when):
        after = self.records()
        for k in before:
            if k not in after: self.errs.append(f"{k}: {when} removed its record")
            elif not _same(before[k], after[k]): self.errs.append(f"{k}: {when} changed its record")

    def check_records(self, where):
        n,seen = self.last_steps,self.last_seen
        for i,p in enumerate(self.pols):
            what = f"[{where}] {type(p).__name__}"
            try: rec = _record(p, self.learn)
            except AssertionError as e: self.errs.append(f"[{where}] {e}"); continue
            if _rows(rec) != n: self.errs.append(f"{what}: {_rows(rec)} record rows, but {n} optimizer steps were taken"); continue
            if isinstance(p, LayerStats):
                layers = set(rec['layer'])
                if self.pol != 'stats_group' and layers != seen:
                    self.errs.append(f"{what}: layers {sorted(layers)} but the tensors with gradients were {sorted(seen)}")
                if self.pol == 'stats_group' and n and len(layers) != 3: self.errs.append(f"{what}: {len(layers)} groups recorded, 3 asked for")
                names = layers
            else: names = set()
            per_tensor = isinstance(p, (LARS, LARC, MADLR)) or (isinstance(p, GradClip) and self.pol not in ('clip_global', 'all'))
            if n and per_tensor:
                if _widths(rec) != {len(seen)}:
                    self.errs.append(f"{what}: rows of widths {sorted(_widths(rec))}, expected one column per tensor with a gradient ({len(seen)})")
            for attr in ('lr_names', 'layer_names', 'names'):
                v = getattr(p, attr, None)
                if isinstance(v, (list, tuple)): names |= {x for x in v if isinstance(x, str)}
            bad = sorted(x for x in names if _WRAPPERS.search(x))
            if bad: self.errs.append(f"{what}: names carry a wrapper prefix: {bad}")

    def finish(self):
        "The checks that close every case (the twin comparison is done by the test)"
        learn = self.learn
        if not all(torch.isfinite(p).all() for p in learn.model.parameters()): self.errs.append("weights are not finite")
        self.checkpoint('end')

# ----------------------------------------------------------------------------------------------------------------------
# Workflows

def wf_fit(r): r.new_learner(); r.train('fit', 2, LR, lr_const=LR)
def wf_fit_one_cycle(r): r.new_learner(); r.train('fit_one_cycle', 2, LR)
def wf_fit_flat_cos(r): r.new_learner(); r.train('fit_flat_cos', 2, LR)
def wf_fit_sgdr(r): r.new_learner(); r.train('fit_sgdr', 2, 1, LR)  # cycles of 1 and 2 epochs: a restart at epoch 1
def wf_fine_tune(r): r.new_learner(splitter=True); r.train('fine_tune', 1, LR, freeze_epochs=1)

def wf_freeze_unfreeze(r):
    learn = r.new_learner(splitter=True)
    learn.freeze(); r.train('fit', 1, LR, lr_const=LR)
    learn.unfreeze(); r.train('fit', 1, LR2, lr_const=LR2)

def wf_unfreeze_in_fit(r):
    learn = r.new_learner(splitter=True)
    learn.freeze(); r.train('fit', 2, LR, lr_const=LR, cbs=[_UnfreezeAt(1)])

def wf_lr_find_fit(r):
    r.new_learner(); r.train('lr_find', num_it=10, records=False); r.train('fit', 1, LR, lr_const=LR)

def wf_eval_around(r):
    r.new_learner()
    r.values['validate before any fit'] = [float(v) for v in r.evaluate(full=True)['validate']]
    r.train('fit', 1, LR, lr_const=LR)
    if r.with_pols:
        before = r.records(); r.evaluate(full=True)
        r.compare_records(before, 'validate/get_preds/predict/summary after the fit')

def wf_two_fits(r): r.new_learner(); r.train('fit', 1, LR, lr_const=LR); r.train('fit', 1, LR2, lr_const=LR2)

def wf_zero_step(r):
    r.new_learner(); r.train('fit', 1, LR, lr_const=LR)
    n = r.train('fit', 1, LR2, lr_const=LR2, cbs=[GradientAccumulation(n_acc=10_000)])  # more samples than an epoch: no step
    assert n == 0, f"harness: the zero-step fit took {n} steps"

def wf_cancel_mid(r):
    r.new_learner(); n = r.train('fit', 2, LR, lr_const=LR, cbs=[_CancelAt(9)])  # 6 steps of epoch 0, 3 of epoch 1
    assert n == 9, f"harness: the cancelled fit took {n} steps"

def wf_step_exception(r):
    r.new_learner()
    n = r.train('fit', 1, LR, lr_const=LR, cbs=[_FailStepAt(3)], raises=_Injected)
    assert n == 3, f"harness: {n} steps before the failing one"
    r.checkpoint('right after the exception in opt.step')
    r.train('fit', 1, LR2, lr_const=LR2)

def wf_save_load(r):
    r.new_learner(); r.train('fit', 1, LR, lr_const=LR)
    r.learn.save('ck', with_opt=True)
    r.new_learner(); r.learn.load('ck', with_opt=True)  # a new session: new learner, new policy instances
    r.train('fit', 1, LR2, lr_const=LR2)

def wf_export(r):
    r.new_learner(); r.train('fit', 1, LR, lr_const=LR)
    r.learn.export('export.pkl')
    new = load_learner(r.path/'export.pkl')
    new.dls,new.path = _dls(),r.path
    r.adopt(new)
    with new.no_bar(): new.predict(ITEM)  # evaluation on a loaded learner: no optimizer yet
    r.train('fit', 1, LR2, lr_const=LR2)

def wf_grad_acc(r):
    r.new_learner(); n = r.train('fit', 2, LR, lr_const=LR, cbs=[GradientAccumulation(n_acc=64)])  # a step every 2 batches
    assert n == 6, f"harness: {n} steps with accumulation"

def wf_mixed_precision(r):
    learn = r.new_learner(); learn.add_cb(CPUMixedPrecision(init_scale=2.**12))
    r.train('fit', 2, LR, lr_const=LR)

_compile_skip = []
def _compile_reason():
    "Why torch.compile cannot run here (None if it can), probed once"
    if not _compile_skip:
        try:
            m = torch.compile(torch.nn.Linear(3, 2)); m(torch.randn(4, 3)).sum().backward(); _compile_skip.append(None)
        except Exception as e: _compile_skip.append(f"torch.compile cannot run here: {type(e).__name__}: {e}"[:300])
    return _compile_skip[0]

def wf_compile(r):
    why = _compile_reason()
    if why: pytest.skip(why)
    r.new_learner(compiled=True); r.train('fit', 1, LR, lr_const=LR)

WORKFLOWS = {
    'fit': wf_fit, 'fit_one_cycle': wf_fit_one_cycle, 'fit_flat_cos': wf_fit_flat_cos, 'fit_sgdr': wf_fit_sgdr,
    'fine_tune': wf_fine_tune, 'freeze_unfreeze': wf_freeze_unfreeze, 'unfreeze_in_fit': wf_unfreeze_in_fit,
    'lr_find_fit': wf_lr_find_fit, 'eval_around': wf_eval_around, 'two_fits': wf_two_fits, 'zero_step': wf_zero_step,
    'cancel_mid': wf_cancel_mid, 'step_exception': wf_step_exception, 'save_load': wf_save_load, 'export': wf_export,
    'grad_acc': wf_grad_acc, 'mixed_precision': wf_mixed_precision, 'compile': wf_compile,
}
NO_REF_WORKFLOWS = {'fit_one_cycle', 'fine_tune'}  # they schedule momentum: no cheap formula for the step
INFEASIBLE = {('fit_one_cycle', 'torch_Adagrad'), ('fine_tune', 'torch_Adagrad')}  # fastai: Adagrad has no `mom` to schedule

# ----------------------------------------------------------------------------------------------------------------------
# The sample

def _build_cases():
    rng = random.Random(SEED)
    pairs = [(p, w) for p in POLICIES for w in WORKFLOWS]
    rng.shuffle(pairs)
    cov = {k: set() for k in ('wo', 'po', 'pa', 'wa', 'oa')}
    use_o,use_a,cases = Counter(),Counter(),[]
    for p,w in pairs:
        cands = [(o, a) for o in OPTS for a in ATTACH if (w, o) not in INFEASIBLE]
        rng.shuffle(cands)
        def score(c):
            o,a = c
            err = expects_error(p, o)
            new = (4*((w, o) not in cov['wo'] and not err) + 4*((p, o) not in cov['po']) + ((p, a) not in cov['pa'])
                   + ((w, a) not in cov['wa']) + ((o, a) not in cov['oa']) - 3*err)
            return (new, -use_o[o], -use_a[a])
        o,a = max(cands, key=score)
        if not expects_error(p, o): cov['wo'].add((w, o))
        cov['po'].add((p, o)); cov['pa'].add((p, a)); cov['wa'].add((w, a)); cov['oa'].add((o, a))
        use_o[o] += 1; use_a[a] += 1
        cases.append((p, w, o, a))
    return cases

CASES = _build_cases()

def _quick_cases():
    """The cheap form of the matrix for the quick run (`pytest -m "not slow"`): the first cases, in the sample's order,
    that cover every (policy, attach) pair, every workflow, every optimizer, and one check against the formula for every
    policy the matrix checks against its formula; the other cases are marked `slow` (the full run has them all)."""
    need = {('pa', p, a) for p in POLICIES for a in ATTACH} | {('w', w) for w in WORKFLOWS} | {('o', o) for o in OPTS}
    need |= {('ref', p) for p,w,o,_ in CASES if _formula_checked(p, w, o)}
    quick = []
    for p,w,o,a in CASES:
        got = {('pa', p, a), ('w', w), ('o', o)} | ({('ref', p)} if _formula_checked(p, w, o) else set())
        if got & need: quick.append((p, w, o, a)); need -= got
    return quick

def _formula_checked(pol, wf, opt):
    "Whether the case checks each step against the policy's formula (as `_Run` decides)"
    return opt in PLAIN_SGD and wf not in NO_REF_WORKFLOWS and REFS.get(pol) is not None and not expects_error(pol, opt)

QUICK = _quick_cases()

def test_sample_covers_all_pairs():
    "The sample is pairwise complete: (policy, workflow), and (workflow, optimizer) and (policy, optimizer) where feasible"
    pw = {(p, w) for p,w,_,_ in CASES}
    assert pw == {(p, w) for p in POLICIES for w in WORKFLOWS}
    wo = {(w, o) for p,w,o,_ in CASES if not expects_error(p, o)}
    assert wo == {(w, o) for w in WORKFLOWS for o in OPTS if (w, o) not in INFEASIBLE}
    assert {(p, o) for p,_,o,_ in CASES} == {(p, o) for p in POLICIES for o in OPTS}
    assert {(p, a) for p,_,_,a in CASES} == {(p, a) for p in POLICIES for a in ATTACH}
    assert {(w, a) for _,w,_,a in CASES} == {(w, a) for w in WORKFLOWS for a in ATTACH}
    assert {(o, a) for _,_,o,a in CASES} == {(o, a) for o in OPTS for a in ATTACH}
    assert len(CASES) == len(POLICIES)*len(WORKFLOWS) == 306

def test_quick_cases_cover_every_level():
    "The quick run's cases: every (policy, attach) pair, workflow and optimizer, and a formula check of every policy the matrix checks so"
    assert {(p, a) for p,_,_,a in QUICK} == {(p, a) for p in POLICIES for a in ATTACH}
    assert {w for _,w,_,_ in QUICK} == set(WORKFLOWS) and {o for _,_,o,_ in QUICK} == set(OPTS)
    assert {p for p,w,o,_ in QUICK if _formula_checked(p, w, o)} == {p for p,w,o,_ in CASES if _formula_checked(p, w, o)}
    assert set(QUICK) <= set(CASES) and len(QUICK) < len(CASES)//4, len(QUICK)

# ----------------------------------------------------------------------------------------------------------------------
# Fixtures and the test

@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    "Tiny models: one thread is much faster, and steady when other processes share the cores"
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(autouse=True)
def _deadline():
    if not hasattr(signal, 'SIGALRM'):
        yield; return
    def _raise(*_): raise TimeoutError(f"the case ran over {CASE_TIMEOUT} s (a hang, e.g. fastai's learn.lock left held)")
    old = signal.signal(signal.SIGALRM, _raise); signal.alarm(CASE_TIMEOUT)
    try: yield
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)

def _exc(e): return f"{type(e).__name__}: " + ' '.join(str(e).split())[:300]

_TWINS = {}
def _twin(wf, opt, tmp_path_factory):
    "The same workflow without any policy: the optimizer snapshots and values a policy must not change"
    if (wf, opt) not in _TWINS:
        r = _Run(None, wf, opt, 'learner', tmp_path_factory.mktemp(f'twin-{wf}-{opt}'), with_pols=False)
        WORKFLOWS[wf](r); r.finish()
        _TWINS[wf, opt] = r
    return _TWINS[wf, opt]

@pytest.mark.parametrize('pol,wf,opt,attach', [pytest.param(*c, id='-'.join(c), marks=() if c in QUICK else pytest.mark.slow) for c in CASES])
def test_usage(pol, wf, opt, attach, tmp_path, tmp_path_factory):
    r = _Run(pol, wf, opt, attach, tmp_path)
    try: WORKFLOWS[wf](r)
    except _ErrorSeen:
        assert 'Lookahead' in str(r.error), f"the error does not name the optimizer: {r.error!r}"
        return
    except Exception as e:
        raise AssertionError('\n'.join([f"the workflow raised {_exc(e)}"] + r.errs)) from e
    assert not r.expect_error, f"{pol} with {opt} is documented to raise a TypeError naming the optimizer, but it trained"
    r.finish()
    tw = _twin(wf, opt, tmp_path_factory)
    assert set(r.snaps) == set(tw.snaps)
    for k in r.snaps:
        d = _diff(r.snaps[k], tw.snaps[k])
        if d: r.errs.append(f"[{k}] the optimizer differs from the run without the policy: {d}")
    for k,v in r.values.items():
        if v != tw.values[k]: r.errs.append(f"{k}: {v} but {tw.values[k]} without the policy")
    if r.ref is not None:
        if r.probe.bad: r.errs.append(f"applied rate differs from the formula in {len(r.probe.bad)} tensor-steps, e.g. " + '; '.join(r.probe.bad[:3]))
        if r.last_steps and not r.probe.checked: r.errs.append("harness: no step was checked against the formula")
    # evaluation after everything leaves the records as they are
    before = r.records()
    try: r.evaluate()
    except Exception as e: r.errs.append(f"validate/get_preds after the workflow raised {_exc(e)}")
    else: r.compare_records(before, 'validate/get_preds after the workflow')
    assert not r.errs, '\n'.join(r.errs)
