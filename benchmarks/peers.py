"""Each policy against the peer that does the same job, on the same learner, timed interleaved in one process.

| ours | peer |
|---|---|
| `GradClip(1.)` + fastai `SGD(mom=.9)` | fastai's `GradientClip(1.)` (which calls `torch.nn.utils.clip_grad_norm_`) |
| `LARC()` + fastai `SGD(mom=.9)` | fastai's `Larc(mom=.9, clip=True, trust_coeff=.02)` optimizer |
| `LARC()` + `OptimWrapper(torch.optim.SGD(momentum=.9, weight_decay=5e-4, foreach=True))` | timm's `Lars(momentum=.9, weight_decay=5e-4, trust_clip=True, trust_coeff=.02)` |
| `LARS()` + the same torch SGD | timm's `Lars(momentum=.9, weight_decay=5e-4, trust_coeff=1e-3)` |
| `LayerStats()` (defaults) + fastai SGD | no callback |
| `LayerStats()` (defaults) + fastai `Adam` | no callback |
| `MADLR()` (defaults) + fastai SGD | no callback |

The LARS rows use weight decay on both sides: timm's `Lars` skips the trust ratio entirely when `weight_decay=0` (unless
`always_adapt=True`), so without it the peer would be plain SGD.

on three models: a small convnet (4 conv-BN-ReLU layers; batch 64 of 3×32×32), fastai's `xresnet18` (10 classes; batch 32
of 3×32×32) and an MLP of 60 Linear+BatchNorm blocks (241 parameter tensors, width 64; batch 64). Each round trains one
epoch of every configuration of a model in a shuffled order; the ratio is the median training step (first
`before_batch` to last `after_batch`, data loading excluded) of ours over the peer's. A second table estimates the same
ratio from the optimizer phase alone (first `before_step` to last `after_step`: the policies' work and the optimizer's
step), `1 + (ours - peer)/peer's training step`: forward and backward passes are the same computation on both sides,
so this estimate is free of their run-to-run noise. timm's rows need `pip install timm`
and are left out without it. Nothing here is asserted: see `benchmarks/README.md` for the numbers.

Run: python benchmarks/peers.py [--rounds 8] [--batches 12] [--json out.json]
     python benchmarks/peers.py --limits   # only the cost of a pass and each policy's work alone, on xresnet18
"""
import json, statistics
from functools import partial
from pathlib import Path
import torch
from torch import nn
from fastai.basics import *
from fastai.callback.training import GradientClip
from fastai.optimizer import Larc
from fastai.vision.models.xresnet import xresnet18
from fastai_llr.all import *
import sys; sys.path.insert(0, str(Path(__file__).parent))
from adaptive import interleave, convnet, dls, _none

def mlp241(width=64, n_blocks=60, seed=0, n_in=32):
    "60 Linear+BatchNorm1d+ReLU blocks and a bias-free head: 4*60 + 1 = 241 parameter tensors (4*n_blocks + 1 in general)"
    torch.manual_seed(seed)
    layers = []
    for i in range(n_blocks): layers += [nn.Linear(n_in if i == 0 else width, width), nn.BatchNorm1d(width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10, bias=False))

def xres18(seed=0): torch.manual_seed(seed); return xresnet18(n_out=10)

MODELS = [('convnet', convnet, (3,32,32), 64), ('xresnet18', xres18, (3,32,32), 32), ('241-tensor MLP', mlp241, (32,), 64)]
TARGETS = {'GradClip': 1.00, 'LARC + fastai SGD': 1.00, 'LARC + torch SGD': 1.00, 'LARS + torch SGD': 1.00, 'LayerStats': 1.05,
           'LayerStats + Adam': 1.05, 'MADLR': 1.10}
WD = 5e-4  # the LARS rows' weight decay, ours and timm's

def pairs():
    "{row: (our config, peer config)}, configs being (opt_func, callbacks factory); rows whose peer is missing are left out"
    sgd = partial(SGD, mom=.9)
    torch_sgd = partial(OptimWrapper, opt=partial(torch.optim.SGD, momentum=.9, weight_decay=WD, foreach=True))
    res = {'GradClip': ((sgd, lambda: [GradClip(1.)]), (sgd, lambda: [GradientClip(1.)])),
           'LARC + fastai SGD': ((sgd, lambda: [LARC()]), (partial(Larc, mom=.9, clip=True, trust_coeff=.02), _none))}
    try:
        from timm.optim import Lars
        res['LARC + torch SGD'] = ((torch_sgd, lambda: [LARC()]), (partial(OptimWrapper, opt=partial(Lars, momentum=.9, weight_decay=WD, trust_clip=True, trust_coeff=.02)), _none))
        res['LARS + torch SGD'] = ((torch_sgd, lambda: [LARS()]), (partial(OptimWrapper, opt=partial(Lars, momentum=.9, weight_decay=WD, trust_coeff=1e-3)), _none))
    except ImportError: print("timm is not installed: its Lars rows are left out (pip install timm)")
    res['LayerStats'] = ((sgd, lambda: [LayerStats()]), (sgd, _none))
    res['LayerStats + Adam'] = ((Adam, lambda: [LayerStats()]), (Adam, _none))
    res['MADLR'] = ((sgd, lambda: [MADLR()]), (sgd, _none))
    return res

# passes over the weights per step beyond the optimizer's own (see "What each policy costs" in the core guide), as
# (norms, element-wise passes): ours now, and the least the formula needs (fused into one kernel where that is less)
PASSES = {'GradClip': ((1, 2), (1, 2)),            # norm of g; scale g (read, write): as clip_grad_norm_
          'LayerStats': ((3, 0), (3, 0)),          # norms of w, g and of the momentum buffer (the step's size)
          'LayerStats + Adam': ((3, 5), (3, 0)),   # the same, the step measured on a copy (copy 2, subtract 3)
          'MADLR': ((2, 12), (0, 6))}              # per average: (A-w)/s (3), its norm, + w/(βs) (3); fused: read w, g, A, B, write A, B

