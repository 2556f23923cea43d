"""Overhead of `GradClip` and `LayerStats` on the benchmark convnet, interleaved in one run.

Median training-step time (first `before_batch` to last `after_batch`) relative to the same learner without the
callback, with fastai SGD (momentum) and fastai Adam (where `LayerStats` also computes the quantiles of Adam's
per-element effective step sizes, a sort per tensor).
Run: python benchmarks/stats.py [--rounds 15] [--batches 30] [--json out.json]
"""
import argparse, json
from functools import partial
from pathlib import Path
import torch
from fastai.basics import *
from fastai_llr.all import *
from adaptive import convnet, dls, measure, _none

def main(rounds=15, n_batches=30, out=None):
    res = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, {rounds} interleaved rounds of {n_batches} steps, small convnet")
    data = dls((3,32,32), n_batches)
    for opt_name,of,lr in (('SGD', partial(SGD, mom=.9), .1), ('Adam', Adam, 1e-3)):
        cfgs = {'none': (of, _none), 'GradClip(global)': (of, lambda: [GradClip(1.)]),
                'GradClip(agc)': (of, lambda: [GradClip(.01, mode='agc')]),
                'LayerStats()': (of, lambda: [LayerStats()]), 'LayerStats(every=10)': (of, lambda: [LayerStats(every=10)])}
        if opt_name=='Adam': cfgs['LayerStats(quantiles=())'] = (of, lambda: [LayerStats(quantiles=())])
        measure(opt_name, cfgs, data, convnet, rounds, lr, res)
    if out: Path(out).write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__':
    import sys; sys.path.insert(0, str(Path(__file__).parent))
    from common import run_cli
    run_cli(main, 15, 30)
