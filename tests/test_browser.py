"""The built book in a real browser: headless Chromium loads every page of the smoke book.

Per page: no JavaScript error (the browser console's SEVERE entries, failed loads included),
nothing fetched from the internet (the book must work offline: scripts, stylesheets and
MathJax's fonts come from the build), every image loaded, every equation typeset by MathJax
(and every page whose source has math shows typeset math, with no raw LaTeX left), and no table
cell cut off with a truncation mark.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; ``make test`` installs them when it can) and selenium, which drives
the local chromedriver and downloads nothing. Skipped, saying why, when any of them is missing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from covtl import bookassets

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("COVTL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("COVTL_CHROMEDRIVER") or shutil.which("chromedriver")


def _toc_pages() -> list[str]:
    """Every page of _toc.yml, as its path under the html folder, plus the redirect, search and index."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc.get("parts", []) for ch in part["chapters"]]
    return [f"{f}.html" for f in files] + ["index.html", "search.html", "genindex.html"]


PAGES = _toc_pages()

#: markdown math: $$...$$, $...$ (dollarmath) or an amsmath environment, outside code
SOURCE_MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$[^\s$][^$\n]*?\$|\\begin\{(?:equation|align)", re.S)

# In the page: wait for MathJax (when the page loads it) to finish typesetting and every image
# to decode, then report what a reader would see broken.
CHECK_PAGE = r"""
const done = arguments[arguments.length - 1];
(async () => {
  // MathJax replaces startup.promise once its components are in, so awaiting the first one can
  // return before the first typesetting: wait until every math element is typeset (or 45 s)
  const typeset = () => [...document.querySelectorAll('.math')].every(m => m.querySelector('mjx-container'));
  const deadline = Date.now() + 45000;
  while (window.MathJax && Date.now() < deadline) {
    if (MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    if (typeset()) break;
    await new Promise(r => setTimeout(r, 200));
  }
  const images = [...document.images];
  await Promise.all(images.map(i => { i.loading = 'eager'; return i.decode().catch(() => null); }));
  await document.fonts.ready;
  const outside = n => !n.parentElement.closest('pre, code, script, style, mjx-container, .highlight');
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let text = '';
  while (walker.nextNode()) { if (outside(walker.currentNode)) text += walker.currentNode.nodeValue + ' '; }
  const math = [...document.querySelectorAll('.math')];
  const internet = u => /^(https?:)?\/\//.test(u || '');
  done({
    broken_images: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    math: math.length,
    typeset: document.querySelectorAll('mjx-container').length,
    untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    math_errors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')].map(e => e.textContent.slice(0, 80)),
    raw_latex: (text.match(/\\\(|\\\[|\$\$|\$[^\s$][^$\n]{0,200}?[^\s$\\]\$/g) || []).slice(0, 5),
    fonts_failed: [...document.fonts].filter(f => f.status === 'error').map(f => f.family),
    from_internet: [...document.querySelectorAll('script[src], link[rel=stylesheet][href], img[src]')]
      .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(internet),
    truncated_cells: [...document.querySelectorAll('td, th')].map(c => c.innerText.trim())
      .filter(t => t.endsWith('...') || t.endsWith('\u2026')).map(t => t.slice(-80)),
  });
})().catch(err => done({script_error: String(err)}));
"""


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium at 1280 px through the local chromedriver (skips if either is missing)."""
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found: `apt-get install chromium chromium-driver` "
                    "(Debian/Ubuntu; `make test` does it when it can) to run the browser test")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def load(driver, html: Path, page: str) -> dict:
    """Open ``page`` of the built book; what :data:`CHECK_PAGE` finds, plus the console's errors."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get((html / page).resolve().as_uri())
    found = driver.execute_async_script(CHECK_PAGE)
    found["js_errors"] = [e["message"][:300] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return found


def problems(found: dict, source_has_math: bool) -> dict:
    """The checks that failed, by name (empty: the page is fine)."""
    out = {k: found[k] for k in ("script_error", "js_errors", "broken_images", "untypeset", "math_errors",
                                 "raw_latex", "fonts_failed", "from_internet", "truncated_cells") if found.get(k)}
    if source_has_math and not found.get("typeset"):
        out["no_typeset_math"] = f"the source has math; the page has {found.get('math')} math elements, none typeset"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_in_chromium(smoke_book, browser, page):
    path = smoke_book / page
    assert path.is_file(), f"{page} was not built"
    source = ROOT / Path(page).with_suffix(".md")
    text = source.read_text() if source.is_file() else ""
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", "", text, flags=re.S | re.M)  # code blocks and cells
    text = re.sub(r"`[^`\n]+`", "", text)
    failed = problems(load(browser, smoke_book, page), bool(SOURCE_MATH.search(text)))
    assert not failed, f"{page}: " + "; ".join(f"{k}: {v}" for k, v in failed.items())


def test_problems_names_each_failed_check():
    """The checker itself, on a page record with everything wrong and one with nothing wrong."""
    fine = {"js_errors": [], "broken_images": [], "math": 2, "typeset": 2, "untypeset": [], "math_errors": [],
            "raw_latex": [], "fonts_failed": [], "from_internet": [], "truncated_cells": []}
    assert problems(fine, source_has_math=True) == {}
    bad = {**fine, "js_errors": ["x.js 1:1 Uncaught SyntaxError"], "typeset": 0, "truncated_cells": ["a ..."],
           "from_internet": ["https://cdn.example/mathjax.js"]}
    assert set(problems(bad, source_has_math=True)) == {"js_errors", "no_typeset_math", "truncated_cells",
                                                        "from_internet"}
    assert SOURCE_MATH.search("a $\\tau$ b") and SOURCE_MATH.search("$$\nO = V\n$$")
    assert not SOURCE_MATH.search("costs 5 and $PATH")


# ------------------------------------------------------------------------ the offline assets (no browser)


def test_mathjax_ships_with_the_install_with_its_fonts():
    folder = bookassets.mathjax_dir()
    assert (folder / "tex-mml-chtml.js").is_file()
    assert list((folder / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


def test_the_book_loads_mathjax_from_its_own_build():
    sphinx = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]
    assert "covtl.bookassets" in sphinx["extra_extensions"]
    assert "://" not in sphinx["config"]["mathjax_path"]
    assert (bookassets.mathjax_dir().parent / sphinx["config"]["mathjax_path"]).is_file()


def test_a_script_registered_twice_is_written_once():
    from sphinx.builders.html._assets import _JavaScript

    thebe = 'const THEBE_JS_URL = "x"'
    context = {"script_files": [_JavaScript(None, body=thebe), _JavaScript("_static/a.js", priority=200),
                                _JavaScript("", body=thebe), _JavaScript("_static/a.js", priority=200, defer="defer")]}
    bookassets._drop_repeated_scripts(None, "page", "page.html", context, None)
    assert [(js.filename, js.attributes.get("body")) for js in context["script_files"]] == [
        (None, thebe), ("_static/a.js", None), ("_static/a.js", None)]