def limits(step_ms=None, model_fn=None, shape=(3,32,32), bs=32, n=20):
    """On xresnet18: the cost of a norm and of an element-wise pass over all the weights, each policy's work alone
    (`LayerRates._step` with an optimizer step that does nothing) against its passes priced at those costs, and the
    least its formula needs; with `step_ms` (the peer's training step) the step-time ratio that least would give"""
    import time
    from common import mechanism_time
    model_fn = model_fn or xres18
    ps = list(model_fn().parameters()); bufs = [torch.zeros_like(p) for p in ps]
    def t(f):
        f(); ts = []
        for _ in range(n): t0 = time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
        return 1e3*statistics.median(ts)
    norm,ew = t(lambda: torch._foreach_norm(ps)),t(lambda: torch._foreach_add_(bufs, ps, alpha=.5))/3
    print(f"\nxresnet18's weights ({sum(p.numel() for p in ps)/1e6:.1f} M): a norm {norm:.2f} ms, an element-wise pass "
          f"(a read or a write of every element) {ew:.2f} ms")
    ps_,res = pairs(),{}
    print(f"{'policy work alone':20s}{'measured ms':>12s}{'passes (norms+elem.)':>22s}{'priced ms':>10s}{'least':>8s}{'priced ms':>10s}"
          + (f"{'ratio at the least':>20s}" if step_ms else ''))
    for row,((nn_,ne),(ln,le)) in PASSES.items():
        (of,cf),_ = ps_[row]
        l = Learner(dls(shape, 2, bs), model_fn(), loss_func=CrossEntropyLossFlat(), opt_func=of)
        with l.no_bar(), l.no_logging(): l.fit(1, 1e-3, cbs=cf())
        ms,now,least = mechanism_time(l, cf(), n=n, blocks=4)/1e3,nn_*norm + ne*ew,ln*norm + le*ew
        sm = step_ms.get(row) if step_ms else None
        print(f"{row:20s}{ms:12.2f}{f'{nn_}+{ne}':>22s}{now:10.2f}{f'{ln}+{le}':>8s}{least:10.2f}" + (f"{1 + least/sm:20.2f}" if sm else ''))
        res[row] = dict(ms=ms, passes=[nn_, ne], least=[ln, le], priced_ms=now, least_ms=least, norm_ms=norm, pass_ms=ew,
                        ratio_at_least=(1 + least/sm) if sm else None)
    return res

def main(rounds=8, n_batches=12, out=None):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, {rounds} interleaved rounds of {n_batches} steps")
    ps,res = pairs(),{}
    for name,model_fn,shape,bs in MODELS:
        cfgs,peer_key = {},{}
        for row,(ours,peer) in ps.items():  # "no callback" with the same optimizer is one configuration, timed once
            cfgs[f'{row} | ours'] = ours
            peer_key[row] = f'none {id(ours[0])}' if peer[1] is _none and peer[0] is ours[0] else f'{row} | peer'
            cfgs.setdefault(peer_key[row], peer)
        med,learners = interleave(cfgs, dls(shape, n_batches, bs), model_fn, rounds, 'both', .1)
        opt_med = {k: statistics.median(toc.ts_step) for k,(_,_,toc) in learners.items()}
        for row,(ours,peer) in ps.items():
            o,pk = f'{row} | ours',peer_key[row]
            res.setdefault(row, {})[name] = dict(ours_ms=1e3*med[o], peer_ms=1e3*med[pk], ratio=med[o]/med[pk],
                                                 ours_opt_ms=1e3*opt_med[o], peer_opt_ms=1e3*opt_med[pk])
    cols = [m[0] for m in MODELS]
    print(f"\n{'ours / peer (training step)':28s}" + ''.join(f"{c:>16s}" for c in cols) + f"{'target':>8s}")
    for row,r in res.items():
        print(f"{row:28s}" + ''.join(f"{r[c]['ratio']:16.2f}" for c in cols) + f"{'≤ %.2f' % TARGETS[row]:>8s}")
    print(f"\n{'from the optimizer phase':28s}" + ''.join(f"{c:>16s}" for c in cols) + f"{'target':>8s}")
    for row,r in res.items():  # the forward and backward passes are the same computation on both sides: the difference is the optimizer phase
        print(f"{row:28s}" + ''.join(f"{1 + (r[c]['ours_opt_ms'] - r[c]['peer_opt_ms'])/r[c]['peer_ms']:16.2f}" for c in cols) + f"{'≤ %.2f' % TARGETS[row]:>8s}")
    print("\nmedian ms per training step, ours / peer:")
    for row,r in res.items(): print(f"  {row:26s}" + ''.join(f"  {c}: {r[c]['ours_ms']:.2f}/{r[c]['peer_ms']:.2f}" for c in cols))
    print("\nmedian ms per optimizer phase (before_step to after_step: the policies' work and the optimizer's step), ours / peer:")
    for row,r in res.items(): print(f"  {row:26s}" + ''.join(f"  {c}: {r[c]['ours_opt_ms']:.2f}/{r[c]['peer_opt_ms']:.2f}" for c in cols))
    res['limits'] = limits({row: r['xresnet18']['peer_ms'] for row,r in res.items() if row in PASSES})
    if out: Path(out).write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__':
    if '--limits' in sys.argv: limits()  # only the pass costs and each policy's work alone (a minute)
    else:
        from common import run_cli
        run_cli(main, 8, 12)
