"""``/ui`` in a real browser: Debian's Chromium, driven by Selenium through the system chromedriver.

Against a whole stack -- a worker process, the sandbox at a slow quota (so a
batch of 20 takes about ten seconds), the ingress served by uvicorn -- the
browser opens the dashboard (the key sent as HTTP Basic by a DevTools header,
so every reload and form POST carries it), watches a running batch's progress
move as the page reloads itself, cancels the batch with its button and sees
the cancellation, and replays a dead letter. Every wait is for an element's
text; screenshots go to the test's tmp dir, and one to ``docs/ui.png`` for the
README. Selenium never downloads a driver: it is given ``/usr/bin/chromedriver``
and ``/usr/bin/chromium`` (``.ci/run`` installs both).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from optimum_bridge import BridgeClient
from optimum_bridge.keys import Keys
from tests.support import ROOT, bridge_env, settings_from, wait_until
from tests.system.test_accounts import vehicle
from tests.system.test_ingress import served_ingress  # noqa: F401  (the fixture)

CHROMEDRIVER, CHROMIUM = Path("/usr/bin/chromedriver"), Path("/usr/bin/chromium")
KEY = "browser-test-key-0123456789"
pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(
        not (CHROMEDRIVER.exists() and CHROMIUM.exists()) and not os.environ.get("CI"),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium with a fresh profile, quit at teardown."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1360,2200",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver: WebDriver, css: str) -> str:
    """The element's text, or "" while the page (reloading itself) does not have it."""
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def wait_text(driver: WebDriver, css: str, check: Callable[[str], bool], *, timeout: float = 30) -> str:
    """Wait until the text of ``css`` passes ``check``; returns it."""
    found: list[str] = []

    def ready(d: WebDriver) -> bool:
        found[:] = [text_of(d, css)]
        return check(found[0])

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(ready)
    except TimeoutException:
        raise AssertionError(f"{css}: last text {found!r}; page: {driver.page_source[:3000]}") from None
    return found[0]


def click(driver: WebDriver, css: str) -> None:
    """Click the button, retrying while the self-reloading page replaces it."""
    WebDriverWait(driver, 10, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True
    )


def done_of(progress: str) -> int:
    """The done count of a progress text "7/20 (35%)"."""
    return int(progress.split("/", 1)[0]) if "/" in progress else -1


def test_the_dashboard_in_a_real_browser(
    redis_server,
    prefix,
    sandbox,
    workers,
    receiver,
    served_ingress,  # noqa: F811
    browser,
    tmp_path,
):
    started = time.monotonic()
    sb = sandbox(quota="2/s")
    env = bridge_env(
        redis_server.url,
        prefix,
        sb,
        OPTIMUM_RATE_LIMIT="2/s",
        BRIDGE_RATE_LIMIT_MARGIN_S="0.1",
        BRIDGE_CALLBACK_SCHEDULE_S="0.1",
        BRIDGE_API_KEYS=KEY,
    )
    workers(env, concurrency=4)
    settings = settings_from(env)
    client = BridgeClient(settings)
    keys = Keys(prefix)
    receiver.statuses = [500] * 10  # the first callback fails until it is dead-lettered
    hooked = client.submit({**vehicle(0, "default"), "priority": "urgent", "callback": {"url": receiver.url}})
    batch = client.submit_batch([vehicle(i, "default") for i in range(1, 21)], metadata={"run": "nightly"})
    client.submit_many([{**vehicle(i, "default"), "priority": "bulk", "metadata": {"ui": "demo"}} for i in range(5)])
    base = str(served_ingress(settings).base_url).rstrip("/")

    token = base64.b64encode(f"ops:{KEY}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    browser.get(f"{base}/ui?refresh=1")
    assert "optimum-bridge" in browser.title
    row = f"#batch-{batch.id}"
    first = done_of(wait_text(browser, f"{row} .progress-text", lambda t: "/20" in t))
    moved = done_of(wait_text(browser, f"{row} .progress-text", lambda t: done_of(t) >= max(first + 2, 3)))
    browser.save_screenshot(str(tmp_path / "1-batch-running.png"))

    wait_until(lambda: client.redis.hlen(keys.dead_letters) == 1, timeout=30, what="the dead letter")
    with receiver.cond:
        receiver.statuses.clear()  # the endpoint is fixed: the replay will be delivered
    wait_text(browser, "#dead-letters", lambda t: hooked in t and "answered 500" in t)
    browser.save_screenshot(str(tmp_path / "2-dead-letter.png"))
    if os.environ.get("BRIDGE_UPDATE_DOCS"):  # the README's screenshot, refreshed only when asked (no dirty tree)
        shutil.copyfile(tmp_path / "2-dead-letter.png", ROOT / "docs" / "ui.png")

    click(browser, f"{row} button[name=cancel-batch]")
    wait_text(browser, "#note", lambda t: t.startswith(f"Batch {batch.id}: every waiting job cancelled"))
    calls_at_cancel = sb.stats()["accepted"]
    wait_text(browser, f"{row} .counts", lambda t: "cancelled" in t, timeout=15)
    wait_text(browser, f"{row} td:nth-child(2)", lambda t: t == "done", timeout=15)
    browser.save_screenshot(str(tmp_path / "3-batch-cancelled.png"))
    status = client.get_batch(batch.id)
    assert status.status == "done" and status.counts.cancelled >= 5
    assert status.counts.cancelled + status.counts.succeeded == 20

    click(browser, f'#dead-letters tr[data-subject="{hooked}"] button')
    wait_text(browser, "#note", lambda t: t == f"Dead letter {hooked} queued again.")
    wait_text(browser, "#dead-letters", lambda t: hooked not in t)
    receiver.wait(lambda: bool(receiver.received), timeout=30, what="the replayed callback")
    browser.save_screenshot(str(tmp_path / "4-replayed.png"))
    assert client.redis.hlen(keys.dead_letters) == 0

    browser.get(f"{base}/ui/operations/{hooked}")  # where its row links to (closed: succeeded rows start folded)
    assert wait_text(browser, "#job-status", bool) == "succeeded"
    assert f'"id": "{hooked}"' in wait_text(browser, "#job-json", bool)
    print(
        f"\nbrowser test: progress {first} -> {moved}/20 seen, cancelled after {calls_at_cancel} calls "
        f"({status.counts.cancelled} cancelled), dead letter replayed; {time.monotonic() - started:.1f}s; "
        f"screenshots in {tmp_path}"
    )
