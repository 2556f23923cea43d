"""The package's structure, read from the source with `ast` (nothing is imported):

- no import cycle among the modules of `fastai_llr/` (every `from .x import`, `from fastai_llr.x import`, `import fastai_llr.x`,
  wherever it is in the file), and no import of a package module inside a function (a lazy import hides a cycle);
- `fastai_llr.cli` is a leaf: no package module imports it;
- no `_private` name crosses a module boundary, in the package, tests/, benchmarks/ or examples/: no `from .m import _name`
  (or `from fastai_llr.m import _name`), no `m._name` on another package module, and no `Name._member` or `obj._member`
  of a private member that a package class defines, outside the module that defines it (`self`/`cls` in subclasses excepted).

Each failure lists every violation as `file:line: what`, so that the list is the to-do list. `test_checks_catch_violations`
runs every check on a small tree made for it, with one violation of each kind.
"""
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = 'fastai_llr'
OUTSIDE = ('tests', 'benchmarks', 'examples')  # folders that use the package from outside

def _private(n:str)->bool: return n.startswith('_') and not (n.startswith('__') and n.endswith('__'))

class Source:
    "The Python files of a checkout at `root`: the package's modules, and the files of tests/, benchmarks/, examples/"
    def __init__(self, root=ROOT):
        self.root = Path(root)
        self.mods = {(PKG if p.stem == '__init__' else p.stem): p for p in sorted((self.root/PKG).glob('*.py'))}
        self.files = list((p, m) for m,p in self.mods.items())  # `(path, module name or None outside the package)`
        for d in OUTSIDE: self.files += [(p, None) for p in sorted((self.root/d).rglob('*.py'))]
        self._trees = {}
    def tree(self, p):
        if p not in self._trees: self._trees[p] = ast.parse(p.read_text(), filename=str(p))
        return self._trees[p]
    def rel(self, p): return p.relative_to(self.root).as_posix()

    def target(self, node, own):
        """For an import statement, `[(package module or None, alias)]`: the package module each alias imports or imports from.
        `own` is the module of the file (None outside the package: relative imports there are not the package's)"""
        res = []
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split('.')
                if parts[0] == PKG: res.append((parts[1] if len(parts) > 1 and parts[1] in self.mods else PKG, a))
            return res
        if node.level > 0:
            if own is None: return res
            base = node.module
        elif node.module == PKG or (node.module or '').startswith(PKG + '.'): base = node.module[len(PKG)+1:] or None
        else: return res
        for a in node.names:
            if base is None: res.append((a.name if a.name in self.mods else PKG, a))  # `from . import core` / `from fastai_llr import core`
            else: res.append((base if base in self.mods else None, a))
        return res

    def imports(self, p, own):
        "`[(line, imported package module, alias, inside a function?)]` of a file's imports of package modules"
        res = []
        def walk(node, in_fn):
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, (ast.Import, ast.ImportFrom)):
                    res.extend((ch.lineno, m, a, in_fn) for m,a in self.target(ch, own) if m is not None)
                walk(ch, in_fn or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
        walk(self.tree(p), False)
        return res

    def graph(self)->dict:
        "{module: {imported module: first line}} among the package's modules"
        g = defaultdict(dict)
        for m,p in self.mods.items():
            g[m]
            for line,t,_,_ in self.imports(p, m):
                if t != m: g[m].setdefault(t, line)
        return g

    def module_names(self, p, own)->dict:
        "{local name: package module} of the names a file binds to package modules (`import fastai_llr.x as x`, `from . import x`, ...)"
        res = {}
        for node in ast.walk(self.tree(p)):
            if isinstance(node, ast.Import):
                for m,a in self.target(node, own): res[a.asname or PKG] = m if a.asname else PKG  # `import fastai_llr.x` binds `fastai_llr`
            elif isinstance(node, ast.ImportFrom):
                for m,a in self.target(node, own):
                    if (node.module is None or node.module == PKG) and a.name in self.mods: res[a.asname or a.name] = a.name
        return res

    def resolve_module(self, node, names):
        "The package module an expression names (`core`, `fastai_llr.core`, `fastai_llr`), or None"
        if isinstance(node, ast.Name): return names.get(node.id)
        if isinstance(node, ast.Attribute) and self.resolve_module(node.value, names) == PKG and node.attr in self.mods: return node.attr
        return None

    def private_members(self)->dict:
        "{private member name: {modules}} of what the package's classes define: methods, class attributes, `self._x = ...`"
        res = defaultdict(set)
        for m,p in self.mods.items():
            for cls in (n for n in ast.walk(self.tree(p)) if isinstance(n, ast.ClassDef)):
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

def _sorted(bad): return [f"{f}:{line}: {what}" for f,line,what in sorted(set(bad))]

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

def import_cycles(src)->list:
    g,res = src.graph(),[]
    for cyc in _cycles(g):
        where = '; '.join(f"{src.rel(src.mods[a])}:{g[a][b]} imports {b}" for a,b in zip(cyc, cyc[1:] + cyc[:1]))
        res.append(f"cycle {' → '.join(cyc + [cyc[0]])} ({where})")
    return res

def lazy_imports(src)->list:
    return _sorted((src.rel(p), line, f"imports fastai_llr.{t} inside a function") for m,p in src.mods.items()
                   for line,t,_,in_fn in src.imports(p, m) if in_fn)

def cli_importers(src)->list:
    return _sorted((src.rel(src.mods[m]), line, 'imports cli') for m,ts in src.graph().items() for t,line in ts.items() if t == 'cli')

def private_imports(src)->list:
    return _sorted((src.rel(p), line, f"from fastai_llr.{m} import {a.name}") for p,own in src.files
                   for line,m,a,_ in src.imports(p, own) if _private(a.name) and a.name not in src.mods and m != own)

def private_module_attributes(src)->list:
    bad = []
    for p,own in src.files:
        names = src.module_names(p, own)
        for node in ast.walk(src.tree(p)):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                m = src.resolve_module(node.value, names)
                if m is not None and m != own: bad.append((src.rel(p), node.lineno, f"fastai_llr.{m}.{node.attr}"))
    return _sorted(bad)

def private_members_used_outside(src)->list:
    members,bad = src.private_members(),[]
    for p,own in src.files:
        tree = src.tree(p)
        foreign = {a.asname or a.name.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                   if a.name.split('.')[0] != PKG}  # `torch`, `np`, `docs`, ...: not the package's
        names = src.module_names(p, own)
        local = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        local |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in members): continue
            if own in members[node.attr] or (own is None and node.attr in local): continue  # its own module's, or the file defines it too
            v = node.value
            if isinstance(v, ast.Name) and (v.id in ('self', 'cls') or v.id in foreign): continue
            if src.resolve_module(v, names) is not None: continue  # a module attribute: `private_module_attributes`
            owners = ', '.join(f'fastai_llr.{m}' for m in sorted(members[node.attr]))
            bad.append((src.rel(p), node.lineno, f"{ast.unparse(node)} (a private member defined in {owners})"))
    return _sorted(bad)

