"`tools/docs.py`'s notebook-to-Markdown step: Quarto cell options, callouts, outputs and links."
import base64, importlib.util, sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('docs_tool', ROOT/'tools'/'docs.py')
docs = importlib.util.module_from_spec(spec); spec.loader.exec_module(docs)

PNG = base64.b64encode(bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010806000000'
                                     '1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082')).decode()

def _nb():
    v4 = nbformat.v4
    nb = v4.new_notebook(cells=[
        v4.new_raw_cell('---\ntitle: A page\ndescription: What it is about\noutput-file: page.html\n---'),
        v4.new_markdown_cell('Intro with a [link](https://host.example/lib/core.html#thing).\n\n::: {.callout-warning}\n## Careful\nThis is a callout.\n:::'),
        v4.new_code_cell('#| hide\nsecret = 1'),
        v4.new_code_cell('#| echo: false\n#| output: asis\nshow_doc(f)', outputs=[v4.new_output('execute_result', {'text/markdown': '### f\n\n*Docs of f*', 'text/plain': 'x'})]),
        v4.new_code_cell('show_doc(Learner.fit)', outputs=[v4.new_output('execute_result', {'text/markdown': '### Learner.fit\n\nfits', 'text/plain': 'x'})]),
        v4.new_code_cell('x = 1\nprint(x)', outputs=[v4.new_output('stream', name='stdout', text='1\n')]),
        v4.new_code_cell('#| slow\nplot()', outputs=[v4.new_output('display_data', {'image/png': PNG, 'text/plain': '<Figure>'})]),
        v4.new_code_cell('df', outputs=[v4.new_output('execute_result', {'text/html': '<style>.x{}</style><table><tr><td>1</td></tr></table>', 'text/plain': 'df'})]),
    ])
    return nb

def test_nb_to_md(tmp_path):
    link = lambda s: s.replace('https://host.example/lib/', '')
    md = docs.nb_to_md(_nb(), tmp_path/'page_files', 'page_files', link)
    assert md.startswith('# A page\n\n> What it is about')
    assert '[link](core.html#thing)' in md                                   # API links point into the site
    assert '!!! warning "Careful"\n    This is a callout.' in md               # Quarto callout -> admonition
    assert 'secret' not in md                                                  # `#| hide`
    assert '### f {#f}\n\n*Docs of f*' in md and 'show_doc(f)' not in md      # `echo: false` + `output: asis`; nbdev's anchor
    assert '```python\nx = 1\nprint(x)\n```' in md and '```text\n1\n```' in md  # code and its stream output
    assert '### Learner.fit {#learner.fit}' in md
    assert '#|' not in md                                                      # no directive is left
    assert '![](page_files/figure-1.png)' in md and (tmp_path/'page_files'/'figure-1.png').read_bytes()[:4] == b'\x89PNG'
    assert '<table><tr><td>1</td></tr></table>' in md and '<style>' not in md
