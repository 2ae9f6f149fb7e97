"""Headless Chromium (Debian's chromium and chromium-driver) driven by selenium against a live server.

Screenshots go to var/screenshots/ (not committed). Sessions are planted as cookies where a test is not
about signing in (tests.support.auth.signed_in makes them), so each test drives only what it is about.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.billing.conftest import payment  # noqa: F401 - a real payment in localstripe, for refunds

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
WAIT_SECONDS = 30  # generous: up to 8 helpers share 2 cores


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS * 2)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, css: str) -> Any:
    return WebDriverWait(driver, WAIT_SECONDS).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


# How chromedriver sometimes reports an element of a replaced page instead of as stale (SeleniumHQ/selenium#15401),
# which selenium's staleness_of raises rather than reading as "gone".
_GONE_NODE_MESSAGES = ("does not belong to the document", "No node with given id found")


def wait_until_gone(driver: WebDriver, element: Any) -> None:
    """Wait until the page holding the element has been replaced (a form's answer has arrived)."""

    def gone(_: WebDriver) -> bool:
        try:
            element.is_enabled()
        except (StaleElementReferenceException, NoSuchElementException):
            return True
        except WebDriverException as error:
            if any(message in str(error.msg) for message in _GONE_NODE_MESSAGES):
                return True
            raise
        return False

    WebDriverWait(driver, WAIT_SECONDS).until(gone)


def plant_session(driver: WebDriver, base_url: str, client: Any) -> None:
    """Give the browser the session of a test client that is already signed in (both factors)."""
    driver.get(f"{base_url}/healthz")  # a page of the origin, so its cookie can be set
    driver.add_cookie(
        {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value, "path": "/"}
    )


def screenshot(driver: WebDriver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
