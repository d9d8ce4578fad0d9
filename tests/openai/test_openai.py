"""The official `openai` Python client against a real `shelf serve` with SmolLM2.

Each test states the behaviour it guards. The server is the real binary
(SHELF_BIN) on a free loopback port, started once for the module.
"""
import openai
import pytest

from conftest import MODEL, shelf_server

# Each answer compared computes its whole prompt: one over a cached prompt may
# flip a greedy near tie (docs/serving.md), and the stream is what is under test.
FRESH = {"cache_prompt": False}


@pytest.fixture(scope="module")
def server():
    with shelf_server("--ctx", "1024") as base:
        yield base


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_chat_non_streamed(client):
    """A chat completion comes back whole, with usage that adds up."""
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=12)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_streamed_equals_non_streamed(client):
    """Streaming yields the same greedy text, then a usage chunk when asked."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=12,
                                           extra_body=FRESH)
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True}, extra_body=FRESH)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason


def test_completions(client):
    """The legacy completions API continues a prompt, streamed or not."""
    r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0,
                                  extra_body=FRESH)
    assert r.object == "text_completion"
    assert r.usage.completion_tokens <= 8
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True,
            extra_body=FRESH) if c.choices)
    assert streamed == r.choices[0].text


def test_models_list(client):
    """The served model is listed."""
    assert MODEL in [m.id for m in client.models.list().data]


def test_models_retrieve(client):
    """A listed model can be fetched by id; an unknown id is 404."""
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unknown_model_is_404(client):
    """An unknown model is NotFoundError in OpenAI's shape."""
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"


def test_invalid_values_are_4xx(client):
    """Empty messages and out-of-range values are client errors, never 5xx."""
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=[])
    assert 400 <= e.value.status_code < 500
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=-3)
    assert 400 <= e.value.status_code < 500


def test_context_overflow_then_recovery(client):
    """A prompt over the context is a 400 context_length_exceeded; the next request works."""
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 3000}])
    assert e.value.body["code"] == "context_length_exceeded"
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.choices[0].message.content is not None


def test_scoring_a_continuation_gives_the_logprobs_it_was_generated_with(client):
    """echo with logprobs and max_tokens 0 (lm-evaluation-harness's loglikelihood)
    scores every prompt token but the first; scoring a greedy continuation gives
    the log probabilities it was generated with."""
    prompt = "The capital of France is"
    generated = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=2)
    lp = generated.choices[0].logprobs
    assert len(lp.tokens) == generated.usage.completion_tokens == len(lp.token_logprobs)
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    assert all(v <= 0 for v in lp.token_logprobs)

    scored = client.completions.create(model=MODEL, prompt=prompt + generated.choices[0].text,
                                       max_tokens=0, echo=True, logprobs=1, temperature=0)
    choice = scored.choices[0]
    assert choice.text == prompt + generated.choices[0].text
    assert len(choice.logprobs.tokens) == scored.usage.prompt_tokens
    assert choice.logprobs.token_logprobs[0] is None
    assert scored.usage.completion_tokens == 0
    # Word-boundary text: retokenizing the continuation gives the same tokens.
    assert choice.logprobs.tokens[-len(lp.tokens):] == lp.tokens
    for scored_value, generated_value in zip(choice.logprobs.token_logprobs[-len(lp.tokens):], lp.token_logprobs):
        assert abs(scored_value - generated_value) < 0.05


def test_streamed_completion_logprobs_equal_the_whole_answers(client):
    """Streamed chunks carry the log probabilities of the tokens whose text
    they carry; together they equal the non-streamed answer's."""
    args = dict(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0, logprobs=2)
    whole = client.completions.create(**args).choices[0].logprobs
    tokens, values = [], []
    for chunk in client.completions.create(stream=True, **args):
        if chunk.choices and chunk.choices[0].logprobs:
            tokens += chunk.choices[0].logprobs.tokens
            values += chunk.choices[0].logprobs.token_logprobs
    assert tokens == whole.tokens
    assert all(abs(a - b) < 1e-4 for a, b in zip(values, whole.token_logprobs))
