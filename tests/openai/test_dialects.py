"""Tools, structured output, embeddings and the Ollama and Anthropic dialects,
through their official Python clients against the real server and real models."""
import base64
import json
import os
import subprocess
import sys

import anthropic
import jsonschema
import numpy as np
import ollama
import openai
import pytest

from conftest import MODEL, mock_registry, model_path, settled, shelf_server

QWEN = "qwen2.5-coder-1.5b-instruct-q4_k_m"
MINILM = "all-minilm-l6-v2-f16"

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
    },
}
ASK = "What is the weather in Paris right now? Use the tool."

SCHEMAS = {
    "nested": {"type": "object", "properties": {
        "person": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                                    "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]}},
                   "required": ["name", "address"]}}, "required": ["person"]},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    "array": {"type": "object", "properties": {"fruits": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 2, "maxItems": 4}}, "required": ["fruits"]},
    "required": {"type": "object", "properties": {"title": {"type": "string", "maxLength": 60}, "year": {"type": "integer"}, "note": {"type": "string", "maxLength": 20}}, "required": ["title", "year"]},
    "bounds": {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 10}, "count": {"type": "integer", "minimum": 3, "maximum": 7}}, "required": ["score", "count"]},
}
PROMPT = "Describe a famous film, a fruit bowl, a person or a color as JSON."


@pytest.fixture(scope="module")
def server():
    with shelf_server("--keep-alive", "-1", models=(QWEN, MINILM)) as base:
        yield base


def test_openai_tool_round_trip_streamed_and_not(server):
    """A tool call comes back with an id and finish_reason tool_calls, the same
    streamed or not; the tool's result then yields a text answer."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    messages = [{"role": "user", "content": ASK}]
    tools = [{"type": "function", "function": WEATHER}]
    whole = client.chat.completions.create(model=QWEN, messages=messages, tools=tools, temperature=0, max_tokens=80)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    assert "paris" in json.loads(call.function.arguments)["city"].lower()

    streamed_args, names, ids, fragments = "", [], [], 0
    finish = None
    for chunk in client.chat.completions.create(model=QWEN, messages=messages, tools=tools, temperature=0, max_tokens=80, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            assert tc.index == 0
            if tc.function.name:
                names.append(tc.function.name)
            if tc.id:
                ids.append(tc.id)
            streamed_args += tc.function.arguments or ""
            fragments += bool(tc.function.arguments)
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"] and len(ids) == 1 and finish == "tool_calls"
    assert fragments > 1, "arguments stream as they are generated"
    assert json.loads(streamed_args) == json.loads(call.function.arguments)

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18 degrees Celsius and sunny"}]
    # The 1.5B model tends to call again after a result; the round trip's last
    # turn asks for the answer in text, as agent loops do once a call is answered.
    final = client.chat.completions.create(model=QWEN, messages=messages, tools=tools, tool_choice="none",
                                           temperature=0, max_tokens=60)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert "18" in final.choices[0].message.content, final.choices[0].message.content


def test_required_tool_choice_forces_a_valid_call(server):
    """tool_choice 'required' and a named function force a well-formed call
    even for a question that needs none."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "Say hello."}],
                                           tools=[{"type": "function", "function": WEATHER}], tool_choice=choice,
                                           temperature=0, max_tokens=60)
        call = r.choices[0].message.tool_calls[0]
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["parameters"])


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_schema_answers_validate_in_both_dialects(server, name):
    """Every answer under a JSON schema validates against it, through OpenAI's
    response_format and Ollama's format."""
    schema = SCHEMAS[name]
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    r = client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=200,
        response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    o = ollama.Client(host=server).chat(model=QWEN, messages=[{"role": "user", "content": PROMPT}],
                                        format=schema, options={"temperature": 0, "num_predict": 200})
    jsonschema.validate(json.loads(o.message.content), schema)


