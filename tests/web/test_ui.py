"""The web chat in headless Chromium (Debian's, driven by Playwright) against
the real shelf binary serving SmolLM2. Each test saves a screenshot under
target/web-tests/TEST/ and fails if the page asked anything of another origin
(see conftest.py)."""
import json
import os
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import mock_registry, model_path, shelf_keys, shelf_server

SMOL = "smollm2-135m-instruct-q4_1"
SHELF = os.environ.get("SHELF_BIN", "target/debug/shelf")

# Put before the page's own scripts: when the first streamed answer bytes
# are read off the network, and when the answer's first text is on screen
# (the first animation frame after the DOM changed), both in page time.
TIMING = """
window.__firstChunkAt = null;
window.__firstTextAt = null;
const read = ReadableStreamDefaultReader.prototype.read;
ReadableStreamDefaultReader.prototype.read = async function () {
  const result = await read.call(this);
  if (!result.done && window.__firstChunkAt === null) {
    const text = new TextDecoder().decode(result.value);
    if (/"content":"[^"]/.test(text)) window.__firstChunkAt = performance.now();
  }
  return result;
};
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    if (window.__firstTextAt !== null || window.__textSeen) return;
    const body = document.querySelector(".message.assistant .body");
    if (body && body.textContent.trim()) {
      window.__textSeen = true;
      requestAnimationFrame(() => { window.__firstTextAt = performance.now(); });
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
});
"""


@pytest.fixture(scope="module")
def server():
    """SmolLM2 served from a fresh, writable store."""
    with tempfile.TemporaryDirectory() as store:
        with shelf_server("--parallel", "2", models=(SMOL,), models_dir=store) as base:
            yield base


