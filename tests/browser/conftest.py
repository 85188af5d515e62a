"""A real browser: Debian's Chromium driven by Playwright."""

import os
import shutil

import pytest
from django.db import connections

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

# Playwright's sync API keeps an event loop in the test thread; the ORM calls the tests make
# between browser steps are synchronous and safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def page(tmp_path):
    """A page in a fresh Chromium, stopped after the test.

    While Playwright's loop runs, Django hands this thread context-local database connections.
    They are closed before the loop stops, so later tests get the thread's own connection back
    (the one that holds the data that serialized_rollback restores).
    """
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()
        connections.close_all()
