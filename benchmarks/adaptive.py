"""Overhead of the adaptive layer-rate policies (LARS, LARC, MADLR), and our LARC against fastai's `Larc` optimizer
and timm's `Lars` optimizer.

Everything is timed interleaved (round-robin, shuffled each round) in one process.
(a) a small convnet and (b) an MLP with many small parameter tensors (61 linear layers, 122 tensors):
    median time of a training step (first `before_batch` to last `after_batch`) relative to the same learner
    without a policy.
(c) on (b), the optimizer phase only (from the first `before_step` to the last `after_step`: our policies' work
    plus the optimizer's step) for LARC-like updates: plain SGD (reference), our `LARC` callback + fastai SGD,
    fastai's `Larc` optimizer, timm's `Lars(trust_clip=True)` (if timm is installed).
(d) the extra memory of MADLR: its parameter-sized buffers in the optimizer state.
Run: python benchmarks/adaptive.py [--rounds 15] [--batches 30] [--json out.json]
"""
import argparse, json, random, statistics, time
from functools import partial
import torch
from torch import nn
from fastai.basics import *
from fastai.callback.schedule import *
from fastai.optimizer import Larc
from fastai_llr.all import *
import sys; sys.path.insert(0, str(Path(__file__).parent))
from common import mechanism_time

def convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(ConvLayer(3, 32, stride=2), ConvLayer(32, 64, stride=2), ConvLayer(64, 64, stride=2),
                         ConvLayer(64, 128, stride=2), nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(128, 10))

def many_mlp(n_layers=60, width=64, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(32, width), nn.ReLU()]
    for _ in range(n_layers-1): layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))

def dls(x_shape, n_batches, bs=64):
    g = torch.Generator().manual_seed(0)
    x,y = torch.randn(n_batches*bs, *x_shape, generator=g),torch.randint(0, 10, (n_batches*bs,), generator=g)
    ds = list(zip(x, y))
    return DataLoaders(DataLoader(ds, bs=bs, shuffle=False, drop_last=True), DataLoader(ds[:bs], bs=bs))

class _Tic(Callback):
    "ev: 'batch' (the training step), 'step' (the optimizer phase: policies and optimizer), 'both'"
    order = -1000
    def __init__(self, ev): self.ev = ev
    def before_batch(self):
        if self.ev in ('batch','both'): self.learn._tic = time.perf_counter()
    def before_step(self):
        if self.ev=='step': self.learn._tic = time.perf_counter()
        if self.ev=='both': self.learn._tic_s = time.perf_counter()

class _Toc(Callback):
    "`ts`: the times `ev` says ('both': batches), `ts_step`: with 'both', the optimizer phases"
    order = 1000
    def __init__(self, ev): self.ev,self.ts,self.ts_step = ev,[],[]
    def after_batch(self):
        if self.ev in ('batch','both') and self.training: self.ts.append(time.perf_counter()-self.learn._tic)
    def after_step(self):
        if self.ev=='step': self.ts.append(time.perf_counter()-self.learn._tic)
        if self.ev=='both': self.ts_step.append(time.perf_counter()-self.learn._tic_s)

def interleave(configs, data, model_fn, rounds, ev, lr):
    "configs: name -> (opt_func, callbacks factory); returns name -> median seconds per step"
    learners = {k: (Learner(data, model_fn(), loss_func=CrossEntropyLossFlat(), opt_func=of), cf, _Toc(ev)) for k,(of,cf) in configs.items()}
    for l,cf,_ in learners.values():
        with l.no_bar(), l.no_logging(): l.fit(1, lr, cbs=cf())
    for r in range(rounds):
        order = list(learners); random.Random(r).shuffle(order)
        for k in order:
            l,cf,toc = learners[k]
            with l.no_bar(), l.no_logging(): l.fit(1, lr, cbs=L(cf())+[_Tic(ev), toc])
    return {k: statistics.median(t.ts) for k,(_,_,t) in learners.items()},learners

def _none(): return []

def mechanism_cost(configs, data, model_fn, lr, n=200, blocks=10):
    """Host time of the layer-rate mechanism alone (`learn.layer_rates.pipe` with a no-op optimizer step),
    in a tight loop on one batch's gradients. Returns name -> median µs per step (0 without policies)."""
    res = {}
    for k,(of,cf) in configs.items():
        pols = cf()
        if not pols: res[k] = 0.; continue
        l = Learner(data, model_fn(), loss_func=CrossEntropyLossFlat(), opt_func=of)
        with l.no_bar(), l.no_logging(): l.fit(1, lr, cbs=pols)  # warm optimizer and policy state
        res[k] = mechanism_time(l, cf(), n, blocks)
    return res

