"""What the browser tests of the interfaces share: a superuser to log in with, and a page in a fresh
headless Chromium whose admin speaks Chinese."""

import pytest

from tests.interfaces.browser import chromium_page


@pytest.fixture
def superuser(make_staff):
    """The superuser "operator" (password tests.conftest.STAFF_PASSWORD)."""
    return make_staff("operator")


@pytest.fixture
def browser_page():
    """Open it after every fixture that touches the database (see browser.chromium_page)."""
    with chromium_page(language="zh-hans") as page:
        yield page
