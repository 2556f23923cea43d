"""A core a newcomer can hold in one sitting (issue #22): `LayerRates` (the fastai lifecycle) at most 80 lines, every class
of the package at most 120, every policy class (a `LayerRatePolicy` subclass) at most 60, docments included. Lines are
counted from the `class` line to the last line of its body, in the generated modules."""
import ast, inspect
from pathlib import Path
import fastai_llr.all  # every module, so that every policy class is a subclass of `LayerRatePolicy` below
from fastai_llr.core import LayerRatePolicy, LayerRates

PKG = Path(fastai_llr.all.__file__).parent
LIMITS = {'LayerRates': 80}

def _classes():
    "(module, class name, lines) of every class the package defines"
    for f in sorted(PKG.glob('*.py')):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ClassDef): yield f.stem, n.name, n.end_lineno - n.lineno + 1

def _policies():
    "Names of the package's policy classes: subclasses of `LayerRatePolicy` defined in the package"
    todo,res = [LayerRatePolicy],set()
    while todo:
        for s in todo.pop().__subclasses__():
            if s.__module__.startswith('fastai_llr.'): res.add(s.__name__); todo.append(s)
    return res

def _too_long(classes, policies):
    return [(m, c, n) for m,c,n in classes if n > LIMITS.get(c, 60 if c in policies else 120)]

def test_class_sizes():
    pols = _policies()
    assert {'CyclicalLLR', 'LARS', 'LARC', 'MADLR', 'GradClip', 'LayerStats'} <= pols, pols
    assert not _too_long(list(_classes()), pols)

def test_the_check_can_fail():
    "A 233-line `LayerRates` (main@b7462b6) and a 75-line policy are caught"
    assert _too_long([('core', 'LayerRates', 233), ('adaptive', 'MADLR', 75), ('core', 'Record', 84)], {'MADLR'}) == \
        [('core', 'LayerRates', 233), ('adaptive', 'MADLR', 75)]
