"""Shared by the test files.

Under pytest-xdist (`pytest -n 2 tests`) the workers share the cores: each gets its share of torch threads instead of one
thread per core each (oversubscribed, torch's threads spin and a test can take several times longer). Set before any
test module imports torch, and inherited by the processes the tests start; an `OMP_NUM_THREADS` already set is kept.
"""
import contextlib, fcntl, hashlib, os, tempfile
from pathlib import Path
import pytest

_workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _workers > 1: os.environ.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1)//_workers)))

ROOT = Path(__file__).resolve().parents[1]

@contextlib.contextmanager
def _docs_build_lock():
    "Held while `tools/docs.py` writes into this checkout (_proc/, _docs_src/, nbs/_quarto.yml): one such build at a time, whichever process runs it"
    lock = Path(tempfile.gettempdir())/f"fastai_llr-docs-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:12]}.lock"
    with open(lock, 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try: yield
        finally: fcntl.flock(f, fcntl.LOCK_UN)

@pytest.fixture(scope='session')
def docs_build_lock():
    "A context manager for tests that run `tools/docs.py` (the site build, the README check): xdist workers take turns"
    return _docs_build_lock
