"""The documentation site, built offline by `python tools/docs.py`, checked in headless Chromium.

The build itself fails on a MkDocs warning (broken link or anchor), an undocumented parameter or an empty section. Here,
in the browser, every page of the navigation (Home, Tutorials, Guides, API reference, References) is opened and checked:
no console error, every image loads and is legible at 1400 px (not scaled below 80 % of its pixels; multi-panel figures
as wide as the text column), no stderr output, no `#|` directive, no hidden or `#| cuda` cell, no empty section, every
`source` link points at the line that defines its name, every API entry with parameters has a parameter table with a
description in each row; search finds `CyclicalLLR`. Screenshots of the home page (desktop and phone width), a guide, an
API page and a tutorial are saved under `tests/artifacts/` (or $DOCS_ARTIFACTS). Chromium and ChromeDriver come from
Debian (`chromium`, `chromium-driver`); the test installs them with apt-get when it can, and skips with the reason when
it cannot.
"""
import functools, http.server, os, re, shutil, subprocess, sys, threading, time
from pathlib import Path
from urllib.parse import urlparse
import nbformat, pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # the site build and a browser: left out of the quick run
CHROMIUM,DRIVER = '/usr/bin/chromium','/usr/bin/chromedriver'
ART = Path(os.environ.get('DOCS_ARTIFACTS', ROOT/'tests'/'artifacts'))
MODULES = ['core', 'cyclical', 'adaptive', 'stats', 'schedules', 'lr_find', 'integration', 'data', 'compare', 'demo', 'experiment', 'cli', 'checks']
API = {'fastai_llr.cyclical.html': ['CyclicalLLR', 'CyclicalLLR.depth_linear'], 'fastai_llr.adaptive.html': ['LARS', 'LARC', 'MADLR'],
       'fastai_llr.stats.html': ['GradClip', 'LayerStats'], 'fastai_llr.schedules.html': ['SchedCLR', 'SchedSGDR', 'SnapshotEnsemble', 'Learner.fit_clr'],
       'fastai_llr.lr_find.html': ['Learner.lr_find_repeated', 'Learner.lr_find_groups'], 'fastai_llr.core.html': ['LayerRatePolicy', 'TensorPolicy', 'FactorPolicy'],
       'fastai_llr.checks.html': ['check_real', 'check_int'], 'fastai_llr.compare.html': ['compare', 'TrainConfig', 'Comparison', 'Comparison.paired', 'paired_ci', 'protocol_configs', 'protocol_schedules', 'load_runs'],
       'fastai_llr.experiment.html': ['run_experiment', 'crop_flip', 'SettingsError'], 'fastai_llr.demo.html': ['run_demo'],
       'fastai_llr.cli.html': ['main', 'add_experiment_args', 'run_from_args'],
       'fastai_llr.data.html': ['split_idxs', 'tensor_dls', 'mnist1d_dls', 'cnn1d', 'norm_stats', 'digits_dls', 'lenet', 'xresnet_small', 'deep_cnn'],
       'cyclical.html': ['CyclicalLLR']}
PARAMS = {'CyclicalLLR': ['start', 'end', 'pct_start', 'pct_end', 'scheds', 'n_groups'], 'LARC': ['trust_coeff', 'sgd_below'],
          'MADLR': ['beta', 'min_mult', 'max_mult'], 'GradClip': ['max_norm', 'mode'], 'LayerStats': ['every'], 'SchedCLR': ['base_lr', 'step_size_up']}
SECTIONS = ['Home', 'Tutorials', 'Guides', 'API reference', 'References']

