"`tools/docs.py`'s notebook-to-Markdown step: Quarto cell options, callouts, outputs, links, API entries from the live code."
import base64, importlib.util, re, sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('docs_tool', ROOT/'tools'/'docs.py')
docs = importlib.util.module_from_spec(spec); spec.loader.exec_module(docs)

PNG = base64.b64encode(bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010806000000'
                                     '1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082')).decode()

def _nb():
    v4 = nbformat.v4
    return v4.new_notebook(cells=[
        v4.new_raw_cell('---\ntitle: A page\ndescription: What it is about\noutput-file: page.html\n---'),
        v4.new_markdown_cell('Intro with a [link](https://host.example/lib/core.html#thing).\n\n::: {.callout-warning}\n## Careful\nThis is a callout.\n:::'),
        v4.new_code_cell('#| hide\nsecret = 1'),
        v4.new_code_cell('#| cuda\ngpu_only_check()'),
        v4.new_code_cell('#| slow\ntest_eq(long_run(), 1)'),
        v4.new_code_cell('#| echo: false\n#| output: asis\nshow_doc(f)', outputs=[v4.new_output('execute_result', {'text/markdown': '### f\n\n*stale docs of f*', 'text/plain': 'x'})]),
        v4.new_code_cell('show_doc(f)', outputs=[v4.new_output('execute_result', {'text/markdown': '### f\n\n*stale*', 'text/plain': 'x'})]),
        v4.new_code_cell('x = 1\nprint(x)', outputs=[v4.new_output('stream', name='stdout', text='1\n'),
                                                     v4.new_output('stream', name='stderr', text='/venv/site-packages/torch/jit.py:1: FutureWarning: old\n')]),
        v4.new_code_cell('#| slow\nplot()', outputs=[v4.new_output('display_data', {'image/png': PNG, 'text/plain': '<Figure>'})]),
        v4.new_code_cell('df', outputs=[v4.new_output('execute_result', {'text/html': '<style>.x{}</style><table class="dataframe"><tr><td>1.847850e-02</td><td>0.001000</td><td>7</td><td>a</td></tr></table>', 'text/plain': 'df'})]),
        v4.new_markdown_cell('## Tests'), v4.new_code_cell('#| hide\ntest_eq(1, 1)'),
        v4.new_markdown_cell('## Kept\n\nText.'),
    ])

def test_nb_to_md(tmp_path):
    link = lambda s: s.replace('https://host.example/lib/', '')
    calls = []
    def render(name, level=None): calls.append(name); return f'### {name} {{#{name} .api-name}}\n\nlive docs of {name}'
    md = docs.nb_to_md(_nb(), tmp_path/'page_files', 'page_files', link, render_doc=render)
    assert md.startswith('# A page\n\n> What it is about')
    assert '[link](core.html#thing)' in md                                   # API links point into the site
    assert '!!! warning "Careful"\n    This is a callout.' in md               # Quarto callout -> admonition
    assert 'secret' not in md and 'gpu_only_check' not in md and 'long_run' not in md  # hidden, cuda and test-only slow cells
    assert calls == ['f'] and md.count('live docs of f') == 1 and 'stale' not in md  # show_doc from the live code, once
    assert '```python\nx = 1\nprint(x)\n```' in md and '```text\n1\n```' in md  # code and its stdout
    assert 'FutureWarning' not in md and 'site-packages' not in md              # stderr is not documentation
    assert '#|' not in md                                                      # no directive is left
    assert '![](page_files/figure-1.png)' in md and (tmp_path/'page_files'/'figure-1.png').read_bytes()[:4] == b'\x89PNG'
    assert '<td>0.01848</td><td>0.001</td><td>7</td><td>a</td>' in md and '<style>' not in md  # one number format
    assert '## Tests' not in md and '## Kept' in md                            # the section hidden tests left empty is gone
    assert docs.page_problems(md) == []
    assert docs.page_problems('# T\n\n## Empty\n\n## Next\n\ntext\n') == ["empty section '## Empty'"]
    assert docs.page_problems('# T\n\n```text\n/home/u/venv/lib/site-packages/x.py:1: UserWarning: w\n```\n')  # stderr that got through

