"""What the browser tests share: Debian's Chromium driven by Playwright (never a downloaded browser),
the admin login, and full-page screenshots under var/screenshots/ for reviewers (not committed)."""

from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"


@contextmanager
def chromium_page(*, language: str = "en", width: int = 1280, height: int = 900):
    """A page in a fresh headless Chromium. Open it after every fixture that touches the database:
    while Playwright's sync API runs, the test executes inside its event loop, where Django (rightly)
    refuses ORM calls."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required (make test installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="zh-CN" if language.startswith("zh") else "en-US",
                                extra_http_headers={"Accept-Language": language},
                                viewport={"width": width, "height": height})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()


def admin_log_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/admin/")


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
