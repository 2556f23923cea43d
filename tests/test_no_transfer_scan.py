"""The package's source has one host->device transfer, `core.to_device`, and it is called once per set of tensors, never per step.

On CUDA, `torch.tensor(host_values, device=cuda)` and `.to(cuda)` from pageable memory synchronise the host with the device.
This test reads the package source (AST) and fails on any `torch.tensor(..., device=...)`, `tensor(..., device=...)`,
`.to(...)`, `.cuda()` or `.pin_memory()` outside the places listed in `ALLOWED` (by qualified name, `Class.method`), each with the reason it is off the batch path.
"""
import ast, pathlib
import fastai_llr

PKG = pathlib.Path(fastai_llr.__file__).parent
ALLOWED = {  # (module, function) -> why it is not on the per-batch path
    ('core', 'to_device'): 'the one transfer helper: pinned and non-blocking; called from setup_meta and cache builders only',
    ('integration', '_broadcast_any_backend'): 'DataLoader index broadcast, once per epoch (DDP)',
    ('schedules', 'get_snapshot_preds'): 'evaluation, not training',
    ('compare', '_KeepBest.after_epoch'): 'device->host copy of the weights, at most once per epoch (the best epoch so far)',
    ('experiment', 'TensorLoader.to'): "moves a loader's dataset, once",
    ('experiment', 'TensorLoader.__init__'): 'calls `TensorLoader.to`, once',
    ('experiment', 'experiment_dls'): 'moves the arrays and the split indices once, when the loaders are built',
    ('experiment', '_prepare'): 'moves the dataset to the device once per command',
}

def _offending(tree, mod):
    hits = []
    class V(ast.NodeVisitor):
        def __init__(self): self.fn = []
        def visit_FunctionDef(self, n): self.fn.append(n.name); self.generic_visit(n); self.fn.pop()
        visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef
        def visit_Call(self, n):
            f,bad = n.func,None
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name == 'tensor' and any(k.arg == 'device' for k in n.keywords): bad = 'tensor(..., device=)'
            if isinstance(f, ast.Attribute) and name in ('to', 'cuda', 'pin_memory'): bad = f'.{name}()'
            if bad and not any((mod, '.'.join(self.fn[:i+1])) in ALLOWED for i in range(len(self.fn))): hits.append(f'{mod}.py:{n.lineno} in {".".join(self.fn) or "<module>"}: {bad}')
            self.generic_visit(n)
    V().visit(tree)
    return hits

def test_scanner_catches_a_transfer():
    "The scan is real: a transfer in a policy method is reported"
    src = "class P:\n    def observe(self, st):\n        q = torch.tensor([.5], device=st.meta.device)\n        return q.to(st.meta.device)\n"
    assert len(_offending(ast.parse(src), 'stats')) == 2
    src = "class TensorLoader:\n    def __iter__(self): return self.x.to('cuda')\n    def to(self, d): return self.x.to(d)\n"
    assert _offending(ast.parse(src), 'experiment') == ['experiment.py:2 in TensorLoader.__iter__: .to()']  # allowed by qualified name only

def test_no_transfer_outside_the_helper():
    hits = []
    for f in sorted(PKG.glob('*.py')):
        if f.name.startswith('_'): continue
        hits += _offending(ast.parse(f.read_text()), f.stem)
    assert not hits, 'host->device transfers outside `to_device`:\n' + '\n'.join(hits)
