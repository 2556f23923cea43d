"""`benchmarks/peers.py`'s table on a CUDA device: the same rows (`peers.pairs()`), models (`peers.MODELS`) and interleaved
rounds (one epoch of every configuration of a model per round, in an order shuffled each round), with the data and the
model on the GPU. The ratio is the median training step of ours over the peer's.

A step is timed with two `torch.cuda.Event(enable_timing=True)`: one recorded first in `before_batch`, one last in
`after_batch` (training batches only; the data loader's copy of the batch to the device comes before `before_batch`
and is not timed). The elapsed times are read after each fit, behind one wait on its last event: one host sync per fit,
none per step.

Every step of our configurations runs with `torch.cuda.set_sync_debug_mode('error')` from `before_step` (first) to
`after_step` (last): the region where the package's per-step work runs (every policy acts inside `opt.step`, through
`LayerRates`) together with the optimizer's step. Any host synchronisation there raises; the configuration is reported
(`<row> | ours: host sync inside the step: <error>`) and left out of the later rounds, the others go on, and the
script exits with 1. The mode goes back to 0 (default) last in `after_step`, in every `after_cancel_*` event and
`after_fit`, and in a `finally` around each fit (an exception that is not one of fastai's cancellations skips every
later event, `after_fit` included).

The guard does not cover the whole loop because fastai's own loop syncs every batch, outside the package's code: the
data loader copies each batch to the device with a blocking copy, and the `Recorder`'s `after_batch` accumulates the
smoothed loss through `to_detach(learn.loss.mean())`, which copies the loss to the CPU (`to_detach` defaults to
`cpu=True`); with a progress bar, `ProgressCallback.after_batch` also calls `smooth_loss.item()` (the bar is off here).
The validation pass accumulates its loss the same way, and `LayerRates` checks its record once per epoch.

Only our configurations run guarded: a peer's own syncs are part of what it costs (fastai's `Larc` optimizer takes
`min(lr, local_lr)` of a tensor and passes a tensor as `alpha`, host syncs on every parameter tensor). The peers get the
same callbacks with a mode setter that does nothing, so both sides of a ratio run the same callbacks.

Without CUDA the script says so and exits with 0: the CPU table is `python benchmarks/peers.py`.

Run: python benchmarks/gpu.py [--rounds 10] [--batches 30] [--models convnet xresnet18] [--json out.json]
"""
import argparse, sys

def parse_args(argv=None):
    "The command line (kept free of slow imports, so that `--help` and the no-CUDA exit are quick)"
    p = argparse.ArgumentParser(description="peers.py's table (ours / peer, median step time) on a CUDA device, "
                                            "with a host-sync guard on every step of our configurations")
    p.add_argument('--rounds', type=int, default=10, help="interleaved rounds: one epoch of every configuration of a model each (default: 10)")
    p.add_argument('--batches', type=int, default=30, help="training batches (steps) per epoch (default: 30)")
    p.add_argument('--json', metavar='PATH', default=None, help="also write the results as JSON to PATH")
    p.add_argument('--models', nargs='+', metavar='NAME', default=None,
                   help="only these models of peers.MODELS, e.g. --models convnet xresnet18 '241-tensor MLP' (default: all)")
    return p.parse_args(argv)

NO_CUDA = "No CUDA device is available: nothing to time here (the CPU table is `python benchmarks/peers.py`)."

if __name__ == '__main__':  # before the slow imports below: `--help`, bad options and the no-CUDA exit only need torch
    ARGS = parse_args()
    import torch
    if not torch.cuda.is_available(): print(NO_CUDA); sys.exit(0)

import json, random, statistics
from pathlib import Path
import torch
from fastai.basics import Learner, Callback, CrossEntropyLossFlat, L
import fastai.callback.progress  # `Learner.no_bar`

# ---- the sync guard

class _GuardOn(Callback):
    "First in `before_step`: from here to `after_step`, a host sync raises"
    order = -1000
    def __init__(self, set_mode): self.set_mode = set_mode
    def before_step(self): self.set_mode('error')

