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

def test_limits_run():
    "The pass-cost section prices every row of `PASSES`, whose rows are rows of the table, with positive costs"
    assert set(peers.PASSES) <= set(peers.pairs())
    res = peers.limits({'MADLR': 10.}, model_fn=peers.mlp241, shape=(32,), bs=64, n=4)
    assert set(res) == set(peers.PASSES)
    for r in res.values():
        assert r['ms'] > 0 and r['norm_ms'] > 0 and r['pass_ms'] > 0
        assert r['priced_ms'] >= r['least_ms'] - 1e-9  # the least never costs more than what runs now
    assert res['MADLR']['ratio_at_least'] > 1 and res['GradClip']['ratio_at_least'] is None
