"""`trajbench view`: the HTML page, statically and in a real headless Chromium.

The run comes from the real harness: a python agent on the mini suite whose trials take three
known paths (so the tree has three leaves and one decisive branch), one of which sends
agent-produced markup (`<script>alert(1)</script>`, an `<img onerror>` tool name) that must
show as text and run nothing. The browser tests need Debian's `chromium` and `chromium-driver`
(.ci/run installs them) and are marked slow.
"""

import re

import pytest

from bench.adapters.spec import parse_agent_spec
from bench.analysis.divergence.section import divergence_section
from bench.errors import BenchError
from bench.publish.view import write_view
from bench.runs.runner import RunConfig, run_benchmark
from bench.world.suite import load_suite
from tests.browser import chromium
from tests.conftest import MINI, ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"
SCRIPT_PAYLOAD = "<script>alert(1)</script><script>window.__xss = 1</script>"
TOOL_PAYLOAD = '<img src=x onerror="alert(2);window.__xss=2">'

AGENT = f'''
SCRIPT_PAYLOAD = {SCRIPT_PAYLOAD!r}
TOOL_PAYLOAD = {TOOL_PAYLOAD!r}


def agent(episode):
    i = int(episode.trial_id.rsplit("/", 1)[1])
    if i % 3 == 2:  # a wrong lookup with markup in it, then an unknown tool named with markup
        episode.call("find_customer", {{"email": SCRIPT_PAYLOAD}})
        episode.call(TOOL_PAYLOAD, {{"x": "</script><b>bold</b>"}})
        return "sorry " + SCRIPT_PAYLOAD
    episode.call("find_customer", {{"email": "ada@example.com"}})
    episode.call("list_orders", {{"customer_id": "C1"}})
    episode.call("cancel_order", {{"order_id": "O1" if i % 3 == 0 else "O2"}})
    return "Cancelled O1"
'''


@pytest.fixture(scope="module")
def xss_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("view")
    agent_file = base / "xss_agent.py"
    agent_file.write_text(AGENT)
    out = base / "run"
    config = RunConfig(k=12, out=out, progress=False, retry_backoff_s=0.0)
    run_benchmark(load_suite(MINI), parse_agent_spec(f"{agent_file}:agent"),
                  ["cancel-pending", "refuse-cancel-delivered"], config)
    return out


def test_the_run_has_the_expected_tree(xss_run):
    row = next(r for r in divergence_section(xss_run, fork="raw")["tasks"] if r["task"] == "cancel-pending")  # as drawn
    assert (row["n"], row["successes"], row["distinct_trajectories"]) == (12, 4, 3)
    d = row["divergence"]
    assert d["step"] == 2 and d["prefix"] == ['find_customer({"email":"ada@example.com"})', 'list_orders({"customer_id":"C1"})']


