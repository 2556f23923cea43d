"The notebooks are the source: exporting and cleaning them reproduces the committed package and notebooks, and README.md is generated from nbs/index.ipynb."
import filecmp, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _files(d, pat): return sorted(p.relative_to(d) for p in d.glob(pat))

def test_export_and_clean_leave_tree_unchanged(tmp_path):
    for f in ('pyproject.toml', 'README.md'): shutil.copy(ROOT/f, tmp_path/f)
    shutil.copytree(ROOT/'nbs', tmp_path/'nbs')
    shutil.copytree(ROOT/'fastai_llr', tmp_path/'fastai_llr', ignore=shutil.ignore_patterns('__pycache__'))
    for cmd in ('nbdev-export', 'nbdev-clean'):
        r = subprocess.run([cmd], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    for sub,pat in (('fastai_llr', '*.py'), ('nbs', '*.ipynb')):
        a,b = ROOT/sub,tmp_path/sub
        assert _files(a, pat) == _files(b, pat), f"{cmd} created or removed files in {sub}/"
        changed = [str(f) for f in _files(a, pat) if not filecmp.cmp(a/f, b/f, shallow=False)]
        assert not changed, f"run nbdev-export and nbdev-clean, then commit: {changed} differ"

def test_readme_is_generated_from_index(docs_build_lock):
    with docs_build_lock():  # tools/docs.py writes _proc/ of the checkout, as the site build in test_docs_site does
        r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs.py'), 'readme', '--check'], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
