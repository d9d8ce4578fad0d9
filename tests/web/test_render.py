"""How the web chat shows what a model sends, in Debian's Chromium: the
chat route's answer is replaced (Playwright's `route`) by a canned stream,
since no test model reasons, calls tools or writes hostile HTML on demand.
The page itself, and every other route, is the real server's."""
import json

from conftest import shelf_server

SMOL = "smollm2-135m-instruct-q4_1"


def stream(*deltas, timings=None):
    """An OpenAI chat stream of `deltas`, then the finish with `timings`."""
    chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "timings": timings or {"prompt_per_second": 812.5, "predicted_per_second": 41.25}})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def answer_with(page, body, question="Hello"):
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    page.wait_for_selector(f"#model option[value='{SMOL}']", state="attached")
    page.fill("#prompt", question)
    page.press("#prompt", "Enter")
    page.wait_for_selector("#send:not([hidden])")
    page.wait_for_selector(".message.assistant .speed:not(:empty)")


def test_reasoning_is_collapsed_tool_calls_listed_and_code_highlighted(open_page):
    """Reasoning arrives collapsed, a tool call is listed with its arguments,
    code is highlighted with a copy button, and the speeds show."""
    with shelf_server(models=(SMOL,)) as base:
        page = open_page(base).page
        body = stream(
            {"role": "assistant", "reasoning_content": "The user greets; "},
            {"reasoning_content": "answer with code."},
            {"content": "Here:\n\n```python\nprint('hi')\n```\n"},
            {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": "{\"city\": "}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]},
        )
        answer_with(page, body)
        reasoning = page.locator(".message.assistant details.reasoning")
        assert reasoning.count() == 1 and not reasoning.get_attribute("open")
        assert reasoning.text_content() == "ReasoningThe user greets; answer with code."
        call = page.locator(".message.assistant .calls details")
        assert call.locator("summary").text_content() == "Tool call: get_weather"
        assert call.locator("pre").text_content() == '{"city": "Paris"}'
        assert page.locator(".message.assistant pre code.hljs .hljs-built_in").count() >= 1
        assert page.locator(".message.assistant pre button.copy").text_content() == "Copy"
        assert page.text_content(".message.assistant .speed") == "prefill 812.5 t/s · decode 41.3 t/s · 7 tokens"


def test_html_in_an_answer_never_runs(open_page):
    """A model's answer is untrusted: script tags, event handlers and
    javascript: links in it are removed before it reaches the page."""
    with shelf_server(models=(SMOL,)) as base:
        page = open_page(base).page
        hostile = ("Look <img src=x onerror=\"window.__pwned=1\"> and "
                   "<script>window.__pwned=2</script> [here](javascript:window.__pwned=3) "
                   "<a href=\"javascript:window.__pwned=4\">there</a>")
        answer_with(page, stream({"role": "assistant", "content": hostile}))
        body = page.inner_html(".message.assistant .body")
        assert "onerror" not in body and "<script" not in body and "javascript:" not in body, body
        for link in page.locator(".message.assistant .body a").all():
            link.click()
        assert page.evaluate("window.__pwned") is None
