"""A Sphinx extension that makes the built book work offline and load without JavaScript errors.

Listed in ``_config.yml`` (``sphinx: extra_extensions``), it does three things at build time:

- **MathJax from the book's own files.** Sphinx loads MathJax from a CDN by default, so on a
  machine without internet every equation stays raw LaTeX. The PyPI package
  ``sphinx-mathjax-offline`` (a covtl dependency) ships MathJax 3's files; they are copied into
  the build's ``_static/mathjax/`` (never into the repository) and ``mathjax_path`` in
  ``_config.yml`` points there.
- **Each inline script once.** sphinx-thebe registers its configuration script a second time
  (once as a file named ``None``, once as ``''``), and its ``const THEBE_JS_URL`` declared twice
  is a ``SyntaxError`` on every page; repeated scripts are dropped from each page.
- **A colour mode from the first visit.** pydata-sphinx-theme logs an error ("Got invalid theme
  mode") on a browser's first visit unless a default mode is set; it is set to ``auto`` (follow
  the system), which is what the theme falls back to anyway.

The browser test (``tests/test_browser.py``) checks the result in headless Chromium.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

#: the PyPI distribution that ships MathJax 3 (its import name has dashes, as the distribution's)
MATHJAX_PACKAGE = "sphinx-mathjax-offline"


def mathjax_dir() -> Path:
    """The installed MathJax 3 folder (``.../static/mathjax``, holding ``tex-mml-chtml.js``)."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{MATHJAX_PACKAGE} is not installed, so the book's equations have no MathJax to render them "
            f"offline: `pip install {MATHJAX_PACKAGE}` (it is a covtl dependency; `make` installs it)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    if not (folder / "tex-mml-chtml.js").is_file():
        raise FileNotFoundError(f"{folder} has no tex-mml-chtml.js; reinstall {MATHJAX_PACKAGE}")
    return folder


def _add_mathjax(app: Any, config: Any) -> None:
    """Put the package's ``static/`` on the static path: Sphinx copies it to ``_static/mathjax/``."""
    path = str(config.mathjax_path or "")
    if "://" in path:  # a CDN URL was configured on purpose: leave it
        return
    config.html_static_path = [*config.html_static_path, str(mathjax_dir().parent)]


def _default_mode(app: Any, config: Any) -> None:
    config.html_context = {"default_mode": "auto", **config.html_context}  # pydata-sphinx-theme reads it here


def _drop_repeated_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Keep the first of each script (same source, same inline body, same attributes) on a page."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {})
        key = (getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _add_mathjax)
    app.connect("config-inited", _default_mode)
    # after sphinx.ext.mathjax (priority 500) has added its scripts to the page
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