def _browser(width=1400):
    "Make sure Debian's Chromium and ChromeDriver are there (install them if we are root), or skip"
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        if os.geteuid() != 0 or not shutil.which('apt-get'): pytest.skip('no Chromium: install Debian packages chromium and chromium-driver')
        env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
        install = lambda: subprocess.run(['apt-get', 'install', '-y', '-q', 'chromium', 'chromium-driver'], capture_output=True, text=True, env=env)
        r = install()
        if r.returncode:  # a stale package index: refresh it once
            subprocess.run(['apt-get', 'update', '-q'], capture_output=True, env=env); r = install()
        if r.returncode: pytest.skip(f'could not install Chromium with apt-get: {r.stderr[-500:]}')
    webdriver = pytest.importorskip('selenium.webdriver', reason='selenium is in the dev extras')
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
              '--disable-component-update', '--disable-sync', f'--window-size={width},1000', '--disable-dev-shm-usage', '--hide-scrollbars'):
        opts.add_argument(a)
    if width < 500:  # Chrome's windows are at least 500 px wide: emulate a phone's screen instead
        opts.add_experimental_option('mobileEmulation', {'deviceMetrics': {'width': width, 'height': 844, 'pixelRatio': 2}})
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))

@pytest.fixture(scope='module')
def site(tmp_path_factory, docs_build_lock):
    out = tmp_path_factory.mktemp('site')
    with docs_build_lock():  # the build writes _proc/ and _docs_src/ of the checkout, as the README check in test_nbdev_sync does
        r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs.py'), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('docs: ') and '0 warnings' in lines[0], lines  # one summary line, nothing else
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    handler = functools.partial(Quiet, directory=str(out))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/', out
    srv.shutdown()

@pytest.fixture(scope='module')
def driver():
    d = _browser()
    yield d
    d.quit()

def _errors(driver): return [e for e in driver.get_log('browser') if e['level'] == 'SEVERE']

def _wait(cond, timeout=20):
    t = time.time()
    while time.time() - t < timeout:
        v = cond()
        if v: return v
        time.sleep(.2)
    return cond()

def _hidden_code():
    "{page: [distinctive lines of code of cells marked hide/cuda, or slow test-only cells]}: none may appear on a page"
    sys.path.insert(0, str(ROOT/'tools'))
    import docs
    res = {}
    for nbp in sorted((ROOT/'nbs').glob('*.ipynb')):
        nb = nbformat.read(nbp, as_version=4)
        fm = docs.frontmatter(nb) if nb.cells and nb.cells[0].cell_type == 'raw' else {}
        vis,hid = set(),[]
        for c in nb.cells:
            if c.cell_type != 'code': continue
            d = docs._directives(c.source)
            lines = [l.strip() for l in c.source.splitlines() if not l.startswith('#|')]
            if docs.skip_cell(d, c): hid += [l for l in lines if len(l) >= 40 and not l.startswith(('from ', 'import ', '#'))]
            else: vis |= set(lines)
        stem = nbp.stem.split('_', 1)[1] if nbp.stem[:2].isdigit() else nbp.stem
        res[fm.get('output-file', f'{stem}.html')] = [l for l in hid if not any(l in v for v in vis)]  # lines visible cells also have are fine
    return res

def _section_check(driver):
    "Headings of the article with nothing but headings until the next heading of the same or a higher level"
    return driver.execute_script("""
        const hs = [...document.querySelectorAll('article h2, article h3, article h4')];
        const lvl = h => +h.tagName[1], bad = [];
        for (const h of hs) {
          let n = h.nextElementSibling, content = false;
          while (n && !(/^H[1-6]$/.test(n.tagName) && lvl(n) <= lvl(h))) {
            if (!/^H[1-6]$/.test(n.tagName) && (n.textContent.trim() || n.querySelector('img,table,svg'))) { content = true; break; }
            n = n.nextElementSibling;
          }
          if (!content) bad.push(h.textContent.trim());
        }
        return bad;""")

def _api_entries(driver):
    "[(name, signature text, rows of the parameter table (each [name, type, default, description]))] of the page's API entries"
    return driver.execute_script("""
        return [...document.querySelectorAll('article .api-name')].map(h => {
          let n = h.nextElementSibling, sig = null, rows = null;
          while (n && !/^H[1-6]$/.test(n.tagName)) {
            if (!sig && n.querySelector && n.querySelector('pre code')) sig = n.querySelector('pre code').textContent;
            if (!rows && n.classList && n.classList.contains('api-params'))
              rows = [...n.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(td => td.textContent.trim()));
            n = n.nextElementSibling;
          }
          return [h.id, sig, rows];
        });""")

