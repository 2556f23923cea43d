"""Step-time overhead of the layer-rate mechanism: a learner with `CyclicalLLR` vs the same learner without it.

The configurations are timed interleaved (round-robin, in a shuffled order each round) in one process, so drifts of
the machine affect all of them alike; the report gives the ratio of median epoch times to the baseline.
Run: python benchmarks/step_time.py [--rounds 15] [--batches 40] [--json out.json]
"""
import argparse, json, random, time, statistics
from copy import deepcopy
from functools import partial
import torch
from torch import nn
from fastai.basics import *
from fastai.callback.schedule import *
from fastai_llr.all import *
import sys; sys.path.insert(0, str(Path(__file__).parent))
from common import mechanism_time

def convnet(seed=0):
    "A small 2-D convnet: 4 conv-BN-ReLU layers and a linear head (9 parameter-bearing layers)"
    torch.manual_seed(seed)
    return nn.Sequential(ConvLayer(3, 32, stride=2), ConvLayer(32, 64, stride=2), ConvLayer(64, 64, stride=2),
                         ConvLayer(64, 128, stride=2), nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(128, 10))

def dls(n_batches, bs=64, size=32):
    g = torch.Generator().manual_seed(0)
    x,y = torch.randn(n_batches*bs, 3, size, size, generator=g),torch.randint(0, 10, (n_batches*bs,), generator=g)
    ds = list(zip(x, y))
    return DataLoaders(DataLoader(ds, bs=bs, shuffle=False, drop_last=True), DataLoader(ds[:bs], bs=bs))

class _Tic(Callback):
    "Start the clock at the very beginning of each training batch"
    order = -1000
    def before_batch(self): self.learn._tic = time.perf_counter()

class _Toc(Callback):
    "Stop it at the very end of the batch (after every other callback's after_batch)"
    order = 1000
    def __init__(self): self.ts = []
    def after_batch(self):
        if self.training: self.ts.append(time.perf_counter()-self.learn._tic)

def two_way(m): return [params(m[:2]), params(m[2:])]

CONFIGS = {
    'baseline (no callback)':                lambda: (None, None),
    'CyclicalLLR, 3 depth groups (split)':   lambda: (None, CyclicalLLR()),
    'CyclicalLLR, optimizer groups (2)':     lambda: (two_way, CyclicalLLR(start=(2., .5), end=(.5, 2.))),
    'CyclicalLLR x2 policies, 9 groups':     lambda: (None, [CyclicalLLR.depth_linear(9), CyclicalLLR.staggered_one_cycle(3)]),
}

def main(rounds=15, n_batches=40, out=None):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data,times,steps = dls(n_batches),{k: [] for k in CONFIGS},{k: _Toc() for k in CONFIGS}
    learners = {}
    for k,f in CONFIGS.items():
        spl,cbs = f()
        learners[k] = (Learner(data, convnet(), loss_func=CrossEntropyLossFlat(), splitter=spl or trainable_params), cbs)
    for l,cbs in learners.values():  # warm-up
        with l.no_bar(), l.no_logging(): l.fit_one_cycle(1, 1e-3, cbs=cbs)
    for r in range(rounds):
        order = list(learners); random.Random(r).shuffle(order)
        for k in order:
            l,cbs = learners[k]
            with l.no_bar(), l.no_logging():
                t0 = time.perf_counter(); l.fit_one_cycle(1, 1e-3, cbs=L(cbs)+[_Tic(), steps[k]]); times[k].append(time.perf_counter()-t0)
    base,base_step = statistics.median(times['baseline (no callback)']),statistics.median(steps['baseline (no callback)'].ts)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, {n_batches} steps/epoch, {rounds} interleaved rounds")
    print(f"{'configuration':40s} {'median ms/step':>14s} {'step ratio':>10s} {'epoch ratio':>11s}")
    for k,ts in times.items():
        med,st = statistics.median(ts),statistics.median(steps[k].ts)
        rows.append(dict(config=k, ms_per_step=1e3*st, step_ratio=st/base_step, epoch_ratio=med/base))
        print(f"{k:40s} {1e3*st:14.2f} {st/base_step:10.3f} {med/base:11.3f}")
    print("\nHost-side cost of the mechanism alone (LayerRates._step with a no-op optimizer step, 5000 calls), relative to the baseline step:")
    for k,(l,cbs) in learners.items():
        if cbs is None: continue
        us = mechanism_time(l, [deepcopy(c) for c in (cbs if isinstance(cbs, list) else [cbs])], 5000)
        row = next(r for r in rows if r['config']==k); row['mechanism_us_per_step'] = us
        print(f"{k:40s} {us:8.1f} µs/step = {100*us/(1e3*row['ms_per_step']):.3f}% of a step")
    if out: Path(out).write_text(json.dumps(rows, indent=1))
    return rows

if __name__ == '__main__':
    import sys; sys.path.insert(0, str(Path(__file__).parent))
    from common import run_cli
    run_cli(main, 15, 40)