class _GuardOff(Callback):
    "Last in `after_step`, and in every event that ends a step, batch, epoch or fit another way: the mode back to 0"
    order = 1000
    def __init__(self, set_mode): self.set_mode = set_mode
    def off(self): self.set_mode(0)
    after_step = after_cancel_step = after_cancel_batch = after_cancel_train = after_cancel_validate = off
    after_cancel_epoch = after_cancel_fit = after_fit = off

def sync_guard(set_mode):
    "The two callbacks that call `set_mode('error')` first in `before_step` and `set_mode(0)` last in `after_step` (and on the way out)"
    return [_GuardOn(set_mode), _GuardOff(set_mode)]

def _no_mode(mode): "The peers' mode setter: their steps run unguarded"

def guarded_fit(learn, cbs, set_mode, lr=.1):
    "One epoch of `learn` with `cbs`, no bar, no logging; `set_mode(0)` whatever happens"
    try:
        with learn.no_bar(), learn.no_logging(): learn.fit(1, lr, cbs=cbs)
    finally: set_mode(0)

# ---- step times from events

class _StepStart(Callback):
    "First in `before_batch`: a training step's start event"
    order = -1000
    def __init__(self, timer): self.timer = timer
    def before_batch(self):
        if self.training: self.timer.start()

class _StepEnd(Callback):
    "Last in `after_batch`: the step's end event"
    order = 1000
    def __init__(self, timer): self.timer = timer
    def after_batch(self): self.timer.end()

class StepTimer:
    "Events around every training step of a fit; `make_event()` gives an event with `record`, `synchronize` and `elapsed_time`"
    def __init__(self, make_event): self.make_event,self.pairs,self.pending = make_event,[],None
    def callbacks(self): return [_StepStart(self), _StepEnd(self)]
    def _record(self): e = self.make_event(); e.record(); return e
    def start(self): self.pending = self._record()
    def end(self):
        if self.pending is None: return  # a validation batch
        self.pairs.append((self.pending, self._record())); self.pending = None
    def ms(self):
        "Milliseconds of every recorded step, read after one wait on the last event"
        if self.pairs: self.pairs[-1][1].synchronize()
        return [s.elapsed_time(e) for s,e in self.pairs]

def cuda_event(): return torch.cuda.Event(enable_timing=True)

# ---- the interleaved rounds

def configs(ps, none):
    "As in `peers.main`: every row's ours and peer; a peer that is `none` (no callback) with our optimizer is the one config 'none'"
    cfgs,peer_keys = {},{}
    for row,(ours,peer) in ps.items():
        cfgs[f'{row} | ours'] = ours
        peer_keys[row] = 'none' if peer[1] is none and peer[0] is ours[0] else f'{row} | peer'
        cfgs.setdefault(peer_keys[row], peer)
    return cfgs,peer_keys

def describe(e):
    "How a failed fit is reported: the sync debug mode's error as a host sync, anything else as a failure"
    msg = ' '.join(str(e).split())
    return f"host sync inside the step: {msg}" if 'synchronizing' in msg else f"failed: {type(e).__name__}: {msg}"

def run_model(cfgs, guarded, data, model_fn, rounds, device, set_mode, make_event, lr=.1):
    """`peers.interleave` on `device`: a warm-up epoch of every config, then `rounds` rounds of one epoch of every config
    in a shuffled order. The configs in `guarded` run under `sync_guard(set_mode)`, the others under `sync_guard(_no_mode)`.
    A config that raises is left out of later rounds. Returns (config -> step ms over all rounds, config -> `describe`d error)"""
    data = data.to(device)
    learners = {k: Learner(data, model_fn().to(device), loss_func=CrossEntropyLossFlat(), opt_func=of) for k,(of,_) in cfgs.items()}
    times,errors = {k: [] for k in cfgs},{}
    def fit(k, timed):
        mode,timer = (set_mode if k in guarded else _no_mode),StepTimer(make_event)
        cbs = L(cfgs[k][1]()) + sync_guard(mode) + (timer.callbacks() if timed else [])
        try: guarded_fit(learners[k], cbs, mode, lr)
        except Exception as e: errors[k] = describe(e); return
        times[k] += timer.ms()
    for k in cfgs: fit(k, False)
    for r in range(rounds):
        order = [k for k in cfgs if k not in errors]; random.Random(r).shuffle(order)
        for k in order: fit(k, True)
    return times,errors

