"""The package's structure, read from the source with `ast` (nothing is imported):

- no import cycle among the modules of `fastai_llr/` (every `from .x import`, `from fastai_llr.x import`, `import fastai_llr.x`,
  wherever it is in the file), and no import of a package module inside a function (a lazy import hides a cycle);
- `fastai_llr.cli` is a leaf: no package module imports it;
- no `_private` name crosses a module boundary, in the package, tests/, benchmarks/ or examples/: no `from .m import _name`
  (or `from fastai_llr.m import _name`), no `m._name` on another package module, and no `Name._member` or `obj._member`
  of a private member that a package class defines, outside the module that defines it (`self`/`cls` in subclasses excepted).

Each failure lists every violation as `file:line: what`, so that the list is the to-do list.
"""
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = 'fastai_llr'
OUTSIDE = ('tests', 'benchmarks', 'examples')  # folders that use the package from outside

def _private(n:str)->bool: return n.startswith('_') and not (n.startswith('__') and n.endswith('__'))

def _pkg_modules()->dict:
    "{module name: path} of the package (`__init__` under the package's own name)"
    return {(PKG if p.stem == '__init__' else p.stem): p for p in sorted((ROOT/PKG).glob('*.py'))}

def _files()->list:
    "`(path, module name or None)` of every Python file checked: the package's, then those of tests/, benchmarks/, examples/"
    mods = _pkg_modules()
    res = [(p, m) for m,p in mods.items()]
    for d in OUTSIDE: res += [(p, None) for p in sorted((ROOT/d).rglob('*.py'))]
    return res

def _parse(p): return ast.parse(p.read_text(), filename=str(p))

def _rel(p): return p.relative_to(ROOT).as_posix()

def _target(node, own):
    """For an import statement, `[(package module or None, alias)]`: the package module each alias imports or imports from.
    `own` is the module of the file (None outside the package: relative imports there are not the package's)"""
    mods,res = _pkg_modules(),[]
    if isinstance(node, ast.Import):
        for a in node.names:
            parts = a.name.split('.')
            if parts[0] == PKG: res.append((parts[1] if len(parts) > 1 and parts[1] in mods else PKG, a))
        return res
    if node.level > 0:
        if own is None: return res
        base = node.module
    elif node.module == PKG or (node.module or '').startswith(PKG + '.'): base = node.module[len(PKG)+1:] or None
    else: return res
    for a in node.names:
        if base is None: res.append((a.name if a.name in mods else PKG, a))  # `from . import core` / `from fastai_llr import core`
        else: res.append((base if base in mods else None, a))
    return res

def _imports(tree, own):
    "`[(line, imported package module, alias, inside a function?)]` of a file's imports of package modules"
    res = []
    def walk(node, in_fn):
        for ch in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(ch, (ast.Import, ast.ImportFrom)):
                for m,a in _target(ch, own):
                    if m is None: continue
                    # `from fastai_llr import core` imports the module `core`, `from .core import x` the module `core`
                    res.append((ch.lineno, m, a, in_fn))
            walk(ch, fn)
    walk(tree, False)
    return res

def _graph()->dict:
    "{module: {imported module: first line}} among the package's modules (`__init__` imports nothing of the package's)"
    g = defaultdict(dict)
    for m,p in _pkg_modules().items():
        g[m]
        for line,t,_,_ in _imports(_parse(p), m):
            if t != m: g[m].setdefault(t, line)
    return g

def _cycles(g)->list:
    "Every elementary cycle of `g` once, each as a list of modules starting from its smallest name"
    seen,res = set(),[]
    def dfs(start, node, path, on_path):
        for nxt in sorted(g.get(node, ())):
            if nxt == start:
                cyc = tuple(path)
                i = cyc.index(min(cyc)); key = cyc[i:] + cyc[:i]
                if key not in seen: seen.add(key); res.append(list(key))
            elif nxt not in on_path and nxt > start:  # each cycle found from its smallest module only
                on_path.add(nxt); dfs(start, nxt, path + [nxt], on_path); on_path.discard(nxt)
    for m in sorted(g): dfs(m, m, [m], {m})
    return res

def test_no_import_cycle():
    g,lines = _graph(),[]
    paths = _pkg_modules()
    for cyc in _cycles(g):
        hops = ' → '.join(cyc + [cyc[0]])
        where = '; '.join(f"{_rel(paths[a])}:{g[a][b]} imports {b}" for a,b in zip(cyc, cyc[1:] + cyc[:1]))
        lines.append(f"cycle {hops} ({where})")
    assert not lines, 'import cycles among the package modules:\n' + '\n'.join(lines)

def test_no_lazy_package_import():
    "A package module imports the package's modules at the top, never inside a function (where an import hides a cycle)"
    bad = list(dict.fromkeys(f"{_rel(p)}:{line}: imports fastai_llr.{t} inside a function" for m,p in _pkg_modules().items()
                             for line,t,_,in_fn in _imports(_parse(p), m) if in_fn))
    assert not bad, 'lazy imports of package modules:\n' + '\n'.join(bad)

