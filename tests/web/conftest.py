"""Fixtures for the web chat's browser tests: Debian's Chromium driven by
Playwright, a log of every request the page makes, and a screenshot of each
test's page under its output folder."""
import importlib.util
import os
import re

import pytest
from playwright.sync_api import sync_playwright

# The API tests' helpers (a server on the real binary, keys, test models),
# loaded under their own name: both folders' helpers are called conftest.
_spec = importlib.util.spec_from_file_location(
    "serving", os.path.join(os.path.dirname(__file__), "..", "openai", "conftest.py"))
serving = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serving)
model_path, shelf_keys, shelf_server = serving.model_path, serving.shelf_keys, serving.shelf_server
mock_registry = serving.mock_registry

CHROMIUM = os.environ.get("SHELF_CHROMIUM", "/usr/bin/chromium")
# Where each test's screenshot goes: a folder per test.
OUTPUT = os.environ.get("SHELF_TEST_OUTPUT", os.path.join("target", "web-tests"))

# Without the background-networking flags Chromium reaches for Google's
# hosts at start; none of that is the page's doing, and the machine is closed.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions"]


@pytest.fixture(scope="session")
def browser():
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run scripts/setup.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


class Page:
    """A browser page on one server, with every request it made."""

    def __init__(self, page, base):
        self.page = page
        self.base = base
        self.requests = []
        page.on("request", lambda r: self.requests.append(r.url))

    def outside_requests(self):
        return [u for u in self.requests
                if not (u.startswith(self.base + "/") or u.startswith(("data:", "blob:")))]


@pytest.fixture
def open_page(browser, request):
    """`open_page(base, width=1280)`: a fresh page at the chat UI. After the
    test, its screenshot is saved and the page must have asked nothing of
    any origin but the server's."""
    opened = []

    def open_(base, width=1280, height=800, scheme="light"):
        context = browser.new_context(viewport={"width": width, "height": height},
                                      reduced_motion="reduce", color_scheme=scheme)
        page = Page(context.new_page(), base)
        opened.append((context, page))
        page.page.goto(base + "/", wait_until="load")
        return page

    yield open_
    folder = os.path.join(OUTPUT, re.sub(r"[^\w.-]", "_", request.node.name))
    os.makedirs(folder, exist_ok=True)
    for i, (context, page) in enumerate(opened):
        page.page.screenshot(path=os.path.join(folder, f"page{i}.png"), full_page=True)
        outside = page.outside_requests()
        context.close()
        assert not outside, f"requests outside the server: {outside}"
