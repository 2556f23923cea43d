"`fastai-llr experiment` end to end on a tiny sample laid out like CIFAR-10 (nothing downloaded): the report, resuming, sharding over processes, `--help`."
import importlib.metadata, json, os, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

POLICIES = ['uniform', 'linear 1.5→0.5', 'Smith 3-group', 'reversed 0.5→1.5', 'soft freeze']
NETS = ['plain-4', 'residual-4']
# the smallest grid that exercises everything: 2 networks × 1 schedule × 5 policies × 2 seeds = 20 runs of 1 epoch
SMALL = ['--dataset', 'cifar10', '--epochs', '1', '--seeds', '2', '--depths', '4', '--widths', '8', '--bs', '8', '--lr', '0.01', '--schedules', 'step']

def _cli(*args):
    "The installed `fastai-llr` where its entry point is this package's (`fastai_llr.cli:main`), else the same entry point through Python"
    exe = shutil.which('fastai-llr')
    ep = [e.value for e in importlib.metadata.entry_points(group='console_scripts') if e.name == 'fastai-llr']
    cmd = [exe] if exe and ep == ['fastai_llr.cli:main'] else [sys.executable, '-c', 'import sys; from fastai_llr.cli import main; sys.exit(main())']
    return cmd + list(args)

def _env(**kw):
    "The environment of a child process: one thread per process (two processes share two cores in the sharding test) and `kw`"
    env = {k: v for k,v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    return {**env, 'OMP_NUM_THREADS': '1', **kw}

def _run(*args, timeout=300, **env):
    return subprocess.run(_cli('experiment', *args), capture_output=True, text=True, timeout=timeout, env=_env(**env))

def _lines(f): return [json.loads(l) for l in Path(f).read_text().splitlines() if l.strip()]

@pytest.fixture(scope='module')
def sample(tmp_path_factory):
    "10 classes of 32×32 RGB PNGs, 6 per class for training and 2 for testing, laid out like fastai's CIFAR-10"
    root,rng = tmp_path_factory.mktemp('cifar10'),np.random.default_rng(0)
    for split,n in (('train', 6), ('test', 2)):
        for k in range(10):
            (root/split/f'class{k}').mkdir(parents=True)
            for i in range(n): Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root/split/f'class{k}'/f'{i}.png')
    return root

def _check_outputs(out):
    rep = (out/'report.md').read_text()
    for s in ['## Peak rates', '## Settings', 'ci_low', 'ci_high', 'verdict', 'test_accuracy'] + [f'### {n} · step decay' for n in NETS] + POLICIES:
        assert s in rep, s
    for f in ('paired.png', 'curves.png'):
        assert (out/f).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
        with Image.open(out/f) as im: im.verify()
    for n in NETS:
        recs = _lines(out/n/'step'/'runs.jsonl')
        assert sorted((r['config'], r['seed']) for r in recs) == sorted((c, s) for c in POLICIES for s in (0, 1))  # each run once
        assert all(0 <= r['test_at_best'] <= 1 and 1 <= r['best_epoch'] <= 1 for r in recs)
    assert json.loads((out/'lr.json').read_text()) == {n: {'lr': .01, 'by': '--lr'} for n in NETS}

@pytest.mark.slow  # trains the 20 runs, twice
def test_end_to_end_then_resume(sample, tmp_path):
    out = tmp_path/'out'
    t0 = time.time()
    r = _run(*SMALL, '--data', str(sample), '--out', str(out))
    first = time.time() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Warning' not in r.stderr and 'warn' not in r.stderr.lower(), r.stderr[-3000:]  # no third-party notice
    assert r.stdout.count('10 of 10 runs to train') == 2 and 'wrote' in r.stdout, r.stdout
    _check_outputs(out)
    n = {k: len(_lines(out/k/'step'/'runs.jsonl')) for k in NETS}
    report = (out/'report.md').read_text()
    # the same command again: everything is on disk, so it trains nothing and only writes the report
    t0 = time.time()
    r = _run(*SMALL, '--data', str(sample), '--out', str(out))
    again = time.time() - t0
    assert r.returncode == 0 and 'Warning' not in r.stderr, r.stderr[-3000:]
    assert r.stdout.count('0 of 10 runs to train') == 2 and 'decoding' not in r.stdout, r.stdout  # nor decodes the images again
    assert {k: len(_lines(out/k/'step'/'runs.jsonl')) for k in NETS} == n
    assert report.split('## Settings')[1] == (out/'report.md').read_text().split('## Settings')[1]  # the same tables (only the date may differ)
    assert again < first, (again, first)