def test_api_entry():
    "An API entry in fastai's form, from the code as it is now: class signature, docstring, parameter table, source line"
    r = docs.APIRenderer('https://github.com/o/r')
    md = r('LARC')
    assert md.startswith('### LARC {#larc .api-name}')
    assert re.search(r'```python\nclass LARC\(trust_coeff=0\.02, eps=1e-08, sgd_below=None, \*\*kwargs\)\n```', md)
    assert '| `trust_coeff` | <code>float</code> | <code>0.02</code> |' in md and '| `**kwargs` |' in md
    ls = r('LayerStats')  # a `|` in a type neither splits the table's row nor shows a backslash on the page
    assert '| `path` | <code>str &#124; Path</code> | <code>None</code> |' in ls and '\\|' not in ls
    src = re.search(r'href="https://github.com/o/r/blob/main/(fastai_llr/adaptive\.py)#L(\d+)"', md)
    assert (ROOT/src.group(1)).read_text().splitlines()[int(src.group(2))-1].startswith('class LARC')
    fit = r('Learner.fit_clr')
    assert 'Learner.fit_clr(' in fit and 'self' not in fit.split('```')[1]       # a patched method, `self` left out
    assert re.search(r'def fit_clr', (ROOT/'fastai_llr/schedules.py').read_text().splitlines()[int(re.search(r'#L(\d+)', fit).group(1))-1])
    assert 'NoneType' not in r('CyclicalLLR') and 'after_fit' not in r('LayerRates')  # no inferred NoneType, no event arguments
    assert '[`Learner`](https://docs.fast.ai/learner.html#learner)' in r.link('`Learner`')  # fastai's names link to docs.fast.ai
    assert '(https://docs.fast.ai/callback.schedule.html#learner.fit_one_cycle)' in r.link('use `fit_one_cycle` here')  # bare method names
    assert 'docs.pytorch.org' in r.link('`torch.optim.SGD`') and r.link('```\n`torch.optim.SGD`\n```') == '```\n`torch.optim.SGD`\n```'
    assert r._default(is_1d := r.obj('is_1d')) == 'is_1d' and r._default(print) == 'print' and r._default(.5) == '0.5'  # no memory addresses
    assert docs.page_problems('# T\n\n```text\n<function f at 0x7f09f8e26ca0>\n```\n') == ['a memory address (changes on every build)']
    assert r.problems == []

def test_readme_links_are_absolute():
    "README.md is read on GitHub and PyPI alone: images and page links are absolute URLs"
    txt = (ROOT/'README.md').read_text()
    assert not re.search(r'\]\((?!https?://|#)[^)]*\)', txt), re.findall(r'\]\((?!https?://|#)[^)]*\)', txt)[:5]
    assert 'https://raw.githubusercontent.com/fastai-llr/fastai_llr/main/nbs/index_files/figure-1.png' in txt
    assert 'pip install fastai_llr' in txt and 'git clone https://github.com/fastai-llr/fastai_llr' in txt
    assert 'pip install -e ".[dev]"' in txt and 'export OMP_NUM_THREADS=1' in txt
    assert 'nbdev-test && pytest -n 2 -m "not slow" tests' in txt and 'nbdev-test && pytest -n 2 tests' in txt  # the quick and the full test commands
    ci = (ROOT/'.ci'/'run').read_text()  # CI runs the full one
    assert 'export OMP_NUM_THREADS=1' in ci and '\nnbdev-test\n' in ci and 'pytest -n 2 tests ||' in ci

def test_mkdocs_warnings_are_caught(tmp_path):
    "MkDocs runs in-process: a broken link or anchor comes back as a warning, so the build fails on it"
    (tmp_path/'docs').mkdir()
    (tmp_path/'docs'/'index.md').write_text('# Home\n\n[gone](missing.md) and [no anchor](other.md#nowhere)\n')
    (tmp_path/'docs'/'other.md').write_text('# Other\n')
    (tmp_path/'mkdocs.yml').write_text('site_name: t\nuse_directory_urls: false\nsite_dir: site\nnav: [index.md, other.md]\n'
                                       'validation: {unrecognized_links: warn, anchors: warn, omitted_files: warn}\n')
    warns = docs.mkdocs_build(tmp_path/'mkdocs.yml')
    assert any('missing.md' in w for w in warns) and any('nowhere' in w for w in warns), warns
    (tmp_path/'docs'/'index.md').write_text('# Home\n\n[fine](other.md)\n')
    assert docs.mkdocs_build(tmp_path/'mkdocs.yml') == []
