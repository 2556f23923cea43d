"""Generate README.md from nbs/index.ipynb without Quarto.

Markdown cells are copied; code cells are shown as ```python blocks with nbdev directives (`#| ...`) removed;
cells flagged `#| hide` are dropped; text outputs are shown as plain blocks, images as files under `nbs/index_files/`.
Usage: python tools/build_readme.py [--check]   (--check: exit 1 if README.md is out of date)
"""
import base64, re, sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parents[1]

def _directives(src):
    return {l[3:].strip().split(':')[0].split()[0] for l in src.splitlines() if l.startswith('#|') and l[3:].strip()}

def render(nb_path=ROOT/'nbs'/'index.ipynb', write_images=True):
    nb, parts, n_img = nbformat.read(nb_path, as_version=4), [], 0
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == 'markdown': parts.append(src.strip()); continue
        if cell.cell_type != 'code' or 'hide' in _directives(src): continue
        code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
        if code: parts.append(f"```python\n{code}\n```")
        for out in cell.get('outputs', []):
            data = out.get('data', {})
            if out.get('output_type') == 'stream': txt = out.get('text', '')
            elif 'image/png' in data:
                n_img += 1
                rel = f"nbs/index_files/figure-{n_img}.png"
                if write_images:
                    (ROOT/rel).parent.mkdir(exist_ok=True)
                    (ROOT/rel).write_bytes(base64.b64decode(data['image/png']))
                parts.append(f"![]({rel})"); continue
            elif 'text/html' in data:
                html = re.sub(r'<style.*?</style>', '', data['text/html'], flags=re.S).strip()
                if html: parts.append(html)
                continue
            elif 'text/markdown' in data: parts.append(data['text/markdown'].strip()); continue
            elif 'text/plain' in data: txt = data['text/plain']
            else: continue
            txt = re.sub(r'\x1b\[[0-9;]*m', '', txt).rstrip()
            if txt: parts.append(f"```\n{txt}\n```")
    head = "<!-- Generated from nbs/index.ipynb by tools/build_readme.py: edit the notebook, not this file. -->\n\n"
    return head + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    check = '--check' in sys.argv
    txt = render(write_images=not check)
    readme = ROOT/'README.md'
    if check:
        ok = readme.exists() and readme.read_text() == txt
        print('README.md is up to date' if ok else 'README.md is out of date: run python tools/build_readme.py')
        sys.exit(0 if ok else 1)
    readme.write_text(txt); print(f'wrote {readme}')