def test_unenforceable_schema_is_a_400_naming_the_keyword(server):
    """A schema keyword that cannot be enforced is refused by name, in each dialect's shape."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x+$"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "x"}],
                                       response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    assert "pattern" in str(caught.value)
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=server).chat(model=QWEN, messages=[{"role": "user", "content": "x"}], format=schema)
    assert caught.value.status_code == 400 and "pattern" in caught.value.error


def reference(texts):
    out = subprocess.run([sys.executable, "scripts/convert-minilm.py", "--reference", *texts],
                         check=True, capture_output=True, text=True).stdout
    return [np.array(r["embedding"]) for r in json.loads(out)["results"]]


def cosine(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_embeddings_match_a_numpy_reference_in_both_dialects(server):
    """MiniLM's embeddings through /v1/embeddings (float and base64) and /api/embed
    match a numpy forward pass over the safetensors weights."""
    texts = ["The cat sat on the mat.", "Quantum tunnelling, explained simply!", "naïve café résumé"]
    expected = reference(texts)
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    got = client.embeddings.create(model=MINILM, input=texts)
    assert [d.index for d in got.data] == [0, 1, 2] and got.usage.prompt_tokens > 0
    for d, e in zip(got.data, expected):
        assert cosine(d.embedding, e) >= 0.999
    # Asked for explicitly, base64 comes back undecoded: little-endian f32s.
    b64 = client.embeddings.create(model=MINILM, input=texts[0], encoding_format="base64")
    raw = np.frombuffer(base64.b64decode(b64.data[0].embedding), dtype="<f4")
    assert cosine(raw, expected[0]) >= 0.999
    o = ollama.Client(host=server).embed(model=MINILM, input=texts)
    for v, e in zip(o.embeddings, expected):
        assert cosine(v, e) >= 0.999


def test_chat_and_embedding_models_refuse_each_others_requests(server):
    """A chat request to an embedding model, and the reverse, are 400s."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MINILM, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=QWEN, input="hi")


def test_ollama_client_lists_shows_chats_generates_and_reports_ps(server):
    """The ollama client's list, show, chat (streamed and not), generate and ps work unchanged."""
    client = ollama.Client(host=server)
    names = [m.model for m in client.list().models]
    assert QWEN in names and MINILM in names
    shown = client.show(QWEN)
    assert "tools" in shown.capabilities and shown.details.family == "qwen2"
    assert "embedding" in client.show(MINILM).capabilities
    r = settled(lambda: client.chat(model=QWEN, messages=[{"role": "user", "content": "Say hi in one word."}],
                                    options={"temperature": 0, "num_predict": 8}))
    assert r.done and r.message.content and r.eval_count > 0 and r.total_duration > 0
    streamed = "".join(part.message.content for part in client.chat(
        model=QWEN, messages=[{"role": "user", "content": "Say hi in one word."}],
        options={"temperature": 0, "num_predict": 8}, stream=True))
    assert streamed == r.message.content
    g = client.generate(model=QWEN, prompt="2+2=", options={"temperature": 0, "num_predict": 4})
    assert g.done and g.response
    running = [m.model for m in client.ps().models]
    assert QWEN in running
    tool = client.chat(model=QWEN, messages=[{"role": "user", "content": ASK}],
                       tools=[{"type": "function", "function": WEATHER}], options={"temperature": 0, "num_predict": 80})
    call = tool.message.tool_calls[0]
    assert call.function.name == "get_weather" and "paris" in call.function.arguments["city"].lower()
    streamed_calls = [c for part in client.chat(
        model=QWEN, messages=[{"role": "user", "content": ASK}], tools=[{"type": "function", "function": WEATHER}],
        options={"temperature": 0, "num_predict": 80}, stream=True) for c in (part.message.tool_calls or [])]
    assert [(c.function.name, c.function.arguments) for c in streamed_calls] == [(call.function.name, call.function.arguments)]
    answer = client.chat(model=QWEN, messages=[
        {"role": "user", "content": ASK}, tool.message,
        {"role": "tool", "content": "18 degrees and sunny", "tool_name": "get_weather"}],
        options={"temperature": 0, "num_predict": 60})
    assert "18" in answer.message.content, answer.message.content
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404