@pytest.mark.slow  # trains the 20 runs in two processes
def test_shards_in_two_processes(sample, tmp_path):
    "Two processes with RANK=0/1, WORLD_SIZE=2 (as `accelerate launch` or `torchrun` set them) share the grid; the report comes once all is done"
    out = tmp_path/'out'
    ps = [subprocess.Popen(_cli('experiment', *SMALL, '--data', str(sample), '--out', str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=_env(RANK=str(i), WORLD_SIZE='2', LOCAL_RANK=str(i))) for i in (0, 1)]
    res = [p.communicate(timeout=300) for p in ps]
    for p,(o,e) in zip(ps, res):
        assert p.returncode == 0, e[-3000:]
        assert 'Warning' not in e, e[-3000:]
    assert sum('wrote' in o for o,_ in res) >= 1, res  # whichever finished last wrote the report
    assert all('5 of them in this process' in o for o,_ in res), res  # 10 runs per network: 5 each
    _check_outputs(out)

def test_help_documents_every_option_and_prints_no_warning():
    r = subprocess.run(_cli('experiment', '--help'), capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0 and r.stderr == '', r.stderr
    text = ' '.join(r.stdout.split())
    for opt in ('--dataset {cifar10,mnist1d} cifar10: CIFAR-10', '--data DIR a local copy of CIFAR-10', '--out DIR folder of the runs',
                '--epochs EPOCHS epochs of every run', '--seeds SEEDS runs per policy', '--bs BS training batch size',
                '--depths D [D ...] convolutions on the main path', '--models KIND [KIND ...] which networks',
                '--widths W [W ...] channels of each stage', '--schedules S [S ...] global schedules: step', '--lr LR peak rate',
                '--wd WD weight decay', '--valid-pct P share of each class', '--n-per-class N keep at most N'):
        assert opt in text, (opt, text)  # each option followed by its help text
    assert text.count('(default: ') == 14  # and its default
    assert 'accelerate launch' in text and 'RANK' in text  # the description says how to share the grid between processes
    r = subprocess.run(_cli('--help'), capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0 and r.stderr == '' and 'experiment' in r.stdout

def test_python_m():
    r = subprocess.run([sys.executable, '-m', 'fastai_llr.cli', 'experiment', '--help'], capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 0 and r.stderr == '' and '--n-per-class' in r.stdout  # the entry point of `accelerate launch -m`, `torchrun -m`

def test_bad_arguments_fail_as_usage_errors(sample, tmp_path, capsys):
    "Exit status 2 and a message naming the problem, no traceback (in this process: each `fastai-llr` start imports fastai, ~10 s)"
    from fastai_llr.cli import main
    for args,msg in ((['--depths', '7'], 'argument --depths: must be even'), (['--epochs', '0'], 'argument --epochs: must be > 0'),
                     (['--schedules', 'cosine'], 'invalid choice'), (['--data', str(tmp_path/'nothing')], 'no such folder'),
                     (['--valid-pct', '1.5'], 'between 0 and 1'), (['--dataset', 'mnist1d', '--data', str(sample)], 'MNIST-1D is generated'),
                     (['--data', str(sample), '--out', str(tmp_path/'o'), '--depths', '4', '--lr', '.1'], 'fewer than the 3 stages'),
                     (['--data', str(sample), '--out', str(tmp_path/'o'), '--n-per-class', '2'], 'empty validation')):
        with pytest.raises(SystemExit) as e: main(['experiment', *args])
        assert e.value.code == 2, args
        assert msg in capsys.readouterr().err, (args, msg)
