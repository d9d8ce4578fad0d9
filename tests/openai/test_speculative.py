"""Speculative decoding through the official clients, against the real server
serving Qwen2.5-Coder 1.5B with the 0.5B as its draft model and prompt lookup."""
import os
import subprocess
import tempfile
import urllib.request

import anthropic
import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import model_path, shelf_server

QWEN = "qwen2.5-coder-1.5b-instruct-q4_k_m"
DRAFT = "qwen2.5-coder-0.5b-instruct-q4_k_m"
SMOLLM2 = "smollm2-135m-instruct-q4_1"
ASK = "Repeat this line twice: the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def server():
    # Drafting a fixed amount makes every answer speculate; short answers stay
    # within the CPU's exact envelope, so greedy answers must equal plain ones.
    with shelf_server("--draft", model_path(DRAFT), "--speculate", "ngram", "--draft-fixed",
                      "--draft-max", "4", "--keep-alive", "-1", models=(QWEN,)) as base:
        yield base


def test_openai_reports_drafted_tokens_and_greedy_answers_do_not_change(server):
    """OpenAI's own usage fields carry what was drafted and kept, streamed or not,
    and a greedy answer equals the one given with speculation off."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    messages = [{"role": "user", "content": ASK}]
    # Every answer computes its whole prompt: one over a cached prompt may flip
    # a greedy near tie whatever drafted it (docs/serving.md).
    fresh = {"cache_prompt": False}
    spec = client.chat.completions.create(model=QWEN, messages=messages, temperature=0, max_tokens=48,
                                          extra_body=fresh)
    details = spec.usage.completion_tokens_details
    assert details is not None and details.accepted_prediction_tokens > 0, spec.usage
    plain = client.chat.completions.create(model=QWEN, messages=messages, temperature=0, max_tokens=48,
                                           extra_body={"speculative": {"n_max": 0}, **fresh})
    assert plain.usage.completion_tokens_details is None
    assert spec.choices[0].message.content == plain.choices[0].message.content

    stream = client.chat.completions.create(model=QWEN, messages=messages, temperature=0, max_tokens=48,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body=fresh)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens_details.accepted_prediction_tokens > 0


def test_a_prediction_is_drafted_from(server):
    """OpenAI's predicted outputs feed prompt lookup: the predicted text is kept."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    code = "def add(a, b):\n    return a + b\n"
    answer = client.chat.completions.create(
        model=QWEN, temperature=0, max_tokens=40,
        messages=[{"role": "user", "content": "Rename add to plus in this code and reply with the code only:\n" + code}],
        prediction={"type": "content", "content": code.replace("add", "plus")},
        extra_body={"speculative": {"draft": False}},
    )
    assert answer.usage.completion_tokens_details.accepted_prediction_tokens > 0, answer.usage


def test_ollama_and_anthropic_report_drafted_tokens(server):
    """Ollama's options carry the extension (here: lookup only) and its final
    object the counts; Anthropic's usage carries them too."""
    client = ollama.Client(host=server)
    # The typed response drops fields Ollama lacks: read the same call's JSON.
    raw = client._client.post("/api/chat", json={
        "model": QWEN, "stream": False, "messages": [{"role": "user", "content": ASK}],
        "options": {"temperature": 0, "num_predict": 40, "speculative": {"draft": False, "ngram": True}},
    }).json()
    assert raw["speculative"]["drafted_tokens"] >= raw["speculative"]["accepted_tokens"] > 0, raw
    typed = client.chat(model=QWEN, messages=[{"role": "user", "content": ASK}],
                        options={"temperature": 0, "num_predict": 40, "speculative": {"n_max": 0}})
    assert typed.message.content == raw["message"]["content"]

    message = anthropic.Anthropic(base_url=server, api_key="none").messages.create(
        model=QWEN, max_tokens=40, temperature=0, messages=[{"role": "user", "content": ASK}])
    counts = message.usage.model_extra["speculative"]
    assert counts["drafted_tokens"] >= counts["accepted_tokens"] > 0, message.usage


def test_metrics_show_the_acceptance_by_model(server):
    """/metrics counts drafted and accepted tokens and their ratio per model."""
    openai.OpenAI(base_url=f"{server}/v1", api_key="none").chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": ASK}], temperature=0, max_tokens=24)
    text = urllib.request.urlopen(f"{server}/metrics").read().decode()
    samples = {(s.name, s.labels.get("model")): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    drafted = samples[("shelf_speculative_drafted_tokens_total", QWEN)]
    accepted = samples[("shelf_speculative_accepted_tokens_total", QWEN)]
    assert drafted >= accepted > 0
    assert abs(samples[("shelf_speculative_acceptance_ratio", QWEN)] - accepted / drafted) < 1e-6


def test_a_draft_with_another_vocabulary_stops_the_server_with_why():
    """`serve --draft` with an incompatible pair exits before serving, naming the problem."""
    keys = os.path.join(tempfile.mkdtemp(), "keys.db")
    proc = subprocess.run(
        [os.environ.get("SHELF_BIN", "target/debug/shelf"), "serve", "--addr", "127.0.0.1:0",
         "--model", model_path(QWEN), "--draft", model_path(SMOLLM2), "--threads", "2",
         "--models-dir", os.environ.get("TMPDIR", "/tmp"), "--keys", keys],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "SHELF_LOG": "error"},
    )
    assert proc.returncode != 0
    assert "cannot draft for this model" in proc.stderr and "vocabulary" in proc.stderr, proc.stderr
