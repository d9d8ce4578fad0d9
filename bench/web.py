"""The web chat's two numbers, in Debian's Chromium against the real binary
serving SmolLM2: the first load's transfer (bar: under 500 KB) and how long
after an answer's first token arrives over the API it is on screen (bar:
100 ms), over several answers.

Usage: python3 bench/web.py [--answers N]   (SHELF_BIN, default target/release/shelf)
Exits 1 when a bar is missed."""
import argparse
import importlib.util
import os
import statistics
import sys

HERE = os.path.dirname(__file__)


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "..", path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--answers", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("SHELF_BIN", "target/release/shelf")
    web = load("web_conftest", "tests/web/conftest.py")
    sys.modules["conftest"] = web  # what the tests import their helpers from
    ui = load("web_tests", "tests/web/test_ui.py")
    from playwright.sync_api import sync_playwright

    with web.shelf_server(models=(ui.SMOL,)) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=web.CHROMIUM, headless=True, args=web.FLAGS)
        page = browser.new_context().new_page()
        page.add_init_script(ui.TIMING)
        page.goto(base + "/", wait_until="load")
        weight = page.evaluate(
            "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".reduce((sum, e) => sum + e.transferSize, 0)")
        lags = []
        for i in range(args.answers):
            page.goto(base + "/ui/", wait_until="load")
            page.wait_for_selector(f"#model option[value='{ui.SMOL}']", state="attached")
            ui.pick_model(page)
            ui.send(page, f"Say something about the number {i}.")
            ui.wait_for_answer(page)
            chunk_at, text_at = page.evaluate("[window.__firstChunkAt, window.__firstTextAt]")
            lags.append(text_at - chunk_at)
        browser.close()
    print(f"first load: {weight / 1000:.1f} KB transferred (bar 500 KB)")
    print(f"first token to screen: median {statistics.median(lags):.1f} ms, max {max(lags):.1f} ms "
          f"over {len(lags)} answers (bar 100 ms)")
    if weight >= 500_000 or max(lags) >= 100:
        sys.exit(1)


if __name__ == "__main__":
    main()
