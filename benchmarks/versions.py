"""Step time of the policies of two versions of the package, interleaved in one process: the working tree's
`fastai_llr` ("new") against an older git revision ("old", `--old REF`).

The old revision's `fastai_llr/` is extracted with `git archive REF fastai_llr` into a temporary directory, renamed
`fastai_llr_old` and imported under that name (the package imports itself relatively). Both versions then train
the same learners: (a) the small convnet and (b) the 122-tensor MLP of `adaptive.py`, each with fastai
`SGD(mom=.9, wd=1e-4)` and `OptimWrapper(torch.optim.AdamW)`, with no policy (the baseline) and with each policy
configuration from the old and from the new version. Each round runs one epoch of every learner in a shuffled
order, from the same initial weights and a fresh optimizer, so old and new do the same arithmetic. The report gives,
per model, optimizer and configuration, the median time of a training step (first `before_batch` to last
`after_batch`, data loading excluded), the ratios new/baseline, old/baseline and new/old, the spread of new/old over
the rounds, and new/old of the median epoch (the `fit` call, with its per-epoch work and the one validation batch).
When both versions are the same code, new/old shows the noise of the measurement.
Run: python benchmarks/versions.py [--old ae6f530] [--rounds 10] [--batches 20] [--quick] [--only WORD ...] [--threads 1]
     [--json out.json]
Torch runs on one thread by default: with more, every other process on the machine stalls the steps (OpenMP threads
wait for each other), which blurs the ratios far more than it changes them.
"""
import argparse, importlib, io, json, math, os, random, shutil, statistics, subprocess, sys, tarfile, tempfile, time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT/'benchmarks')]  # the working tree's `fastai_llr` ahead of any installed one

import torch
from fastai.basics import *
_PRISTINE = dict(vars(Learner))  # fastai's `Learner`, before the package `@patch`es it
import fastai_llr
from adaptive import convnet, many_mlp, dls, _Tic, _Toc

OLD_NAME = 'fastai_llr_old'