# ---- the table

def model_results(times, errors, peer_keys):
    """row -> dict(ours_ms, peer_ms, ratio) for one model: medians of `times` (config -> step ms; ours is '<row> | ours',
    the peer `peer_keys[row]`) and ours/peer; or dict(error, side) when a side is in `errors` (config -> message)"""
    res = {}
    for row,pk in peer_keys.items():
        ok = f'{row} | ours'
        bad = [(side,k) for side,k in (('ours', ok), ('peer', pk)) if k in errors]
        if bad: res[row] = dict(side=bad[0][0], error=errors[bad[0][1]]); continue
        o,p = statistics.median(times[ok]),statistics.median(times[pk])
        res[row] = dict(ours_ms=o, peer_ms=p, ratio=o/p)
    return res

def _cell(r):
    if r is None: return f"{'-':>16s}"
    if 'ratio' in r: return f"{r['ratio']:16.2f}"
    return f"{r['side'] + (': host sync' if r['error'].startswith('host sync') else ': failed'):>16s}"

def _ms(r): return f"{r['ours_ms']:.2f}/{r['peer_ms']:.2f}" if r and 'ratio' in r else '-'

def format_table(res, cols, targets):
    "`peers.py`'s layout: ratios ours/peer per row (`res`: row -> model -> `model_results` entry) and model, the target, then the medians"
    lines = [f"\n{'ours / peer':28s}" + ''.join(f"{c:>16s}" for c in cols) + f"{'target':>8s}"]
    for row,r in res.items():
        t = f"≤ {targets[row]:.2f}" if row in targets else ''
        lines.append(f"{row:28s}" + ''.join(_cell(r.get(c)) for c in cols) + f"{t:>8s}")
    lines.append("\nmedian ms/step (ours, peer):")
    for row,r in res.items(): lines.append(f"  {row:26s}" + ''.join(f"  {c}: {_ms(r.get(c))}" for c in cols))
    return '\n'.join(lines)

def main(rounds=10, n_batches=30, out=None, models=None):
    "The table on the current CUDA device; returns the exit code: 1 if a configuration synced or failed"
    sys.path.insert(0, str(Path(__file__).parent))
    import peers
    names = [m[0] for m in peers.MODELS]
    if set(models or ()) - set(names):
        print(f"unknown model(s) {sorted(set(models) - set(names))}: choose from {names}", file=sys.stderr); return 2
    cols = [n for n in names if not models or n in models]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"{rounds} interleaved rounds of {n_batches} steps, steps timed with CUDA events")
    ps = peers.pairs()
    cfgs,peer_keys = configs(ps, peers._none)
    guarded,res,failed = {k for k in cfgs if k.endswith(' | ours')},{},False
    for name,model_fn,shape,bs in peers.MODELS:
        if name not in cols: continue
        times,errors = run_model(cfgs, guarded, peers.dls(shape, n_batches, bs), model_fn, rounds,
                                 torch.device('cuda'), torch.cuda.set_sync_debug_mode, cuda_event)
        for k,e in errors.items(): print(f"{k}: {e} [{name}]")
        failed |= bool(errors)
        for row,r in model_results(times, errors, peer_keys).items(): res.setdefault(row, {})[name] = r
    print(format_table(res, cols, peers.TARGETS))
    if out: Path(out).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                                                 rounds=rounds, batches=n_batches, results=res), indent=1))
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main(ARGS.rounds, ARGS.batches, ARGS.json, ARGS.models))