def measure(title, cfgs, data, model_fn, rounds, lr, res):
    "Interleaved step times and the mechanism alone for `cfgs` (name -> (opt_func, callbacks factory)); print and add to `res`"
    med,_ = interleave(cfgs, data, model_fn, rounds, 'batch', lr)
    cost = mechanism_cost(cfgs, data, model_fn, lr)
    print(f"\n{title}: median ms/step, ratio to no callback, mechanism alone (µs, % of a step)")
    for k,v in med.items():
        print(f"  {k:26s} {1e3*v:8.2f} {v/med['none']:7.3f} {cost[k]:8.0f} {100*cost[k]/(1e6*med['none']):6.2f}%")
        res[f"{title} | {k}"] = dict(ms=1e3*v, ratio=v/med['none'], mechanism_us=cost[k])
    return res

def main(rounds=15, n_batches=30, out=None):
    res = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, {rounds} interleaved rounds of {n_batches} steps")
    sgd,adamw = partial(SGD, mom=.9, wd=1e-4),partial(OptimWrapper, opt=torch.optim.AdamW)
    for model_name,model_fn,shape in (('(a) small convnet', convnet, (3,32,32)), ('(b) MLP, 122 tensors', many_mlp, (32,))):
        data = dls(shape, n_batches)
        for opt_name,of,lr in (('SGD', sgd, .1), ('AdamW', adamw, 1e-3)):
            cfgs = {'none': (of, _none), 'LARS': (of, lambda: [LARS()]), 'LARC': (of, lambda: [LARC()]),
                    'MADLR': (of, lambda: [MADLR()])}
            measure(f"{model_name}, {opt_name}", cfgs, data, model_fn, rounds, lr, res)
    # (c) optimizer phase on the many-tensor MLP
    data = dls((32,), n_batches)
    cfgs = {'fastai SGD (no LARC)': (partial(SGD, mom=.9), _none),
            'fastai_llr LARC + fastai SGD': (partial(SGD, mom=.9), lambda: [LARC()]),
            "fastai Larc optimizer": (partial(Larc, mom=.9, clip=True), _none)}
    try:
        import timm.optim
        cfgs["timm Lars(trust_clip=True)"] = (partial(OptimWrapper, opt=partial(timm.optim.Lars, momentum=.9, trust_clip=True, trust_coeff=.02)), _none)
    except ImportError: print("\n(timm not installed: pip install timm to include timm's Lars)")
    med,learners = interleave(cfgs, data, many_mlp, rounds, 'step', .1)
    print("\n(c) optimizer phase on (b) (policies + optimizer step): median µs/step, ratio to plain SGD")
    base = med['fastai SGD (no LARC)']
    for k,v in med.items():
        print(f"  {k:32s} {1e6*v:9.1f} {v/base:7.2f}")
        res[f"(c) {k}"] = dict(us=1e6*v, ratio=v/base)
    # (d) MADLR memory
    for model_name,model_fn,shape in (('(a) small convnet', convnet, (3,32,32)), ('(b) MLP, 122 tensors', many_mlp, (32,))):
        l = Learner(dls(shape, 2), model_fn(), loss_func=CrossEntropyLossFlat(), opt_func=partial(SGD, mom=.9))
        with l.no_bar(), l.no_logging(): l.fit(1, .1, cbs=MADLR())
        st = opt_state(l.opt)
        mad = sum(v.numel()*v.element_size() for s in st.values() for k,v in s.items() if k.startswith('mad_'))
        prm = sum(p.numel()*p.element_size() for p in l.model.parameters())
        print(f"\n(d) {model_name}: MADLR state {mad/2**20:.2f} MiB = {mad/prm:.2f} x the parameters ({prm/2**20:.2f} MiB)")
        res[f"(d) {model_name}"] = dict(madlr_bytes=mad, param_bytes=prm, ratio=mad/prm)
    if out: Path(out).write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__':
    import sys; sys.path.insert(0, str(Path(__file__).parent))
    from common import run_cli
    run_cli(main, 15, 30)
