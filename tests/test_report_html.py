"""The HTML report: self-contained (no external resource), and in headless Chromium it loads without a console
message, the Master Comparison Table has its rows and a plot renders; a screenshot is saved in the test's output.

The browser is Debian's ``chromium`` (``apt-get install chromium``; .ci/run installs it and sets
TRANSFORMER_BENCH_REQUIRE_BROWSER=1, so CI fails rather than skips without it)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.claims import load_claims
from harness.report.build import write_report

from .test_claims import PPL, _make_run

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = [ROOT / "reports" / "master_table-cpu" / "report.html", ROOT / "reports" / "long_context-cpu" / "report.html"]


def _browser() -> str | None:
    found = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if found is None and os.environ.get("TRANSFORMER_BENCH_REQUIRE_BROWSER"):
        pytest.fail("no headless Chromium on PATH, and TRANSFORMER_BENCH_REQUIRE_BROWSER is set (CI)")
    return found


def _load(browser: str, page: Path, screenshot: Path) -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, the console messages), offline: every host name fails to resolve."""
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    url = page.resolve().as_uri()
    done = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=180)
    subprocess.run(flags + ["--window-size=1400,1800", f"--screenshot={screenshot}", url], capture_output=True,
                   timeout=180)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def _master_rows(dom: str) -> int:
    after = dom.split("Master Comparison Table, measured", 1)[1]
    table = after[after.index("<table"):after.index("</table>")]
    return len(re.findall(r"<tr", table.split("<tbody", 1)[1]))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    out = _make_run(tmp_path_factory.mktemp("html"), PPL)
    return write_report(out, ("md", "html")).parent / "report.html"


def test_the_page_is_self_contained(synthetic):
    text = synthetic.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(https?:)?//", text), "an external resource"
    assert "plotly" in text.lower() and "<table" in text
    assert '<td class="v-holds">holds</td>' in text and '<td class="v-fails">does not hold</td>' in text


def _check_in_browser(page: Path, screenshot: Path, master_rows: int | None, interactive: bool) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no headless Chromium on PATH (apt-get install chromium); CI installs it")
    dom, console = _load(browser, page, screenshot)
    assert not console, console
    assert 'class="filter"' in dom  # the tables' script ran
    if master_rows is not None:
        assert _master_rows(dom) == master_rows
    if interactive:
        assert "main-svg" in dom and re.search(r'class="[^"]*\btrace\b', dom), "no plot rendered"
    else:
        assert "data:image/png;base64," in dom
    assert screenshot.exists() and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")


def test_the_page_in_headless_chromium(synthetic, tmp_path):
    _check_in_browser(synthetic, tmp_path / "report.png", len(load_claims().methods), interactive=True)


@pytest.mark.parametrize("page", COMMITTED, ids=lambda p: p.parent.name)
def test_the_committed_reports_in_headless_chromium(page, tmp_path):
    assert page.exists(), f"{page} is not committed"
    interactive = (page.parent / "plots").is_dir()
    _check_in_browser(page, tmp_path / "report.png", 10 if "master_table" in page.parent.name else None, interactive)