def test_site(site, driver):
    from selenium.webdriver.common.by import By
    base,out = site
    ART.mkdir(parents=True, exist_ok=True)
    driver.get(base)
    assert 'fastai_llr' in driver.title
    driver.save_screenshot(str(ART/'home.png'))
    tabs = [t.text.strip() for t in driver.find_elements(By.CSS_SELECTOR, '.md-tabs__link')]
    assert tabs == SECTIONS, tabs
    links = [a.get_attribute('href') for a in driver.find_elements(By.CSS_SELECTOR, 'nav.md-nav--primary a.md-nav__link[href]')]
    pages = sorted({urlparse(h)._replace(fragment='').geturl() for h in links if h and h.startswith(base)})
    names = {p.rsplit('/', 1)[-1] or 'index.html' for p in pages}
    want = {'index.html', 'references.html', 'tutorial_layer_rates.html', 'cyclical.html', 'adaptive.html', 'stats.html', 'schedules.html',
            'lr_find.html', 'integration.html', 'data.html', 'compare.html', 'core.html', 'experiment.html', 'cli.html'} | {f'fastai_llr.{m}.html' for m in MODULES}
    assert want <= names, want - names
    assert 'all.html' not in names and 'checks.html' not in names  # no near-empty pages in the navigation
    hidden = _hidden_code()
    n_src = n_entries = 0
    driver.get_log('browser')  # start clean
    for url in pages:
        driver.get(url)
        assert _wait(lambda: driver.execute_script('return document.readyState') == 'complete')
        assert driver.find_elements(By.CSS_SELECTOR, 'article h1'), f'{url}: no title'
        assert 'Error response' not in driver.title, url  # what http.server titles a missing page
        assert not (errs := _errors(driver)), f'{url}: console errors {errs}'
        page = url.rsplit('/', 1)[-1] or 'index.html'
        # images: loaded and legible
        col = driver.execute_script("return document.querySelector('article').clientWidth")
        for src,nw,nh,w in driver.execute_script("return [...document.querySelectorAll('article img')].map(i => [i.src, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])"):
            assert nw > 0, f'{page}: image did not load {src}'
            assert w / nw >= .8, f'{page}: {src} ({nw} px) shown at {w:.0f} px: its text is too small to read'
            if nw / nh > 2: assert nw >= .9 * col, f'{page}: multi-panel figure {src} ({nw} px) narrower than the text column ({col} px)'
        # no stderr, no directive, no hidden cell
        code = driver.execute_script("return [...document.querySelectorAll('article pre')].map(e => e.textContent).join('\\n')")  # one round trip
        assert not re.search(r'\w+Warning: |site-packages/', code), f'{page}: stderr output on the page'
        assert '#|' not in code, f'{page}: a `#|` directive on the page'
        shown = [l for l in hidden.get(page, []) if l in code]
        assert not shown, f'{page}: code of hidden/cuda/test-only cells on the page: {shown[:3]}'
        assert not (empty := _section_check(driver)), f'{page}: empty sections {empty}'
        # API entries: parameter tables and source links
        for name,sig,rows in _api_entries(driver):
            n_entries += 1
            assert sig, f'{page}: API entry {name} without a signature'
            if re.search(r'\(\s*[^)\s]', sig): assert rows, f'{page}: API entry {name} has parameters but no parameter table'
            for r in rows or []: assert len(r) == 4 and r[3], f'{page}: {name}: parameter {r[:1]} without a description'
        heads = set(driver.execute_script("return [...document.querySelectorAll('article .api-name')].map(h => h.id)"))
        for obj in API.get(page, []): assert obj.lower() in heads, f'{page}: no API entry for {obj}'
        if objs := [o for o in PARAMS if o in API.get(page, [])]:
            txt = driver.find_element(By.CSS_SELECTOR, 'article').text  # the rendered text (slow on long pages): where it is checked
            for obj in objs:
                for p in PARAMS[obj]: assert p in txt, f'{page}: parameter {p} of {obj} not shown'
        for href,ddef in driver.execute_script("return [...document.querySelectorAll('article .api-source a')].map(a => [a.href, a.getAttribute('data-def')])"):
            n_src += 1
            m = re.match(r'https://github\.com/[^/]+/[^/]+/blob/[^/]+/(.+)#L(\d+)$', href)
            assert m, href
            short = ddef.rsplit('.', 1)[-1]
            line = (ROOT/m.group(1)).read_text().splitlines()[int(m.group(2)) - 1]
            assert re.match(rf'\s*(async\s+)?(def|class)\s+{re.escape(short)}\b', line), f'{page}: source link of {short} points at {line!r}'
        if page in ('cyclical.html', 'fastai_llr.cyclical.html', 'tutorial_layer_rates.html'):
            driver.save_screenshot(str(ART/page.replace('.html', '.png')))
        if page == 'lr_find.html':  # nbdev's API links (`page.html#learner.method`) land on the entry
            assert driver.execute_script("return document.getElementById('learner.lr_find_groups') !== null")
    assert n_src >= 150 and n_entries >= 150, (n_src, n_entries)
    import urllib.request
    for url in pages: assert urllib.request.urlopen(url).status == 200, url  # every sidebar target is served
    # search
    driver.get(base)
    box = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, 'input.md-search__input'))
    driver.find_element(By.CSS_SELECTOR, '.md-search__form').click()  # opens the search dialog
    box[0].send_keys('CyclicalLLR')
    from selenium.common.exceptions import StaleElementReferenceException
    def _hits():  # the result list re-renders while the index loads: read it again if an element went stale
        try: return [r.text for r in driver.find_elements(By.CSS_SELECTOR, '.md-search-result__item') if 'CyclicalLLR' in r.text]
        except StaleElementReferenceException: return []
    assert _wait(_hits, timeout=30), 'search found nothing for CyclicalLLR'
    driver.save_screenshot(str(ART/'search.png'))
    assert not _errors(driver)
    for f in ('home.png', 'cyclical.png', 'fastai_llr.cyclical.png', 'tutorial_layer_rates.png'): assert (ART/f).stat().st_size > 10_000, f

