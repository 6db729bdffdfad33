"""The leaderboard page in a real browser (headless Debian chromium through selenium): all agents,
ranks in order, plots present, and hostile agent-produced text rendered as text, never run.
A screenshot is kept under tests/artifacts/ (gitignored)."""

import json
import re
import shutil
import textwrap

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from bench.publish.leaderboard import build_leaderboard
from bench.publish.leaderboard_page import write_leaderboard
from tests.browser import chromium
from tests.conftest import MINI, ROOT, run_cli

PAYLOAD = "<script>alert(1)</script>"
ARTIFACTS = ROOT / "tests" / "artifacts"

# Needs a real browser: Debian's chromium and chromium-driver (.ci/run installs them; deselect
# locally with -m "not slow").
pytestmark = pytest.mark.slow

# An agent whose *name* carries the payload (through a spec option) and whose tool arguments do too.
EVIL_AGENT = textwrap.dedent('''
    class Evil:
        def __init__(self, label=""):
            self.label = label

        def run(self, episode):
            episode.call("find_customer", {"email": "<script>alert(1)</script>"})
            episode.call("cancel_order", {"order_id": "<img src=x onerror=alert(2)>"})
            episode.call("find_customer", {"email": "ada@example.com"})
            if "cancel my pending" in episode.instruction:
                episode.call("cancel_order", {"order_id": "O1"})
            return "O1 <script>alert(3)</script>"
''')


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    (base / "evil.py").write_text(EVIL_AGENT)
    runs = []
    for name, spec in (("oracle", "sim:oracle"), ("noisy", "sim:noisy?p=0.5&noise=0.2"),
                       ("evil", f"{base / 'evil.py'}:Evil?label={PAYLOAD}")):
        proc = run_cli("run", str(MINI), "--agent", spec, "-k", "4", "--out", str(base / name), "--quiet")
        assert proc.returncode == 0, proc.stderr
        runs.append(base / name)
    board = build_leaderboard(runs, bootstrap=200)
    write_leaderboard(board, base / "lb")
    return base / "lb" / "index.html", board


@pytest.fixture(scope="module")
def browser():
    with chromium(window="1280,1600", console_log=True) as driver:
        yield driver


def test_page_in_a_real_browser(page, browser):
    path, board = page
    browser.get(path.as_uri())
    # nothing ran: no alert opened, no script element, no event-handler attribute, title untouched
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.CSS_SELECTOR, "[onerror], [onload], [onclick]") == []
    assert browser.title == f"trajbench consistency leaderboard — {board['suite']['name']}"
    assert not [entry for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]]

    # every agent, in rank order, with its label as plain text
    rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr.entry")
    assert len(rows) == 3
    ranks = [int(r.get_attribute("data-rank")) for r in rows]
    assert ranks == sorted(ranks) == [e["rank"] for e in board["entries"]]
    names = [r.find_element(By.CSS_SELECTOR, ".agent-name").text for r in rows]
    assert names == [e["label"] for e in board["entries"]]
    assert any(name.endswith(f"label={PAYLOAD}") for name in names)
    sims = [r.get_attribute("data-simulated") == "true" for r in rows]
    assert sims == [e["agent"]["simulated"] for e in board["entries"]] and sims.count(True) == 2
    for row, simulated in zip(rows, sims):
        assert bool(row.find_elements(By.CSS_SELECTOR, ".badge.sim")) == simulated
    metric = [float(r.find_element(By.CSS_SELECTOR, "td.metric").text.split()[0]) for r in rows]
    assert metric == sorted(metric, reverse=True)

    # plots: two inline SVGs, with the curves and the agent names (escaped text) in the legend
    curves = browser.find_element(By.CSS_SELECTOR, "figure#passk-curves svg.plot")
    heatmap = browser.find_element(By.CSS_SELECTOR, "figure#heatmap svg.plot")
    assert curves.size["width"] > 300 and heatmap.size["width"] > 300
    assert len(curves.find_elements(By.CSS_SELECTOR, "path")) > 10
    legend = " ".join(t.get_attribute("textContent") for t in curves.find_elements(By.TAG_NAME, "text"))
    assert PAYLOAD in legend and "(simulated)" in legend
    ticks = " ".join(t.get_attribute("textContent") for t in heatmap.find_elements(By.TAG_NAME, "text"))
    assert all(task in ticks for task in board["tasks"])

    # the tool argument holding the payload, shown as text in the tool-errors section
    for summary in browser.find_elements(By.CSS_SELECTOR, "#tool-errors details summary"):
        summary.click()
    calls = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#tool-errors code")]
    assert any(PAYLOAD in c for c in calls), calls
    assert any("<img src=x onerror=alert(2)>" in c for c in calls)
    errors = " ".join(td.text for td in browser.find_elements(By.CSS_SELECTOR, "#tool-errors td.text"))
    assert f"no customer with email {PAYLOAD}" in errors
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(max(height + 50, 800), 8000))
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(ARTIFACTS / "leaderboard.png"))
    shutil.copyfile(path, ARTIFACTS / "leaderboard.html")


def test_page_is_self_contained(page):
    path, _ = page
    text = path.read_text()
    tags = re.findall(r"<([a-zA-Z][\w:-]*)", text)
    assert not {t.lower() for t in tags} & {"script", "link", "iframe", "img", "object", "embed", "image", "foreignobject"}
    # every URL is an XML namespace name (matplotlib's SVG), never something to fetch
    urls = re.findall(r"(\S*)https?://", text)
    assert all(re.search(r"xmlns(:\w+)?=\"$", before) for before in urls), urls
    # references inside the SVGs are internal (#id), none points out
    refs = re.findall(r"\s(?:src|href|xlink:href)=\"([^\"]*)\"", text)
    assert all(ref.startswith("#") for ref in refs), refs
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert json.loads((path.parent / "leaderboard.json").read_text())["entries"]