def test_page_is_self_contained_and_escaped(xss_run, tmp_path):
    page = write_view(xss_run, out=tmp_path / "view.html").read_text()
    # no network: nothing is fetched (the only URL is the SVG namespace, which is not a fetch)
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+[^\s\"'<>]*", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert not re.search(r"<(?:link|img|iframe|object|embed)\b", page, re.I)
    # the payloads never appear as markup: only our two script elements exist
    assert page.count("<script") == 2 and "<img" not in page.lower()
    assert "alert(1)" in page  # present, but escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page or "\\u003cscript\\u003ealert(1)" in page
    data = page.split('id="view-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data and "&" not in data.replace("\\u0026", "")
    assert "Content-Security-Policy" in page


def test_drawn_labels_name_the_differing_argument(xss_run, tmp_path):
    page = write_view(xss_run, task_id="cancel-pending", out=tmp_path / "view.html").read_text()
    assert ">cancel_order(order_id=O1)</text>" in page and ">cancel_order(order_id=O2)</text>" in page


def test_unknown_task_is_a_clear_error(xss_run, tmp_path):
    with pytest.raises(BenchError, match="no finished trials of task 'nope'"):
        write_view(xss_run, task_id="nope", out=tmp_path / "x.html")


def test_default_output_path(xss_run):
    path = write_view(xss_run, task_id="cancel-pending")
    assert path == xss_run / "view-cancel-pending.html" and path.is_file()


# ---------------------------------------------------------------------------- in Chromium


@pytest.fixture
def browser():
    with chromium(window="1400,1000") as driver:
        yield driver


def _no_alert(driver):
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return True
    raise AssertionError(f"an alert opened: {text!r}")


def _load(driver, path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1")


@pytest.mark.slow
def test_tree_in_chromium(xss_run, tmp_path, browser):
    from selenium.webdriver.common.by import By

    page = write_view(xss_run, task_id="cancel-pending", out=tmp_path / "view.html")
    _load(browser, page)
    section = browser.find_element(By.CSS_SELECTOR, "section.task.active")
    assert section.get_attribute("data-task-id") == "cancel-pending"
    leaves = section.find_elements(By.CSS_SELECTOR, "g.node.leaf")
    assert len(leaves) == 3
    assert sorted((int(g.get_attribute("data-s")), int(g.get_attribute("data-n"))) for g in leaves) == [(0, 4), (0, 4), (4, 4)]
    marked = section.find_elements(By.CSS_SELECTOR, "g.node.divergence")
    assert len(marked) == 1
    divergence = marked[0]
    assert (divergence.get_attribute("data-n"), divergence.get_attribute("data-s")) == ("8", "4")
    assert "list_orders" in divergence.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert divergence.find_elements(By.CSS_SELECTOR, ".divergence-ring")
    # siblings are labelled by the argument value that tells them apart, not a clipped prefix
    drawn = {t.get_attribute("textContent") for t in section.find_elements(By.CSS_SELECTOR, "g.node > text")}
    assert {"cancel_order(order_id=O1)", "cancel_order(order_id=O2)"} <= drawn, drawn
    assert "find_customer(email=ada@example.com)" in drawn, drawn
    # the details panel opens on the divergence point and lists its alternatives
    details = browser.find_element(By.ID, "details")
    assert "Divergence point" in details.text and "cancel_order" in details.text and "4/4" in details.text
    # click every node: each shows its step, nothing executes
    for g in section.find_elements(By.CSS_SELECTOR, "g.node"):
        browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", g)
        _no_alert(browser)
    # the markup-bearing step shows as text, arguments and error included
    xss_node = next(g for g in section.find_elements(By.CSS_SELECTOR, "g.node")
                    if "alert(1)" in g.find_element(By.TAG_NAME, "title").get_attribute("textContent"))
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", xss_node)
    text = details.text
    assert "<script>alert(1)</script>" in text and "window.__xss = 1" in text
    tool_node = next(g for g in section.find_elements(By.CSS_SELECTOR, "g.node")
                     if "onerror" in g.find_element(By.TAG_NAME, "title").get_attribute("textContent"))
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", tool_node)
    assert TOOL_PAYLOAD in details.text and "</script><b>bold</b>" in details.text
    assert not details.find_elements(By.TAG_NAME, "img") and not details.find_elements(By.TAG_NAME, "b")
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    assert browser.execute_script("return document.querySelectorAll('script').length") == 2
    _no_alert(browser)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "view-cancel-pending.png"))


@pytest.mark.slow
def test_task_selector_in_chromium(xss_run, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = write_view(xss_run, out=tmp_path / "all.html")
    _load(browser, page)
    select = Select(browser.find_element(By.ID, "task-select"))
    labels = [o.text for o in select.options]
    assert len(labels) == 2 and labels[0].startswith("cancel-pending") and "divergence" in labels[0]
    select.select_by_index(1)
    active = browser.find_element(By.CSS_SELECTOR, "section.task.active")
    assert active.get_attribute("data-task-id") == "refuse-cancel-delivered"
    # on this task cancelling O1 is the failure (forbidden state change); O2 is refused, harmless
    leaves = active.find_elements(By.CSS_SELECTOR, "g.node.leaf")
    assert sorted((int(g.get_attribute("data-s")), int(g.get_attribute("data-n"))) for g in leaves) == [(0, 4), (4, 4), (4, 4)]
    (marked,) = active.find_elements(By.CSS_SELECTOR, "g.node.divergence")
    assert (marked.get_attribute("data-n"), marked.get_attribute("data-s")) == ("8", "4")
    assert not browser.find_element(By.ID, "task-0").is_displayed()
    assert browser.execute_script("return typeof window.__xss") == "undefined"
    _no_alert(browser)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "view-selector.png"))