def test_anthropic_messages_stream_tools_and_count_tokens(server):
    """The anthropic client's messages (plain and streamed), tool_use round trip
    and count_tokens work against the server."""
    client = anthropic.Anthropic(base_url=server, api_key="none")
    m = settled(lambda: client.messages.create(model=QWEN, max_tokens=16, temperature=0,
                                               messages=[{"role": "user", "content": "Say hi in one word."}]))
    assert m.stop_reason in ("end_turn", "max_tokens") and m.content[0].type == "text" and m.content[0].text
    with client.messages.stream(model=QWEN, max_tokens=16, temperature=0,
                                messages=[{"role": "user", "content": "Say hi in one word."}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == m.content[0].text and final.usage.output_tokens == m.usage.output_tokens

    tools = [{"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}]
    messages = [{"role": "user", "content": ASK}]
    used = client.messages.create(model=QWEN, max_tokens=80, temperature=0, tools=tools, messages=messages)
    assert used.stop_reason == "tool_use"
    block = next(b for b in used.content if b.type == "tool_use")
    assert block.name == "get_weather" and "paris" in block.input["city"].lower()
    with client.messages.stream(model=QWEN, max_tokens=80, temperature=0, tools=tools, messages=messages) as stream:
        streamed = stream.get_final_message()
    assert next(b for b in streamed.content if b.type == "tool_use").input == block.input
    messages += [{"role": "assistant", "content": [b.model_dump() for b in used.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "18 degrees and sunny"}]}]
    answer = client.messages.create(model=QWEN, max_tokens=60, temperature=0, tools=tools,
                                    tool_choice={"type": "none"}, messages=messages)
    assert answer.stop_reason == "end_turn" and "18" in answer.content[0].text

    counted = client.messages.count_tokens(model=QWEN, messages=[{"role": "user", "content": "Say hi."}])
    assert counted.input_tokens > 3
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=QWEN, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["type"] == "error"


def test_responses_text_streaming_and_function_call(server):
    """OpenAI's Responses API through the openai client: text, the streamed
    event sequence (final response equals the streamed text), a function call
    round trip, and a clear 400 for previous_response_id."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="none")
    r = settled(lambda: client.responses.create(model=QWEN, input="Say hi in one word.",
                                                max_output_tokens=16, temperature=0))
    assert r.status in ("completed", "incomplete") and r.output_text
    with client.responses.stream(model=QWEN, input="Say hi in one word.", max_output_tokens=16, temperature=0) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas == final.output_text == r.output_text

    tools = [{"type": "function", **WEATHER}]
    called = client.responses.create(model=QWEN, input=ASK, tools=tools, temperature=0, max_output_tokens=80)
    call = next(item for item in called.output if item.type == "function_call")
    assert call.name == "get_weather" and "paris" in json.loads(call.arguments)["city"].lower()
    follow = [{"role": "user", "content": ASK},
              {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
              {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"}]
    answer = client.responses.create(model=QWEN, input=follow, tools=tools, tool_choice="none", temperature=0, max_output_tokens=60)
    assert "18" in answer.output_text, answer.output_text
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=QWEN, input="x", previous_response_id="resp_123")
    assert "previous_response_id" in str(caught.value)


def test_ollama_pull_copy_delete_through_the_client(tmp_path):
    """The ollama client pulls from a loopback registry with progress lines that
    add up to the file, then copies and deletes; the pulled model answers."""
    small = model_path(MODEL)
    with mock_registry("library/smol:latest", small) as registry, \
            shelf_server(models=(), models_dir=str(tmp_path)) as server:
        host = registry.removeprefix("http://")
        name = f"{host}/library/smol:latest"
        client = ollama.Client(host=server)
        updates = list(client.pull(name, insecure=True, stream=True))
        assert updates[-1].status == "success"
        sized = [u for u in updates if u.total]
        assert sized and max(u.completed or 0 for u in sized) == os.path.getsize(small)
        assert name in [m.model for m in client.list().models]
        r = client.generate(model=name, prompt="Hello", options={"num_predict": 4, "temperature": 0})
        assert r.done and r.eval_count > 0

        client.copy(name, "smol-copy")
        # As in Ollama, a name without a tag gets ":latest".
        assert "smol-copy:latest" in [m.model for m in client.list().models]
        client.delete("smol-copy")
        assert "smol-copy:latest" not in [m.model for m in client.list().models]
        with pytest.raises(ollama.ResponseError) as caught:
            client.delete("smol-copy")
        assert caught.value.status_code == 404
        with pytest.raises(ollama.ResponseError):
            list(client.pull(f"{host}/library/absent:latest", insecure=True, stream=True))