def test_home_phone(site):
    "The landing page at phone width: title, install line, example and the per-layer rates figure, nothing wider than the screen"
    from selenium.webdriver.common.by import By
    base,_ = site
    d = _browser(width=390)
    try:
        d.get(base)
        assert _wait(lambda: d.execute_script('return document.readyState') == 'complete')
        txt = d.find_element(By.CSS_SELECTOR, 'article').text
        assert 'pip install fastai_llr' in txt and 'CyclicalLLR' in txt
        imgs = d.execute_script("return [...document.querySelectorAll('article img')].map(i => [i.naturalWidth, i.getBoundingClientRect().right])")
        assert imgs and all(nw > 0 and right <= 390 + 1 for nw,right in imgs), imgs
        assert d.execute_script('return document.documentElement.scrollWidth') <= 390 + 1  # no horizontal scrolling of the page
        d.save_screenshot(str(ART/'home_phone.png'))
    finally: d.quit()

def test_home_above_the_fold(site, driver):
    "What the package does, the install line, the example and the per-layer rates picture are on the first screen (1400 px wide)"
    from selenium.webdriver.common.by import By
    base,_ = site
    driver.set_window_size(1400, 1400)
    driver.get(base)
    assert _wait(lambda: driver.execute_script('return document.readyState') == 'complete')
    top = driver.execute_script("""const r = e => e.getBoundingClientRect().bottom + window.scrollY;
        const code = [...document.querySelectorAll('article pre')], img = document.querySelector('article img');
        return [r(code.find(c => c.textContent.includes('pip install fastai_llr'))), r(code.find(c => c.textContent.includes('CyclicalLLR('))), img ? r(img) : 1e9];""")
    assert all(t < 1400 for t in top), top
    driver.set_window_size(1400, 1000)