def _git(*args): return subprocess.run(['git', '-C', str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()

def _owner(v):
    "The top-level package that defined the class attribute `v` (a function, property or class method)"
    f = v.fget if isinstance(v, property) else getattr(v, '__func__', v)
    return (getattr(f, '__module__', None) or '').split('.')[0]

def _patched(cls, pkg): return {k: v for k,v in vars(cls).items() if _owner(v) == pkg}

def _unpatch(cls, names):
    for k in names:
        if k in _PRISTINE: setattr(cls, k, _PRISTINE[k])
        else: delattr(cls, k)

class _Absent:
    "Hides an attribute of the base class: what an instance sets is its own (as for a name the class does not define)"
    def __set_name__(self, owner, name): self.name = name
    def __get__(self, obj, cls=None):
        if obj is not None and self.name in obj.__dict__: return obj.__dict__[self.name]
        raise AttributeError(self.name)
    def __set__(self, obj, v): obj.__dict__[self.name] = v
    def __delete__(self, obj):
        if obj.__dict__.pop(self.name, _Absent) is _Absent: raise AttributeError(self.name)

def import_old(ref, tmp):
    """Extract `fastai_llr/` at git revision `ref` into `tmp`/fastai_llr_old and import it. Returns its `all` module and the
    `Learner` class its learners use: both versions `@patch` `Learner` (a property of one can break the other's code), so
    `Learner` keeps the working tree's patches and the old version gets a subclass with its own, the new ones hidden."""
    data = subprocess.run(['git', '-C', str(ROOT), 'archive', '--format=tar', ref, 'fastai_llr'], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tf: tf.extractall(tmp, filter='data')
    (Path(tmp)/'fastai_llr').rename(Path(tmp)/OLD_NAME)
    sys.path.insert(0, str(tmp))
    new_p = _patched(Learner, 'fastai_llr')
    _unpatch(Learner, new_p)  # fastai's own `Learner` while the old version patches it
    try: mod = importlib.import_module(f'{OLD_NAME}.all')
    finally:
        old_p = _patched(Learner, OLD_NAME)
        _unpatch(Learner, old_p)
        for k,v in new_p.items(): setattr(Learner, k, v)
    ns = {k: (_PRISTINE[k] if k in _PRISTINE else _Absent()) for k in new_p}
    ns.update(old_p)
    return mod,type('Learner', (Learner,), ns)

def _foreign_patches():
    "Attributes that either version put on fastai classes other than `Learner` (shared by the old and new learners)"
    import fastai.learner, fastai.optimizer, fastai.callback.core, fastai.data.core, fastai.data.load
    res = []
    for m in (fastai.learner, fastai.optimizer, fastai.callback.core, fastai.data.core, fastai.data.load, torch.optim.Optimizer):
        for c in ([m] if isinstance(m, type) else [v for v in vars(m).values() if isinstance(v, type) and v.__module__ == m.__name__]):
            if c is Learner: continue
            res += [f"{c.__name__}.{k} ({_owner(v)})" for k,v in vars(c).items() if _owner(v) in ('fastai_llr', OLD_NAME)]
    return res

def two_way(m): return [params(m[:2]), params(m[2:])]

# name -> (splitter or None, policies factory given a version's `all` module); the factory builds new instances per fit
CONFIGS = {
    'CyclicalLLR, 3 depth groups': (None, lambda v: [v.CyclicalLLR()]),
    'CyclicalLLR, 2 opt groups':   (two_way, lambda v: [v.CyclicalLLR(start=(2., .5), end=(.5, 2.))]),
    'LARS()':                      (None, lambda v: [v.LARS()]),
    'LARC()':                      (None, lambda v: [v.LARC()]),
    'MADLR()':                     (None, lambda v: [v.MADLR()]),
    'GradClip(1.)':                (None, lambda v: [v.GradClip(1.)]),
    "GradClip(.01, 'agc')":        (None, lambda v: [v.GradClip(.01, mode='agc')]),
    'LayerStats()':                (None, lambda v: [v.LayerStats()]),
    'all five':                    (None, lambda v: [v.CyclicalLLR(), v.LARC(), v.MADLR(), v.GradClip(1.), v.LayerStats()]),
}
MODELS = (('convnet', convnet, (3,32,32)), ('MLP-122', many_mlp, (32,)))
OPTS = (('SGD', partial(SGD, mom=.9, wd=1e-4), .1), ('AdamW', partial(OptimWrapper, opt=torch.optim.AdamW), 1e-3))

class Run:
    "One learner of the benchmark: its policies factory, initial weights, and the step and epoch times of every round"
    def __init__(self, key, learner_cls, data, model_fn, of, lr, spl, cbf):
        self.key,self.lr,self.cbf = key,lr,cbf
        self.learn = learner_cls(data, model_fn(), loss_func=CrossEntropyLossFlat(), opt_func=of, splitter=spl or trainable_params)
        self.init = {k: v.clone() for k,v in self.learn.model.state_dict().items()}
        self.toc,self.steps,self.epochs,self.error,self.nonfinite = _Toc('batch'),[],[],None,False
    def fit(self, record=True):
        l,n = self.learn,len(self.toc.ts)
        l.model.load_state_dict(self.init)
        t0 = time.perf_counter()
        # A policy that makes the training diverge may raise `FloatingPointError` at the end of the epoch: every step has
        # run (with NaNs, the same work), so keep the times and flag the row; the next round starts again from `init`.
        try:
            with l.no_bar(), l.no_logging(): l.fit(1, self.lr, cbs=L(self.cbf())+[_Tic('batch'), self.toc], reset_opt=True)
        except FloatingPointError: self.nonfinite = True
        t = time.perf_counter()-t0
        if not all(bool(torch.isfinite(p).all()) for p in l.model.parameters()): self.nonfinite = True  # not every NaN raises
        if record: self.steps.append(self.toc.ts[n:]); self.epochs.append(t)
        else: del self.toc.ts[n:]

def _med(xs): return statistics.median(xs)
def _q(xs, q): return statistics.quantiles(xs, n=4, method='inclusive')[q] if len(xs) > 1 else xs[0]

def main(rounds=10, n_batches=20, out=None, old='ae6f530', only=None, threads=1):
    if threads: torch.set_num_threads(threads)
    old_sha = _git('rev-parse', '--short', f'{old}^{{commit}}')
    head,dirty = _git('rev-parse', '--short', 'HEAD'),bool(_git('status', '--porcelain', '--', 'fastai_llr'))
    assert Path(fastai_llr.__file__).resolve().parent == ROOT/'fastai_llr', f"imported {fastai_llr.__file__}, not the working tree's"
    new = importlib.import_module('fastai_llr.all')
    tmp = tempfile.mkdtemp(prefix='llr_versions_')
    try:
        oldm,OldLearner = import_old(old, tmp)
        assert Path(oldm.__file__).resolve().is_relative_to(Path(tmp).resolve()) and oldm.LARS is not new.LARS
        versions,lcls = {'old': oldm, 'new': new},{'old': OldLearner, 'new': Learner}
        load0 = os.getloadavg()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu, {rounds} interleaved rounds of {n_batches} steps")
        print(f"new: working tree {ROOT/'fastai_llr'} (HEAD {head}{', modified' if dirty else ''}); old: {old} = {old_sha} as {OLD_NAME}")
        if fp := _foreign_patches(): print(f"note: the old and the new learners share these patches of fastai classes: {', '.join(fp)}")
        runs,skipped = {},[]
        for mname,mf,shape in MODELS:
            data = dls(shape, n_batches)
            for oname,of,lr in OPTS:
                sel = [c for c in CONFIGS if not only or any(s.lower() in f"{mname} {oname} {c}".lower() for s in only)]
                if not sel: continue
                runs[(mname, oname, 'none', 'base')] = Run((mname, oname, 'none', 'base'), Learner, data, mf, of, lr, None, lambda: [])
                for cname in sel:
                    spl,pf = CONFIGS[cname]
                    for vname,v in versions.items():
                        key = (mname, oname, cname, vname)
                        try: pf(v)
                        except Exception as e: skipped.append(f"{key}: {type(e).__name__}: {e}"); continue
                        runs[key] = Run(key, lcls[vname], data, mf, of, lr, spl, partial(pf, v))
        n_runs = len(runs)
        t_start = time.perf_counter()
        for r in range(-1, rounds):  # round -1: warm-up, not recorded
            order = list(runs); random.Random(r).shuffle(order)
            for k in order:
                run = runs[k]
                if run.error: continue
                try: run.fit(record=r >= 0)
                except Exception as e: run.error = f"{type(e).__name__}: {e}"; print(f"  {k} failed in round {r}: {run.error}")
            if r == -1: print(f"{n_runs} learners; warm-up round {time.perf_counter()-t_start:.1f} s")
        wall = time.perf_counter()-t_start
        rows = []
        def stats(k):
            run = runs.get(k)
            if run is None or run.error or not run.steps: return None
            return dict(step=_med([t for ts in run.steps for t in ts]), rounds=[_med(ts) for ts in run.steps], epoch=_med(run.epochs))
        hdr = (f"{'model':8s} {'opt':5s} {'configuration':28s} {'base ms':>7s} {'old ms':>7s} {'new ms':>7s} "
               f"{'old/base':>8s} {'new/base':>8s} {'new/old':>7s} {'(IQR over rounds)':>17s} {'epoch n/o':>9s}")
        print("\nmedian ms/step; ratios of medians; 'IQR over rounds': quartiles of the per-round new/old ratio")
        print(hdr); print('-'*len(hdr))
        for mname,_,_ in MODELS:
            for oname,_,_ in OPTS:
                b = stats((mname, oname, 'none', 'base'))
                if b is None: continue
                bnf = runs[(mname, oname, 'none', 'base')].nonfinite
                print(f"{mname:8s} {oname:5s} {'none (baseline)' + (' !' if bnf else ''):28s} {1e3*b['step']:7.2f}")
                rows.append(dict(model=mname, opt=oname, config='none', base_ms=1e3*b['step'], base_epoch_ms=1e3*b['epoch'], **(dict(nonfinite=['base']) if bnf else {})))
                for cname in CONFIGS:
                    o,n = stats((mname, oname, cname, 'old')),stats((mname, oname, cname, 'new'))
                    if o is None and n is None: continue
                    row = dict(model=mname, opt=oname, config=cname, base_ms=1e3*b['step'])
                    nf = [v for v in ('old','new') if (mname, oname, cname, v) in runs and runs[(mname, oname, cname, v)].nonfinite]
                    if nf: row['nonfinite'] = nf
                    cells = [f"{mname:8s} {oname:5s} {(cname + (' !' if nf else '')):28s} {1e3*b['step']:7.2f}"]
                    for vn,s in (('old', o), ('new', n)):
                        if s: row[f'{vn}_ms'],row[f'{vn}_epoch_ms'] = 1e3*s['step'],1e3*s['epoch']
                    cells.append(f"{row['old_ms']:7.2f}" if o else f"{'n/a':>7s}")
                    cells.append(f"{row['new_ms']:7.2f}" if n else f"{'n/a':>7s}")
                    for vn,s in (('old', o), ('new', n)):
                        if s: row[f'{vn}_per_base'] = s['step']/b['step']
                    cells.append(f"{row['old_per_base']:8.3f}" if o else f"{'n/a':>8s}")
                    cells.append(f"{row['new_per_base']:8.3f}" if n else f"{'n/a':>8s}")
                    if o and n:
                        pr = [x/y for x,y in zip(n['rounds'], o['rounds'])]
                        row.update(new_per_old=n['step']/o['step'], new_per_old_q1=_q(pr, 0), new_per_old_q3=_q(pr, 2),
                                   new_per_old_epoch=n['epoch']/o['epoch'])
                        cells.append(f"{row['new_per_old']:7.3f} {f'({_q(pr, 0):.3f}-{_q(pr, 2):.3f})':>17s} {row['new_per_old_epoch']:9.3f}")
                    print(' '.join(cells)); rows.append(row)
        nos = [r['new_per_old'] for r in rows if 'new_per_old' in r]
        if nos:
            gm = math.exp(statistics.fmean(math.log(x) for x in nos))
            print(f"\nnew/old over {len(nos)} configurations: geometric mean {gm:.3f}, min {min(nos):.3f}, max {max(nos):.3f}")
        if any('nonfinite' in r for r in rows):
            print("!: the weights became non-finite (NaN gradients; with some policies `FloatingPointError` at the end of the epoch); "
                  "timed all the same, each round from the same start:")
            for r in rows:
                if 'nonfinite' in r: print(f"   {r['model']} {r['opt']} {r['config']}: {', '.join(r['nonfinite'])}")
        for k,run in runs.items():
            if run.error: print(f"failed: {k}: {run.error}")
        for s in skipped: print(f"not available: {s}")
        load1 = os.getloadavg()
        print(f"all rounds (warm-up included): {wall:.0f} s; load average (1, 5, 15 min) {' '.join(f'{x:.2f}' for x in load0)} at the start, "
              f"{' '.join(f'{x:.2f}' for x in load1)} at the end, on {os.cpu_count()} CPUs (a busy machine blurs the ratios)")
        if out:
            meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), rounds=rounds, batches=n_batches, old=old,
                        old_commit=old_sha, new_head=head, new_modified=dirty, wall_s=wall, loadavg_start=load0, loadavg_end=load1,
                        failed={' | '.join(k): r.error for k,r in runs.items() if r.error}, skipped=skipped)
            Path(out).write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        return rows
    finally:
        if tmp in sys.path: sys.path.remove(tmp)
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--old', default='ae6f530', help='git revision of the old version (default: ae6f530)')
    p.add_argument('--rounds', type=int, default=None, help='timed rounds (default 10; 2 with --quick)')
    p.add_argument('--batches', type=int, default=None, help='steps per epoch (default 20; 6 with --quick)')
    p.add_argument('--quick', action='store_true', help='a smoke run: 2 rounds of 6 steps')
    p.add_argument('--only', nargs='+', default=None, help="keep configurations whose 'model opt configuration' contains any of these words (case-insensitive), e.g. LARC MADLR")
    p.add_argument('--threads', type=int, default=1, help="torch threads (default 1: with more, any other process on the "
                   "machine stalls every step: OpenMP threads wait for each other; 0: torch's default, one per core)")
    p.add_argument('--json', default=None)
    a = p.parse_args()
    main(a.rounds or (2 if a.quick else 10), a.batches or (6 if a.quick else 20), a.json, old=a.old, only=a.only, threads=a.threads)
