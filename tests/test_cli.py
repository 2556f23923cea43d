"The console command: `fastai-llr demo` trains, prints a table and saves the plot; bad arguments fail clearly."
import importlib.metadata, subprocess, sys, shutil
from pathlib import Path
import pandas as pd
import pytest

def _cli():
    "The installed `fastai-llr` where its entry point is this package's (`fastai_llr.cli:main`), else the same entry point through Python"
    exe = shutil.which('fastai-llr')
    ep = [e.value for e in importlib.metadata.entry_points(group='console_scripts') if e.name == 'fastai-llr']
    return [exe] if exe and ep == ['fastai_llr.cli:main'] else [sys.executable, '-c', 'import sys; from fastai_llr.cli import main; sys.exit(main())']

@pytest.mark.slow  # trains the demo's two runs
def test_demo(tmp_path):
    r = subprocess.run(_cli() + ['demo', '--epochs', '2', '--out', str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Warning' not in r.stderr, r.stderr[-3000:]  # no third-party notice (torch's `torch.jit.script` deprecation)
    assert 'uniform' in r.stdout and 'CyclicalLLR' in r.stdout and 'accuracy' in r.stdout
    png = tmp_path/'layer_lrs.png'
    assert png.exists() and png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    df = pd.read_csv(tmp_path/'results.csv', index_col=0)
    assert list(df.index) == ['uniform', 'CyclicalLLR']
    assert (df['accuracy'] > 0.3).all()   # 10 classes: both runs learned something in 2 epochs

def test_bad_args(tmp_path):
    r = subprocess.run(_cli() + ['demo', '--epochs', '0', '--out', str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and '--epochs must be at least 1' in r.stderr
    r = subprocess.run(_cli() + ['nosuchcommand'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2

def test_help_documents_every_option_and_prints_no_warning():
    "`--help` of the command and of `demo` explain every option, and nothing reaches stderr (no third-party deprecation notice)"
    r = subprocess.run(_cli() + ['--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == '' and 'demo' in r.stdout
    r = subprocess.run(_cli() + ['demo', '--help'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    opts = ' '.join(r.stdout.split())
    for opt,words in (('--epochs EPOCHS', 'epochs of each'), ('--lr LR', 'peak rate'), ('--out OUT', 'folder for the plot'),
                      ('--seed SEED', 'seed of the data split'), ('--bs BS', 'batch size')):
        assert f'{opt} {words}' in opts, (opt, opts)
