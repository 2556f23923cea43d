"""Host memory of long runs: `LayerStats` and a policy's per-step history with the record's bound, without it, and streamed to files.

A synthetic long run drives the real logging path — the layer-rate mechanism's step (`StepPipeline`, `learn.layer_rates.pipe`, statistics,
`LayerStats.observe`, `LARC`'s factors, the record) with an optimizer step that does nothing — for `--steps` steps of
`--epoch` steps each, on a 161-tensor MLP (ResNet-50 has 161 parameter tensors). Three configurations:
- `unbounded`: `Record.max_bytes = None`, every row kept;
- `bounded`: the record's bound, here `--max-mib` per key (64 MiB by default in the package; smaller here so that a
  run of minutes reaches it);
- `streamed`: `LayerStats(path=...)`, each epoch written to an `.npz` file.
Each runs in its own process. For each: the bytes the record holds at the end (NumPy arrays), the peak of Python/NumPy
allocations during the run (`tracemalloc`), the growth of the process's resident memory (RSS) from the start of the
run to its end, and the rows of `learn.layer_stats` afterwards.

Run: python benchmarks/memory.py [--steps 20000] [--epoch 2000] [--max-mib 4]
"""
import argparse, gc, json, subprocess, sys, tempfile, time, tracemalloc
from pathlib import Path
import torch
from torch import nn
from fastai.basics import *
from fastai_llr.all import *
from fastai_llr.core import Record
import sys; sys.path.insert(0, str(Path(__file__).parent))
from peers import mlp241

def mlp161(seed=0):
    "40 Linear+BatchNorm1d+ReLU blocks and a bias-free head (peers.py's MLP builder): 4*40 + 1 = 161 parameter tensors"
    return mlp241(width=16, n_blocks=40, seed=seed, n_in=8)

def rss_mib():
    "Resident memory of this process now (Linux /proc)"
    return int(Path('/proc/self/statm').read_text().split()[1])*os.sysconf('SC_PAGE_SIZE')/2**20

def held_bytes(rec):
    "Bytes of the arrays a record holds on the host"
    return rec.nbytes

def run(n_steps, epoch, max_bytes, path=None):
    "One synthetic run; returns its measurements"
    learn = Learner(synth_dls(), mlp161(), loss_func=CrossEntropyLossFlat(), opt_func=partial(SGD, mom=.9))
    stats = LayerStats(path=path)
    learn.add_cbs([stats, LARC()])
    xb,yb = learn.dls.one_batch(); learn.loss_func(learn.model(xb), yb).backward()
    learn.create_opt(); learn.opt.set_hyper('lr', .1)
    old,Record.max_bytes = Record.max_bytes,max_bytes
    mech = learn.layer_rates
    learn.train_iter,learn.pct_train,learn.epoch = 0,0.,0
    gc.collect(); r0 = rss_mib(); tracemalloc.start(); t0 = time.perf_counter()
    try:
        mech.start()
        for i in range(n_steps):
            mech.pipe(lambda: None, 0., learn.train_iter); learn.train_iter += 1
            if (i+1) % epoch == 0: mech.out.flush(); stats.after_epoch(); learn.epoch += 1
        held = held_bytes(mech.out)
        _,peak = tracemalloc.get_traced_memory()
        rows,stride,rss = len(stats.logged_steps('row')),mech.out.stride[(0, 'row')] or 1,rss_mib()-r0
        dt = time.perf_counter()-t0
        mech.finish()
    finally: Record.max_bytes = old; tracemalloc.stop()
    return dict(held_mib=held/2**20, peak_mib=peak/2**20, rss_mib=rss, rows_in_memory=rows, stride=stride,
                df_rows=len(stats.df), s=dt)

def in_child(cfg, n_steps, epoch, max_mib, path):
    "Run one configuration in a fresh Python process (so that its resident memory is its own)"
    out = subprocess.run([sys.executable, '-W', 'ignore', __file__, '--one', cfg, '--steps', str(n_steps), '--epoch', str(epoch),
                          '--max-mib', str(max_mib), '--path', str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

CONFIGS = {'unbounded': lambda mib,path: (None, None), 'bounded': lambda mib,path: (int(mib*2**20), None),
           'streamed': lambda mib,path: (None, path)}

def main(n_steps=20000, epoch=2000, max_mib=4.):
    print(f"{n_steps} steps, epochs of {epoch}, 161 tensors; LayerStats() + LARC(); bound {max_mib:g} MiB per key")
    with tempfile.TemporaryDirectory() as d:
        res = {k: in_child(k, n_steps, epoch, max_mib, Path(d)/'stats') for k in CONFIGS}
        disk = sum(f.stat().st_size for f in (Path(d)/'stats').iterdir())/2**20
    print(f"\n{'':10s} {'held (MiB)':>11s} {'tracemalloc peak':>17s} {'RSS growth':>11s} {'stride':>7s} {'DataFrame rows':>15s} {'time (s)':>9s}")
    for k,r in res.items():
        print(f"{k:10s} {r['held_mib']:11.1f} {r['peak_mib']:17.1f} {r['rss_mib']:11.1f} {r['stride']:7d} {r['df_rows']:15d} {r['s']:9.1f}")
    print(f"streamed: {disk:.1f} MiB in {n_steps//epoch} files")
    return res

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=20000, help='steps of the synthetic run')
    p.add_argument('--epoch', type=int, default=2000, help='steps per epoch (the record moves to the host, and to a file, once per epoch)')
    p.add_argument('--max-mib', type=float, default=4., help="the record's bound per key in MiB for the 'bounded' run")
    p.add_argument('--one', choices=list(CONFIGS), help=argparse.SUPPRESS)  # a child process: one configuration, JSON out
    p.add_argument('--path', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one: print(json.dumps(run(a.steps, a.epoch, *CONFIGS[a.one](a.max_mib, Path(a.path)))))
    else: main(a.steps, a.epoch, a.max_mib)