def get(url, key=None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def pick_model(page, name=SMOL):
    page.select_option("#model", name)
    assert page.input_value("#model") == name


def send(page, text):
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_for_answer(page):
    """Until the answer has ended (Send is back) and been stored."""
    page.wait_for_selector("#send:not([hidden])", timeout=120_000)
    page.wait_for_selector(".message.assistant .speed:not(:empty)", timeout=30_000)


def test_the_page_loads_light_and_lists_the_models(server, open_page):
    """A browser at `/` is sent to the UI (API clients still get the plain
    answer), the first load is under 500 KB, and the picker shows the served
    model with its size and quantisation, marked loaded."""
    page = open_page(server)
    assert page.page.url == server + "/ui/"
    with urllib.request.urlopen(server + "/") as response:
        assert response.read() == b"Ollama is running"
    page.page.wait_for_selector(f"#model option[value='{SMOL}']", state="attached")
    pick_model(page.page)
    label = page.page.text_content(f"#model option[value='{SMOL}']")
    assert "Q4_1" in label and "MB" in label and "loaded" in label, label
    assert "loaded" in page.page.text_content("#model-info")
    transferred = page.page.evaluate(
        "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".reduce((sum, e) => sum + e.transferSize, 0)")
    assert 0 < transferred < 500_000, transferred


def test_a_message_gets_a_streamed_answer_shown_as_it_arrives(server, open_page, browser):
    """Sent with the keyboard, the answer streams into the page: its first
    token is on screen within 100 ms of arriving over the API, the text
    grows in several steps, and the speeds show under it."""
    page = open_page(server)
    page.page.add_init_script(TIMING)
    page.page.reload(wait_until="load")
    page.page.wait_for_selector(f"#model option[value='{SMOL}']", state="attached")
    pick_model(page.page)
    page.page.evaluate("""() => {
      window.__lengths = new Set();
      new MutationObserver(() => {
        const body = document.querySelector('.message.assistant .body');
        if (body) window.__lengths.add(body.textContent.length);
      }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});
    }""")
    send(page.page, "Write three sentences about the sea.")
    wait_for_answer(page.page)
    chunk_at, text_at = page.page.evaluate("[window.__firstChunkAt, window.__firstTextAt]")
    assert chunk_at is not None and text_at is not None
    assert text_at - chunk_at < 100, f"first token shown {text_at - chunk_at:.1f} ms after it arrived"
    assert page.page.evaluate("window.__lengths.size") > 3
    speed = page.page.text_content(".message.assistant .speed")
    assert "prefill" in speed and "decode" in speed and "t/s" in speed, speed
    assert page.page.text_content(".message.user .body") == "Write three sentences about the sea."


def test_stop_ends_a_long_answer_and_frees_the_slot(server, open_page):
    """Stop mid-answer: the request is cancelled, the server frees the slot
    (`/api/ps` shows no busy slot), and the partial answer is kept, marked
    stopped."""
    page = open_page(server)
    page.page.wait_for_selector(f"#model option[value='{SMOL}']", state="attached")
    pick_model(page.page)
    send(page.page, "Write a very long story about a lighthouse keeper, in many chapters.")
    page.page.wait_for_function(
        "() => document.querySelector('.message.assistant .body')?.textContent.trim().length > 0",
        timeout=60_000)
    page.page.click("#stop")
    page.page.wait_for_selector("#send:not([hidden])")
    deadline = time.monotonic() + 10
    while True:
        [model] = [m for m in get(server + "/api/ps")["models"] if m["name"] == SMOL]
        if model["busy_slots"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert model["busy_slots"] == 0, model
    page.page.wait_for_selector(".message.assistant .speed:has-text('stopped')")


def test_a_conversation_survives_a_reload_and_can_be_deleted(server, open_page):
    """The conversation is kept on the server: after a reload it is in the
    list and opens with its messages; deleting it removes it from the list
    and from the server."""
    page = open_page(server)
    page.page.wait_for_selector(f"#model option[value='{SMOL}']", state="attached")
    pick_model(page.page)
    send(page.page, "Name a colour of the rainbow, zebrafinch.")
    wait_for_answer(page.page)
    page.page.goto(server + "/ui/", wait_until="load")
    item = page.page.locator("#conversations button", has_text="zebrafinch")
    item.wait_for()
    item.click()
    page.page.wait_for_selector(".message.user .body:has-text('zebrafinch')")
    assert page.page.locator(".message.assistant").count() == 1
    ids = [c["id"] for c in get(server + "/api/conversations?q=zebrafinch")["conversations"]]
    assert len(ids) == 1
    page.page.once("dialog", lambda dialog: dialog.accept())
    page.page.click("#delete")
    page.page.wait_for_function("() => !document.querySelector('#conversations').textContent.includes('zebrafinch')")
    assert get(server + "/api/conversations?q=zebrafinch")["conversations"] == []


def test_a_pull_shows_its_progress_to_100_percent_and_delete_removes_it(server, open_page):
    """Pulling from the loopback registry in the Models dialog moves the
    progress bar to 100%, the new model is listed, and Delete removes it
    from the store."""
    with mock_registry("library/tiny:latest", model_path(SMOL)) as registry:
        name = f"{registry.removeprefix('http://')}/library/tiny:latest"
        page = open_page(server)
        page.page.click("#open-models")
        page.page.fill("#pull-name", name)
        page.page.check("#pull-insecure")
        page.page.evaluate("""() => {
          window.__progress = [];
          const bar = document.getElementById('pull-progress');
          new MutationObserver(() => window.__progress.push(bar.value))
            .observe(bar, {attributes: true});
        }""")
        page.page.click("#pull")
        page.page.wait_for_selector("#pull-status:has-text('success: 100%')", timeout=120_000)
        assert page.page.eval_on_selector("#pull-progress", "bar => bar.value") == 100
        page.page.wait_for_selector(f"#models-table td:has-text('{name}')")
        # And deleted again from the same dialog.
        page.page.once("dialog", lambda dialog: dialog.accept())
        page.page.click(f"#models-table button[aria-label='Delete {name}']")
        page.page.wait_for_selector(f"#models-table td:has-text('{name}')", state="detached")
        assert name not in [m["name"] for m in get(server + "/api/tags")["models"]]


def test_with_keys_on_the_page_asks_for_one(open_page):
    """With keys on, the page still loads, asks for a key, refuses a wrong
    one, and lets the user in with a right one (kept in the browser)."""
    with tempfile.TemporaryDirectory() as home:
        db = os.path.join(home, "keys.db")
        key = shelf_keys(db, "create", "browser")
        with shelf_server(models=(SMOL,), keys=db) as base:
            page = open_page(base)
            page.page.wait_for_selector("#key-dialog[open]")
            assert page.page.locator("#model option").count() == 0
            page.page.fill("#key", "sk-shelf-wrong")
            page.page.press("#key", "Enter")
            page.page.wait_for_selector("#key-error:has-text('refused')")
            page.page.fill("#key", key)
            page.page.press("#key", "Enter")
            page.page.wait_for_selector(f"#model option[value='{SMOL}']", state="attached")
            assert not page.page.is_visible("#key-dialog")
            assert page.page.evaluate("localStorage.getItem('shelf.apiKey')") == key


def test_at_phone_width_nothing_scrolls_sideways(server, open_page):
    """At 390 px wide the page has no horizontal scroll, with an answer,
    a long unbroken line and the conversation list open."""
    page = open_page(server, width=390, height=844)
    page.page.wait_for_selector(f"#model option[value='{SMOL}']", state="attached")
    pick_model(page.page)
    send(page.page, "Write a Python function that adds two numbers, named add_" + "x" * 300)
    # The answer is sampled and now and then runs on to the window's end
    # (minutes on a busy 2-core box): once it holds a few lines it is
    # stopped, if it has not ended. Stop does nothing after the end.
    page.page.wait_for_function(
        "() => { const body = document.querySelector('.message.assistant .body');"
        " return body && (!document.querySelector('#send').hidden"
        " || body.textContent.length > 300); }",
        timeout=60_000)
    page.page.evaluate("document.querySelector('#stop').click()")
    wait_for_answer(page.page)
    wide = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    assert page.page.evaluate(wide) <= 0
    page.page.click("#toggle-sidebar")
    page.page.wait_for_selector("#sidebar.open")
    assert page.page.evaluate(wide) <= 0


def test_dark_theme_follows_the_system_and_the_planner_answers(server, open_page):
    """With the system in dark mode the page is dark; the Models dialog is
    keyboard-reachable and shows the planner's "will it fit?" for the
    catalog on this box, through the public `/api/fit`."""
    page = open_page(server, scheme="dark")
    background = page.page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(x) for x in background[background.index("(") + 1:-1].split(",")[:3])
    assert red + green + blue < 150, background
    page.page.focus("#open-models")
    page.page.keyboard.press("Enter")
    page.page.wait_for_selector("#models-dialog[open]")
    page.page.click("#fit")
    page.page.wait_for_selector("#fit-table:not([hidden]) tbody tr")
    rows = page.page.locator("#fit-table tbody tr").count()
    assert rows == len(get(server + "/api/fit")["rows"]) > 0
    assert page.page.locator("#fit-table tbody tr", has_text="Q4_K_M").count() > 0


def test_the_assistant_is_in_the_picker_and_its_citations_open_their_lines(open_page, tmp_path):
    """With an assistant model, `assistant` is in the picker; a citation in
    one of its answers is a link that opens the cited lines of the watched
    file (through `/api/assistant/lines`)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "lease.md").write_text("Lease of Unit 4\nRent: EUR 1,200 a month\nNotice: three months\n")
    db = str(tmp_path / "assistant.db")
    subprocess.run([SHELF, "--assistant-db", db, "watch", "add", str(folder), "--name", "docs"],
                   check=True, capture_output=True)
    with shelf_server("--assistant-model", model_path(SMOL), models=(SMOL,), assistant_db=db) as base:
        answer = "The rent is EUR 1,200 a month [docs/lease.md:2-3]."
        body = json.dumps({"model": "assistant", "messages": [
            {"role": "user", "content": "What is the rent?"},
            {"role": "assistant", "content": answer}]}).encode()
        request = urllib.request.Request(base + "/api/conversations", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            conversation = json.load(response)
        page = open_page(base)
        page.page.wait_for_selector("#model option[value='assistant']", state="attached")
        page.page.click(f"#conversations button[data-id='{conversation['id']}']")
        link = page.page.locator("a.cite")
        link.wait_for()
        assert link.text_content() == "[docs/lease.md:2-3]"
        link.click()
        page.page.wait_for_selector("#viewer[open]")
        assert page.page.text_content("#viewer-heading") == "docs/lease.md:2-3"
        assert page.page.text_content("#viewer-text") == "2| Rent: EUR 1,200 a month\n3| Notice: three months"


def test_edit_regenerate_settings_search_rename_and_export(server, open_page):
    """The rest of a conversation's life in the page: its system prompt and
    temperature are kept with it, editing a question drops what followed and
    asks again, Regenerate replaces the last answer, search finds it by a
    word, rename changes its title, and the Markdown export holds the turns."""
    page = open_page(server)
    p = page.page
    p.wait_for_selector(f"#model option[value='{SMOL}']", state="attached")
    pick_model(p)
    p.click("#settings summary")
    p.fill("#system", "You answer in one short sentence.")
    p.fill("#temperature", "0.2")
    send(p, "What colour is the sky, quetzal?")
    wait_for_answer(p)
    [listed] = get(server + "/api/conversations?q=quetzal")["conversations"]
    kept = get(server + f"/api/conversations/{listed['id']}")
    assert kept["system"] == "You answer in one short sentence." and kept["temperature"] == 0.2

    p.click(".message.user .tools button:has-text('Edit')")
    p.fill(".message.user textarea", "What colour is grass, quetzal?")
    p.click(".message.user .tools button:has-text('Send')")
    wait_for_answer(p)
    kept = get(server + f"/api/conversations/{listed['id']}")
    assert [m["role"] for m in kept["messages"]] == ["user", "assistant"]
    assert kept["messages"][0]["content"] == "What colour is grass, quetzal?"

    p.click(".message.assistant .tools button:has-text('Regenerate')")
    wait_for_answer(p)
    kept = get(server + f"/api/conversations/{listed['id']}")
    assert [m["role"] for m in kept["messages"]] == ["user", "assistant"]

    p.fill("#search", "quetzal")
    p.wait_for_selector("#conversations .snippet")
    assert p.locator("#conversations button").count() == 1
    p.once("dialog", lambda dialog: dialog.accept("Grass and sky"))
    p.click("#rename")
    p.wait_for_selector("#title:has-text('Grass and sky')")
    with p.expect_download() as download:
        p.click("#export-md")
    text = open(download.value.path()).read()
    assert text.startswith("# Grass and sky\n") and "## User\n\nWhat colour is grass, quetzal?" in text