def test_no_import_cycle():
    bad = import_cycles(Source())
    assert not bad, 'import cycles among the package modules:\n' + '\n'.join(bad)

def test_no_lazy_package_import():
    "A package module imports the package's modules at the top, never inside a function (where an import hides a cycle)"
    bad = lazy_imports(Source())
    assert not bad, 'lazy imports of package modules:\n' + '\n'.join(bad)

def test_cli_is_a_leaf():
    "Only the console entry point imports what it needs; nothing in the package imports `fastai_llr.cli`"
    src = Source()
    assert 'cli' in src.mods, 'fastai_llr/cli.py is missing'
    bad = cli_importers(src)
    assert not bad, 'the console entry point must be a leaf:\n' + '\n'.join(bad)

def test_no_private_import():
    "`from .m import _name` / `from fastai_llr.m import _name`: a private name taken from another module"
    bad = private_imports(Source())
    assert not bad, 'private names imported from another module (make them public and documented, or move them):\n' + '\n'.join(bad)

def test_no_private_module_attribute():
    "`m._name` where `m` is another package module"
    bad = private_module_attributes(Source())
    assert not bad, "private names of another module read as module attributes:\n" + '\n'.join(bad)

def test_no_private_member_of_another_module():
    "`LayerRates._step`, `mech._start()`, `rec._host`: a private member of a package class used outside the module that defines it"
    bad = private_members_used_outside(Source())
    assert not bad, "private members of package classes used outside their module (make them public and documented):\n" + '\n'.join(bad)

def test_checks_catch_violations(tmp_path):
    "Every check on a tree made for it, with one violation of each kind (and code that each check must leave alone)"
    files = {
        'fastai_llr/__init__.py': "__version__ = '0'\n",
        'fastai_llr/a.py': "from .b import f\nfrom .b import _g\nfrom . import cli\nimport fastai_llr.b as bb\nx = bb._g\n",
        'fastai_llr/b.py': "import torch\ndef f():\n    from .a import x\n    return torch._foreach_norm\ndef _g(): pass\n"
                           "class K:\n    def _step(self): self._n = 1\n    def step(self): return self._step()\n",
        'fastai_llr/c.py': "from fastai_llr.b import K\nclass S(K):\n    def go(self): return self._step()\n",  # a subclass uses its base's member
        'fastai_llr/cli.py': "from .a import x\n",
        'tests/t.py': "from fastai_llr.b import K, f\nk = K()\nk._step(); K._n\nimport os\nos._exit\n",
    }
    for f,s in files.items(): (tmp_path/f).parent.mkdir(parents=True, exist_ok=True); (tmp_path/f).write_text(s)
    src = Source(tmp_path)
    assert import_cycles(src) == ['cycle a → b → a (fastai_llr/a.py:1 imports b; fastai_llr/b.py:3 imports a)',
                                  'cycle a → cli → a (fastai_llr/a.py:3 imports cli; fastai_llr/cli.py:1 imports a)']
    assert lazy_imports(src) == ['fastai_llr/b.py:3: imports fastai_llr.a inside a function']
    assert cli_importers(src) == ['fastai_llr/a.py:3: imports cli']
    assert private_imports(src) == ['fastai_llr/a.py:2: from fastai_llr.b import _g']
    assert private_module_attributes(src) == ['fastai_llr/a.py:5: fastai_llr.b._g']
    assert private_members_used_outside(src) == ['tests/t.py:3: K._n (a private member defined in fastai_llr.b)',
                                                 'tests/t.py:3: k._step (a private member defined in fastai_llr.b)']