def test_cli_is_a_leaf():
    "Only the console entry point imports what it needs; nothing in the package imports `fastai_llr.cli`"
    assert 'cli' in _pkg_modules(), 'fastai_llr/cli.py is missing'
    bad = [f"{_rel(_pkg_modules()[m])}:{line}: imports cli" for m,ts in _graph().items() for t,line in ts.items() if t == 'cli']
    assert not bad, 'the console entry point must be a leaf:\n' + '\n'.join(bad)

def _module_names(tree, own)->dict:
    "{local name: package module} of the names a file binds to package modules (`import fastai_llr.x as x`, `from . import x`, ...)"
    mods,res = _pkg_modules(),{}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for m,a in _target(node, own):
                if a.asname: res[a.asname] = m
                else: res[PKG] = PKG  # `import fastai_llr.x` binds `fastai_llr`
        elif isinstance(node, ast.ImportFrom):
            for m,a in _target(node, own):
                full = a.name if (node.module is None or node.module == PKG) and a.name in mods else None
                if full is not None: res[a.asname or a.name] = full
    return res

def _resolve_module(node, names):
    "The package module an expression names (`core`, `fastai_llr.core`, `fastai_llr`), or None"
    if isinstance(node, ast.Name): return names.get(node.id)
    if isinstance(node, ast.Attribute) and _resolve_module(node.value, names) == PKG and node.attr in _pkg_modules(): return node.attr
    return None

def test_no_private_import():
    "`from .m import _name` / `from fastai_llr.m import _name`: a private name taken from another module"
    bad = []
    for p,own in _files():
        for line,m,a,_ in _imports(_parse(p), own):
            if _private(a.name) and a.name not in _pkg_modules() and m != own:
                bad.append(f"{_rel(p)}:{line}: from fastai_llr.{m} import {a.name}")
    assert not bad, 'private names imported from another module (make them public and documented, or move them):\n' + '\n'.join(bad)

def test_no_private_module_attribute():
    "`m._name` where `m` is another package module"
    bad = []
    for p,own in _files():
        tree = _parse(p)
        names = _module_names(tree, own)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                m = _resolve_module(node.value, names)
                if m is not None and m != own: bad.append((_rel(p), node.lineno, f"fastai_llr.{m}.{node.attr}"))
    bad = [f"{f}:{line}: {what}" for f,line,what in sorted(set(bad))]
    assert not bad, "private names of another module read as module attributes:\n" + '\n'.join(bad)

def _private_members()->dict:
    "{private member name: {modules}} of what the package's classes define: methods, class attributes, `self._x = ...`"
    res = defaultdict(set)
    for m,p in _pkg_modules().items():
        for cls in (n for n in ast.walk(_parse(p)) if isinstance(n, ast.ClassDef)):
            for s in cls.body:
                if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)): names = [s.name]
                elif isinstance(s, ast.Assign): names = [e.id for t in s.targets for e in ast.walk(t) if isinstance(e, ast.Name)]
                elif isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name): names = [s.target.id]
                else: names = []
                for n in names:
                    if _private(n): res[n].add(m)
            for n in ast.walk(cls):  # `self._x = ...` in its methods
                if (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)
                    and n.value.id == 'self' and _private(n.attr)): res[n.attr].add(m)
    return res

def _foreign_names(tree, own)->set:
    "Local names a file binds by importing modules that are not the package's (`torch`, `np`, `docs`, ...)"
    res = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split('.')[0] != PKG: res.add(a.asname or a.name.split('.')[0])
    return res

def test_no_private_member_of_another_module():
    "`LayerRates._step`, `mech._start()`, `rec._host`: a private member of a package class used outside the module that defines it"
    members,bad = _private_members(),[]
    for p,own in _files():
        tree = _parse(p)
        foreign,mods = _foreign_names(tree, own),_module_names(tree, own)
        local = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        local |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        local |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in members): continue
            if own in members[node.attr] or (own is None and node.attr in local): continue  # its own module's, or the file defines it too
            v = node.value
            if isinstance(v, ast.Name) and (v.id in ('self', 'cls') or v.id in foreign): continue
            if _resolve_module(v, mods) is not None: continue  # a module attribute: `test_no_private_module_attribute`
            owners = ', '.join(f'fastai_llr.{m}' for m in sorted(members[node.attr]))
            bad.append((_rel(p), node.lineno, f"{ast.unparse(node)} (a private member defined in {owners})"))
    bad = [f"{f}:{line}: {what}" for f,line,what in sorted(set(bad))]
    assert not bad, "private members of package classes used outside their module (make them public and documented):\n" + '\n'.join(bad)
