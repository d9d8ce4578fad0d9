"""The serving core through official clients: `openai` for the prefix cache,
and Prometheus's own text parser for `/metrics`, against the real server.

Each test starts its own `shelf serve` (real binary, SmolLM2) so the
counters it checks start from zero.
"""
import json
import os
import urllib.request

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL, shelf_server


@pytest.fixture
def server():
    with shelf_server("--ctx", "2048", "--parallel", "2") as base:
        yield base


def client(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)


def metrics(base):
    """Every sample, keyed by (name, sorted labels)."""
    text = urllib.request.urlopen(f"{base}/metrics").read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_second_turn_reports_cached_tokens(server):
    """A chat's next turn reuses its history: usage.prompt_tokens_details.cached_tokens
    covers the first turn, and the answer equals one computed without the cache."""
    c = client(server)
    history = "The archive holds letters from every harbour town. " * 40
    messages = [{"role": "user", "content": history + "What does the archive hold?"}]
    first = c.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=12)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Which towns?"}]
    second = c.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=12)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    fresh = c.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=12,
                                      extra_body={"cache_prompt": False})
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert fresh.choices[0].message.content == second.choices[0].message.content


def test_metrics_parse_and_count_a_known_sequence(server):
    """/metrics parses with Prometheus's parser, and its counters equal what a
    known sequence of requests did: by route and status, and by tokens."""
    c = client(server)
    usages = []
    for i in range(3):
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Count to {i + 2}."}],
                                      temperature=0, max_tokens=6)
        usages.append(r.usage)
    stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}],
                                       temperature=0, max_tokens=5, stream=True,
                                       stream_options={"include_usage": True})
    usages.append([ch for ch in stream][-1].usage)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=0)

    m = metrics(server)
    route = "/v1/chat/completions"
    assert m[("shelf_http_requests_total", (("route", route), ("status", "200")))] == 4
    assert m[("shelf_http_requests_total", (("route", route), ("status", "404")))] == 1
    assert m[("shelf_http_requests_total", (("route", route), ("status", "400")))] == 1
    model = (("model", MODEL),)
    assert m[("shelf_prompt_tokens_total", model)] == sum(u.prompt_tokens for u in usages)
    assert m[("shelf_generated_tokens_total", model)] == sum(u.completion_tokens for u in usages)
    assert m[("shelf_prompt_cached_tokens_total", model)] == sum(
        u.prompt_tokens_details.cached_tokens for u in usages)
    assert m[("shelf_time_to_first_token_seconds_count", model)] == 4
    assert m[("shelf_queue_wait_seconds_count", model)] == 4
    assert m[("shelf_runner_starts_total", model)] == 1
    assert m[("shelf_runner_crashes_total", model)] == 0
    assert m[("shelf_slots_total", model)] == 2
    assert m[("shelf_slots_busy", model)] == 0
    assert m[("shelf_queue_depth", model)] == 0
    assert m[("shelf_models_loaded", (("state", "ready"),))] == 1
    assert m[("shelf_model_memory_bytes", model)] > 0


def test_ps_reports_the_pinned_model(server):
    """/api/ps lists the model the server was started with, pinned, with its slots."""
    ps = json.load(urllib.request.urlopen(f"{server}/api/ps"))
    [entry] = ps["models"]
    assert entry["name"] == MODEL and entry["pinned"] and entry["slots"] == 2
    assert entry["pid"] and os.path.exists(f"/proc/{entry['pid']}")
