"Command line shared by the benchmark scripts"
import argparse

def run_cli(main, rounds=15, batches=30):
    "Parse `--rounds`, `--batches`, `--json` and call `main(rounds, batches, json)`"
    p = argparse.ArgumentParser()
    p.add_argument('--rounds', type=int, default=rounds); p.add_argument('--batches', type=int, default=batches)
    p.add_argument('--json', default=None)
    a = p.parse_args()
    return main(a.rounds, a.batches, a.json)


def mechanism_time(learn, pols, n=200, blocks=10, pct=.5):
    """Host time (µs per step, median over `blocks`) of the layer-rate mechanism alone: `StepPipeline`, `learn.layer_rates.pipe` with an
    optimizer step that does nothing, on one batch's gradients. `pols` are fresh policies; `learn` has trained before."""
    import statistics, time
    from fastai.basics import CrossEntropyLossFlat
    learn.add_cbs(pols)
    try:
        xb,yb = learn.dls.one_batch(); learn.loss_func(learn.model(xb), yb).backward()
        mech = learn.layer_rates
        learn.train_iter,learn.pct_train = 0,pct
        mech.start()
        noop = lambda: None
        def one(): mech.pipe(noop, pct, learn.train_iter); learn.train_iter += 1
        for _ in range(20): one()
        ts = []
        for _ in range(blocks):
            t0 = time.perf_counter()
            for _ in range(n//blocks): one()
            ts.append((time.perf_counter()-t0)/(n//blocks))
        mech.finish()
        return 1e6*statistics.median(ts)
    finally:
        learn.remove_cbs(pols); learn.opt.zero_grad()
