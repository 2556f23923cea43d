"""The documentation site, built offline by `python tools/docs.py`, checked in headless Chromium.

Every page loads without console errors, every sidebar link resolves, every image loads, the API pages show each public
callback with its parameters, and search finds `CyclicalLLR`. Screenshots of the home page and the `CyclicalLLR` page are
saved under `tests/artifacts/` (or $DOCS_ARTIFACTS). Chromium and ChromeDriver come from Debian (`chromium`,
`chromium-driver`); the test installs them with apt-get when it can, and skips with the reason when it cannot.
"""
import functools, http.server, os, shutil, subprocess, sys, threading, time
from pathlib import Path
from urllib.parse import urljoin, urlparse
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM,DRIVER = '/usr/bin/chromium','/usr/bin/chromedriver'
ART = Path(os.environ.get('DOCS_ARTIFACTS', ROOT/'tests'/'artifacts'))
API = {'cyclical.html': ['CyclicalLLR'], 'adaptive.html': ['LARS', 'LARC', 'MADLR'], 'stats.html': ['GradClip', 'LayerStats'],
       'schedules.html': ['SchedCLR', 'SchedSGDR', 'SnapshotEnsemble'], 'lr_find.html': ['Learner.lr_find_repeated', 'Learner.lr_find_groups'],
       'core.html': ['LayerRatePolicy', 'TensorPolicy', 'FactorPolicy'], 'checks.html': ['check_real', 'check_int'], 'compare.html': ['compare', 'TrainConfig'], 'data.html': ['digits_dls', 'lenet', 'xresnet_small']}
PARAMS = {'CyclicalLLR': ['start', 'end', 'pct_start', 'pct_end', 'scheds', 'n_groups'], 'LARC': ['trust_coeff', 'sgd_below'],
          'MADLR': ['beta', 'min_mult', 'max_mult'], 'GradClip': ['max_norm', 'mode'], 'LayerStats': ['every']}

def _browser():
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
              '--disable-component-update', '--disable-sync', '--window-size=1280,1000', '--disable-dev-shm-usage'):
        opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs.py'), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
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

def _errors(driver):
    return [e for e in driver.get_log('browser') if e['level'] == 'SEVERE']

def _wait(cond, timeout=20):
    t = time.time()
    while time.time() - t < timeout:
        v = cond()
        if v: return v
        time.sleep(.2)
    return cond()

def test_site(site, driver):
    from selenium.webdriver.common.by import By
    base,out = site
    ART.mkdir(parents=True, exist_ok=True)
    driver.get(base)
    assert 'fastai_llr' in driver.title
    driver.save_screenshot(str(ART/'home.png'))
    links = [a.get_attribute('href') for a in driver.find_elements(By.CSS_SELECTOR, 'nav.md-nav--primary a.md-nav__link[href]')]
    pages = sorted({urlparse(h)._replace(fragment='').geturl() for h in links if h and h.startswith(base)})
    assert len(pages) >= 9, pages
    for name in ('index', 'core', 'cyclical', 'adaptive', 'stats', 'schedules', 'lr_find', 'integration', 'data', 'compare', 'demo'):
        assert any(p.endswith(f'/{name}.html') or (name == 'index' and p == base) for p in pages), name
    driver.get_log('browser')  # start clean
    for url in pages:
        driver.get(url)
        assert _wait(lambda: driver.execute_script('return document.readyState') == 'complete')
        assert driver.find_elements(By.CSS_SELECTOR, 'article h1'), f'{url}: no title'
        assert 'Error response' not in driver.title, url  # what http.server titles a missing page
        errs = _errors(driver)
        assert not errs, f'{url}: console errors {errs}'
        imgs = driver.find_elements(By.CSS_SELECTOR, 'article img')
        broken = [i.get_attribute('src') for i in imgs if not driver.execute_script('return arguments[0].complete && arguments[0].naturalWidth > 0', i)]
        assert not broken, f'{url}: images that did not load {broken}'
        page = url.rsplit('/', 1)[-1] or 'index.html'
        for obj in API.get(page, []):
            heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, 'article h2, article h3, article h4')]
            assert any(obj == h.strip().strip('¶').strip() for h in heads), f'{page}: no API entry for {obj} in {heads[:40]}'
        txt = driver.find_element(By.CSS_SELECTOR, 'article').text
        for obj,params in PARAMS.items():
            if obj in API.get(page, []):
                for p in params: assert p in txt, f'{page}: parameter {p} of {obj} not shown'
        if page == 'cyclical.html': driver.save_screenshot(str(ART/'cyclical.png'))
        if page == 'lr_find.html':  # nbdev's API links (`page.html#learner.method`) land on the entry
            assert driver.execute_script("return document.getElementById('learner.lr_find_groups') !== null")
        own = {urlparse(a.get_attribute('href'))._replace(fragment='').geturl()
               for a in driver.find_elements(By.CSS_SELECTOR, 'nav.md-nav--primary a.md-nav__link[href]')}
        assert own <= set(pages) | {base}, f'{url}: sidebar links {own - set(pages)} outside the site'
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
    assert (ART/'home.png').stat().st_size > 10_000 and (ART/'cyclical.png').stat().st_size > 10_000
