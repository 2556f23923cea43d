"Two processes (gloo on CPU, or NCCL on GPUs) train with every policy under fastai's `distrib_ctx`: identical rates and weights on every rank."
import os, subprocess, sys
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    pytest.importorskip('accelerate', reason="fastai's distrib_ctx needs Hugging Face Accelerate (in the dev extras)")
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(ROOT/'examples'/'ddp_train.py'), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    a,b = [torch.load(tmp_path/f'rank{i}.pt', weights_only=False) for i in (0, 1)]
    assert a['world'] == b['world'] == 2
    # the ranks trained on different batches...
    assert len(a['ys']) == len(b['ys']) and not torch.equal(a['ys'], b['ys'])
    # ...yet applied identical rates and factors (computed on the all-reduced gradients)...
    assert len(a['lrs']) > 0 and a['lrs'].shape[1] == 3
    for k in ('lrs', 'larc', 'mad', 'clip'): assert torch.equal(a[k], b[k]), k
    assert len(a['clip']) == len(a['lrs'])  # one record per optimizer step
    assert a['stats'].equals(b['stats'])
    # ...and ended with identical, finite weights that moved from the start
    assert a['weights'].keys() == b['weights'].keys()
    for k in a['weights']:
        assert torch.equal(a['weights'][k], b['weights'][k]), k
        assert torch.isfinite(a['weights'][k].float()).all(), k
    assert a['moved'] and b['moved']
