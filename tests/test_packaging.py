"""Packaging and CI: the sdist and wheel build from the working tree and pass `twine check`; the workflows do what they say.

The build runs on a copy of the files git tracks or would track (`git ls-files --cached --others --exclude-standard`), so
uncommitted changes are tested and ignored build outputs (`_docs/`, `*.egg-info`, ...) stay out. It runs without build
isolation where the installed setuptools is new enough for pyproject.toml (>=77: SPDX `license`), so it needs no network;
otherwise `python -m build` makes its isolated environment as usual.
"""
import configparser, email.parser, importlib.metadata, importlib.util, re, shutil, subprocess, sys, tarfile, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
WF = ROOT/'.github'/'workflows'

def _version():
    return re.search(r'''^__version__\s*=\s*['"]([^'"]+)['"]''', (ROOT/'fastai_llr'/'__init__.py').read_text(), re.M).group(1)

def _setuptools_ok():
    try: v = importlib.metadata.version('setuptools')
    except importlib.metadata.PackageNotFoundError: return False
    return int(re.match(r'\d+', v).group()) >= 77

def _copy_tree(dest):
    "Copy the files git tracks or would track (uncommitted changes included) into `dest`"
    r = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT, capture_output=True)
    if r.returncode: pytest.skip(f'not a git checkout: {r.stderr.decode()[-300:]}')
    for name in filter(None, r.stdout.decode().split('\0')):
        src = ROOT/name
        if not src.is_file(): continue  # deleted in the working tree
        (dest/name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest/name)

@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    for mod in ('build', 'twine'):
        if importlib.util.find_spec(mod) is None: pytest.skip(f'{mod} is not installed (it is in the dev extras: pip install -e ".[dev]")')
    if shutil.which('git') is None: pytest.skip('git is not installed')
    src,out = tmp_path_factory.mktemp('src'), tmp_path_factory.mktemp('dist')
    _copy_tree(src)
    cmd = [sys.executable, '-m', 'build', '--outdir', str(out)] + (['--no-isolation'] if _setuptools_ok() else [])
    r = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    v = _version()
    sdist,wheel = out/f'fastai_llr-{v}.tar.gz', out/f'fastai_llr-{v}-py3-none-any.whl'
    assert sdist.exists() and wheel.exists(), sorted(p.name for p in out.iterdir())
    return dict(src=src, out=out, sdist=sdist, wheel=wheel, version=v)

@pytest.mark.slow  # builds the sdist and wheel
def test_twine_check(dists):
    r = subprocess.run([sys.executable, '-m', 'twine', 'check', '--strict', str(dists['sdist']), str(dists['wheel'])],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count('PASSED') == 2, r.stdout

@pytest.mark.slow  # builds the sdist and wheel
def test_wheel(dists):
    with zipfile.ZipFile(dists['wheel']) as z:
        names = set(z.namelist())
        assert {'fastai_llr/__init__.py', 'fastai_llr/core.py', 'fastai_llr/_modidx.py'} <= names, sorted(names)
        info = f"fastai_llr-{dists['version']}.dist-info"
        ep = configparser.ConfigParser(); ep.read_string(z.read(f'{info}/entry_points.txt').decode())
        meta = email.parser.Parser().parsestr(z.read(f'{info}/METADATA').decode())
    assert ep['console_scripts']['fastai-llr'] == 'fastai_llr.cli:main'
    assert ep['nbdev']['fastai_llr'] == 'fastai_llr._modidx:d'
    assert meta['Name'] == 'fastai_llr' and meta['Version'] == dists['version']
    assert not any(n.startswith(('nbs/', 'tests/', 'tools/')) for n in names)

@pytest.mark.slow  # builds the sdist and wheel
def test_sdist_readme(dists):
    with tarfile.open(dists['sdist']) as t:
        pkg = t.extractfile(f"fastai_llr-{dists['version']}/PKG-INFO").read().decode()
    meta = email.parser.Parser().parsestr(pkg)
    assert meta['Description-Content-Type'].startswith('text/markdown'), meta['Description-Content-Type']
    readme = (dists['src']/'README.md').read_text()
    assert meta.get_payload().strip() == readme.strip()
    assert meta['Version'] == dists['version']

def _on(wf):
    return wf.get('on', wf.get(True))  # YAML 1.1 reads the bare key `on` as True

def _runs(wf):
    return '\n'.join(s.get('run', '') for j in wf['jobs'].values() for s in j.get('steps', []))

def _uses(wf):
    return [s['uses'] for j in wf['jobs'].values() for s in j.get('steps', []) if 'uses' in s]

def test_workflows():
    yaml = pytest.importorskip('yaml')
    test,docs,rel = (yaml.safe_load((WF/f'{n}.yml').read_text()) for n in ('test', 'docs', 'release'))
    assert {'push', 'pull_request'} <= set(_on(test))
    assert 'bash .ci/run' in _runs(test)
    job = test['jobs']['test']
    assert job['timeout-minutes'] == 90 and job['runs-on'] == 'ubuntu-latest' and '3.11' in str(job['container'])
    assert re.search(r'apt-get install .*chromium chromium-driver', _runs(test))

    assert _on(docs)['push']['branches'] == ['main'] and 'workflow_dispatch' in _on(docs)
    assert 'pip install -e ".[dev]" && python tools/docs.py' in _runs(docs)
    uses = [u.split('@')[0] for u in _uses(docs)]
    assert {'actions/configure-pages', 'actions/upload-pages-artifact', 'actions/deploy-pages'} <= set(uses)
    assert docs['permissions']['pages'] == 'write' and docs['permissions']['id-token'] == 'write'
    assert docs['concurrency']['group'] == 'pages'
    art = next(s for j in docs['jobs'].values() for s in j['steps'] if s.get('uses', '').startswith('actions/upload-pages-artifact'))
    assert art['with']['path'] == '_docs'

    assert _on(rel)['push']['tags'] == ['v*']
    assert 'python -m build' in _runs(rel) and 'twine check' in _runs(rel)
    assert 'fastai_llr/__init__.py' in _runs(rel) and 'GITHUB_REF_NAME' in _runs(rel)
    pub = next(j for j in rel['jobs'].values() if any(s.get('uses', '').startswith('pypa/gh-action-pypi-publish') for s in j.get('steps', [])))
    assert pub['permissions']['id-token'] == 'write' and pub['environment']['name'] == 'pypi'
