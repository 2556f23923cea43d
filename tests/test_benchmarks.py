"The peer benchmark's setup (no timings are asserted): models as described and every pair runnable for one step."
import sys
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'benchmarks'))
import peers

def test_models():
    assert len(list(peers.mlp241().parameters())) == 241
    assert peers.xres18()(torch.randn(2, 3, 32, 32)).shape == (2, 10)

def test_pairs_run():
    "Every (ours, peer) configuration trains for a few steps on the MLP, and the table has the rows the docs list"
    ps = peers.pairs()
    assert {'GradClip', 'LARC + fastai SGD', 'LayerStats', 'MADLR'} <= set(ps) and set(ps) <= set(peers.TARGETS)
    cfgs = {f'{r} {i}': c for r,pair in ps.items() for i,c in enumerate(pair)}
    med,_ = peers.interleave(cfgs, peers.dls((32,), 2), peers.mlp241, 1, 'batch', .1)
    assert set(med) == set(cfgs) and all(v > 0 for v in med.values())
