"""The dashboard in headless Chromium (Debian's ``chromium`` and ``chromedriver``, Selenium).

The page loads without console errors, lists the host with its status, draws charts with
points and shows the NEWEST value; it shows an error banner while the server is down and
recovers by itself when the server is back on the same port. Reads need a token by default:
the page takes one from the URL fragment (``#token=…``, the link ``miniobserv demo`` prints)
and clears it from the address bar, or asks for one and keeps it for the tab. A screenshot is saved to
``artifacts/dashboard.png``. No browser is downloaded: the system's binaries are used.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET
from tests.conftest import SAVED_ARTIFACTS
from tests.processes import Gunicorn

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
HOST = "web-01"
WAIT_S = 60  # liveness bound for what the page must eventually show


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are needed: run ./scripts/test, which installs "
                    "Debian's chromium and chromium-driver", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1400,1500"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def feed(url: str) -> None:
    """Ten minutes of points for HOST, oldest first; the newest values are distinctive."""
    now = datetime.now(UTC).replace(microsecond=0)
    metrics = []
    for i in range(60):
        time = (now - timedelta(seconds=10 * (59 - i))).strftime("%Y-%m-%dT%H:%M:%SZ")
        metrics += [
            {"time": time, "name": "cpu.usage_pct", "value": 20 + i % 7,
             "labels": {"core": "total"}},
            {"time": time, "name": "cpu.usage_pct", "value": 99, "labels": {"core": "0"}},
            {"time": time, "name": "mem.used_pct", "value": 10.0 if i < 59 else 42.5},
            {"time": time, "name": "disk.used_pct", "value": 30 + i / 10,
             "labels": {"mount": "/"}},
            {"time": time, "name": "disk.used_pct", "value": 70, "labels": {"mount": "/data"}},
        ]
    headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='ingest')}"}
    for start in range(0, len(metrics), 1000):
        response = requests.post(url + "/api/v1/metrics", headers=headers, timeout=10, json={
            "host": HOST, "batch_id": str(uuid.uuid4()), "metrics": metrics[start:start + 1000]})
        assert response.status_code == 202, response.text
    entries = [{"time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "level": level, "message": text}
               for level, text in (("info", "service started"), ("error", "disk /data slow"))]
    response = requests.post(url + "/api/v1/logs", headers=headers, timeout=10,
                             json={"host": HOST, "entries": entries})
    assert response.status_code == 202, response.text


def wait_until(driver: Any, condition: Any, message: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(condition, message)


def visible(driver: Any, element_id: str) -> bool:
    return bool(driver.execute_script(
        "return !document.getElementById(arguments[0]).classList.contains('hidden')",
        element_id))


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_dashboard_shows_the_fleet_and_recovers_after_an_outage(sqlite_url: str,
                                                                browser: Any) -> None:
    env = {"ALERT_INTERVAL": "1s", "ALERT_RULES": (
        '[{"host":"*","name":"mem.used_pct","op":">","threshold":40,"for":"0s"}]')}
    server = Gunicorn(sqlite_url, env=env)
    server.wait_ready()
    try:
        feed(server.url)
        token = mint_token(SECRET, scope="read", issuer="miniobserv")
        browser.get(f"{server.url}/?refresh=1#window=15m&token={token}")
        wait_until(browser, lambda d: d.execute_script(
            "return document.querySelectorAll('#charts svg[data-points]').length >= 3 && "
            "document.querySelectorAll('#alerts tr[data-state=firing]').length == 1 && "
            "document.querySelectorAll('#logs .logline').length == 2"), "the page filled up")
        # The fragment's token is in use, kept for the tab, and gone from the address bar.
        assert browser.execute_script(
            "return sessionStorage.getItem('miniobserv.token')") == token
        address = browser.execute_script("return location.href")
        assert "token" not in address and token not in address, address
        assert address.startswith(f"{server.url}/?refresh=1#") and "window=15m" in address
        assert not visible(browser, "token-form")
        hosts = browser.execute_script(
            "return [...document.querySelectorAll('#hosts li')].map(li => "
            "[li.dataset.host, li.dataset.status])")
        assert hosts == [[HOST, "ok"]]
        points = browser.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#charts .chart')].map("
            "c => [c.dataset.name, Number(c.querySelector('svg').dataset.points)]))")
        assert points["cpu.usage_pct"] > 10 and points["disk.used_pct"] > 10
        values = browser.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#charts .chart')].map("
            "c => [c.dataset.name, c.querySelector('.chart-value').textContent]))")
        assert values["mem.used_pct"] == "42.5 %"  # the newest point, not the oldest
        assert values["cpu.usage_pct"] != "99.0 %"  # core total, not a single core
        legend = browser.execute_script(
            "return document.querySelector('.chart[data-name=\"disk.used_pct\"] .legend')"
            ".textContent")
        assert "mount=/" in legend and "mount=/data" in legend
        assert console_errors(browser) == []
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        SAVED_ARTIFACTS.append(ARTIFACTS / "dashboard.png")

        port = server.port
        server.terminate()
        wait_until(browser, lambda d: visible(d, "banner"), "an error banner while down")
        server = Gunicorn(sqlite_url, port=port, env=env)
        server.wait_ready()
        wait_until(browser, lambda d: not visible(d, "banner"), "the banner goes away")
        assert browser.execute_script(
            "return document.querySelectorAll('#hosts li[data-host]').length") == 1
        assert browser.execute_script(
            "return Number(document.querySelector('#charts svg').dataset.points)") > 10
    finally:
        server.terminate()


def test_dashboard_asks_for_a_token_and_keeps_it_for_the_tab(sqlite_url: str,
                                                             browser: Any) -> None:
    server = Gunicorn(sqlite_url)  # DASHBOARD_AUTH=token is the default
    server.wait_ready()
    try:
        feed(server.url)
        browser.get(f"{server.url}/?refresh=1")
        wait_until(browser, lambda d: visible(d, "token-form"), "the token form")
        token = mint_token(SECRET, scope="read", issuer="miniobserv")
        browser.find_element("id", "token-input").send_keys(token)
        browser.find_element("css selector", "#token-form button").click()
        wait_until(browser, lambda d: d.execute_script(
            "return document.querySelectorAll('#hosts li[data-host]').length") == 1,
            "hosts after the token")
        assert not visible(browser, "token-form")
        assert browser.execute_script(
            "return sessionStorage.getItem('miniobserv.token')") == token
        browser.refresh()  # same tab: the token is still there
        wait_until(browser, lambda d: d.execute_script(
            "return document.querySelectorAll('#hosts li[data-host]').length") == 1,
            "hosts after a reload")
        assert not visible(browser, "token-form")
    finally:
        server.terminate()


OTHERS = {"web-02": {"cpu": 80.0, "mem": 20.0, "disk": {"/": 50.0}},
          "db-01": {"cpu": 5.0, "mem": 90.5, "disk": {"/": 40.0, "/srv": 95.5}}}


def feed_others(url: str) -> None:
    """One current point per series of the hosts in OTHERS."""
    time = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = {"Authorization": f"Bearer {mint_token(SECRET, scope='ingest')}"}
    for host, values in OTHERS.items():
        metrics = [{"time": time, "name": "cpu.usage_pct", "value": values["cpu"],
                    "labels": {"core": "total"}},
                   {"time": time, "name": "cpu.usage_pct", "value": 100, "labels": {"core": "1"}},
                   {"time": time, "name": "mem.used_pct", "value": values["mem"]}]
        metrics += [{"time": time, "name": "disk.used_pct", "value": used,
                     "labels": {"mount": mount}} for mount, used in values["disk"].items()]
        response = requests.post(url + "/api/v1/metrics", headers=headers, timeout=10,
                                 json={"host": host, "metrics": metrics})
        assert response.status_code == 202, response.text


def fleet_rows(driver: Any) -> list[list[str]]:
    return driver.execute_script(  # type: ignore[no-any-return]
        "return [...document.querySelectorAll('#fleet-rows tr[data-host]')].map(tr => "
        "[tr.dataset.host, ...[...tr.querySelectorAll('td.num .value')].map("
        "v => v.textContent)])")


def test_dashboard_fleet_table_sorts_by_each_column_and_links_to_hosts(
        sqlite_url: str, browser: Any) -> None:
    server = Gunicorn(sqlite_url)
    server.wait_ready()
    try:
        feed(server.url)
        feed_others(server.url)
        # HOST's newest values, as feed() wrote them: cpu total 20 + 59 % 7, mem 42.5, and its
        # fullest mount /data at 70 (/ is at 35.9).
        current = {HOST: {"cpu": 20.0 + 59 % 7, "mem": 42.5, "disk": 70.0},
                   **{h: {"cpu": v["cpu"], "mem": v["mem"], "disk": max(v["disk"].values())}
                      for h, v in OTHERS.items()}}
        token = mint_token(SECRET, scope="read", issuer="miniobserv")
        browser.get(f"{server.url}/?refresh=2#window=15m&token={token}")
        wait_until(browser, lambda d: len(fleet_rows(d)) == 3, "the fleet table")

        def expected(order: list[str]) -> list[list[str]]:
            return [[h, *(f"{current[h][k]:.1f} %" for k in ("cpu", "mem", "disk"))]
                    for h in order]

        assert fleet_rows(browser) == expected(sorted(current))
        header = {key: browser.find_element("css selector", f'#fleet button[data-sort="{key}"]')
                  for key in ("host", "cpu", "mem", "disk")}
        for key in ("cpu", "mem", "disk"):
            header[key].click()  # first click: highest first
            assert fleet_rows(browser) == expected(sorted(current, key=lambda h, k=key:
                                                          -current[h][k]))
        header["disk"].click()  # again: lowest first
        assert fleet_rows(browser) == expected(sorted(current, key=lambda h: current[h]["disk"]))
        header["cpu"].click()
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-fleet.png"))
        SAVED_ARTIFACTS.append(ARTIFACTS / "dashboard-fleet.png")
        browser.find_element("css selector", '#fleet-rows tr[data-host="db-01"] a').click()
        wait_until(browser, lambda d: d.execute_script(
            "return document.getElementById('host-title').textContent.includes('db-01') && "
            "location.hash.includes('host=db-01') && "
            "document.querySelectorAll('#charts .chart').length >= 3"), "db-01's charts")
        # A refresh keeps the chosen order.
        assert fleet_rows(browser) == expected(sorted(current, key=lambda h: -current[h]["cpu"]))
        assert console_errors(browser) == []
    finally:
        server.terminate()
