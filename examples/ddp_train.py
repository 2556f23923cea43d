"""Train with every fastai_llr policy under DistributedDataParallel, then save what each rank saw.

Launch (two CPU processes, gloo backend):

    torchrun --nproc_per_node 2 examples/ddp_train.py OUT_DIR

On GPUs the same script runs with NCCL.
Each rank writes `OUT_DIR/rank{r}.pt` with its final weights, its per-step layer rates,
LARC's and MADLR's factors, GradClip's norms, its LayerStats table and the targets it trained on.
"""
import sys, torch
from pathlib import Path
from fastai.basics import *
from fastai.distributed import *
from fastai_llr.all import *

class SeenTargets(Callback):
    "Record the targets of every training batch (to show that ranks trained on different data)"
    def before_fit(self): self.ys = []
    def before_batch(self):
        if self.training: self.ys.append(self.yb[0].detach().cpu())

def main(out, epochs=2):
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    cpu = not torch.cuda.is_available()
    if cpu: gloo_cpu_ddp()  # fastai's DistributedDL broadcasts on CUDA only
    set_seed(0)  # same initial weights on every rank
    dls = mnist1d_dls(bs=64, n_samples=2000)  # batches follow the model to each rank's device
    pols = dict(cyc=CyclicalLLR.depth_linear(3), larc=LARC(), mad=MADLR(), clip=GradClip(1.), stats=LayerStats())
    seen = SeenTargets()
    learn = Learner(dls, cnn1d(seed=0), loss_func=CrossEntropyLossFlat(), opt_func=SGD, cbs=list(pols.values())+[seen], path=out)
    w0 = {k:v.detach().clone() for k,v in learn.model.state_dict().items()}
    with learn.distrib_ctx(sync_bn=False, cpu=cpu):  # SyncBatchNorm needs CUDA; BN statistics stay per rank
        learn.fit_one_cycle(epochs, 3e-2)
    r = rank_distrib()
    w = learn.model.state_dict()
    torch.save(dict(weights={k:v.cpu() for k,v in w.items()}, moved=any(not torch.equal(w[k], w0[k]) for k in w if w[k].is_floating_point()),
                    lrs=torch.tensor(pols['cyc'].lrs),
                    larc=pols['larc'].hist, mad=pols['mad'].hist,
                    clip=pols['clip'].norms,
                    stats=learn.layer_stats, ys=torch.cat(seen.ys), world=num_distrib()), out/f'rank{r}.pt')
    print(f'rank {r} of {num_distrib()}: done, {len(seen.ys)} batches', flush=True)

if __name__ == '__main__': main(sys.argv[1] if len(sys.argv) > 1 else 'ddp_out')
