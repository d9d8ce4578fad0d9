"""The `assistant` model over the APIs, through the official openai and
ollama clients, against the real server answering with Qwen2.5-Coder-1.5B
over a watched folder of the generated corpus."""
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import ollama
import openai
import pytest

from conftest import model_path, shelf_server

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "assistant"))
import corpus  # noqa: E402

QWEN = "qwen2.5-coder-1.5b-instruct-q4_k_m"
MINILM = "all-minilm-l6-v2-f16"
SHELF = os.environ.get("SHELF_BIN", "target/debug/shelf")


# The assistant database behind each served base URL.
DATABASES = {}


def served_db(base):
    return DATABASES[base]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with the corpus watched, Qwen as the assistant's model and
    all-MiniLM-L6-v2 as its embedding model."""
    work = tmp_path_factory.mktemp("assistant")
    folder = work / "corpus"
    corpus.build(str(folder))
    db = str(work / "assistant.db")
    subprocess.run([SHELF, "--assistant-db", db, "watch", "add", str(folder), "--name", "corpus"],
                   check=True, capture_output=True)
    with shelf_server("--assistant-model", QWEN, "--assistant-embed", model_path(MINILM), "--ctx", "4096",
                      models=(QWEN,), assistant_db=db) as base:
        DATABASES[base] = db
        yield base


def test_openai_client_gets_an_answer_with_checked_citations(served):
    """A chat with model `assistant` is answered from the watched files, and
    every citation left in it names a corpus file (others were removed)."""
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "What salary is Ingrid Holm offered?"}])
    answer = reply.choices[0].message.content
    assert answer.strip()
    assert reply.choices[0].finish_reason == "stop"
    for cited in answer.split("[")[1:]:
        path = cited.split("]")[0].rsplit(":", 1)[0]
        if path.startswith("corpus/"):
            assert path.removeprefix("corpus/") in corpus.files(), cited


def test_streamed_and_ollama_answers(served):
    """`assistant/WATCH` streams through the openai client as it is written
    (several content chunks, then a stop), and Ollama's chat answers with the
    same model id, whole and streamed."""
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused")
    chunks = list(client.chat.completions.create(
        model="assistant/corpus", stream=True,
        messages=[{"role": "user", "content": "When is the quarterly VAT return due?"}]))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1, pieces
    assert "".join(pieces).strip()
    assert chunks[-1].choices[0].finish_reason == "stop"
    question = [{"role": "user", "content": "How much is the weekend surcharge?"}]
    reply = ollama.Client(host=served).chat(model="assistant", messages=question, stream=False)
    assert reply.message.content.strip()
    parts = list(ollama.Client(host=served).chat(model="assistant", messages=question, stream=True))
    assert len(parts) > 2 and parts[-1].done
    assert "".join(p.message.content for p in parts).strip()


def test_the_assistants_conversations_are_kept_searchable_and_deletable(served):
    """Each exchange with the assistant is kept as a conversation that
    `/api/conversations?q=` finds by its words; deleting it removes it from
    search."""
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused")
    client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "Which clinic did Tomasz Zyxwort visit?"}])

    def search(words):
        with urllib.request.urlopen(f"{served}/api/conversations?q={urllib.parse.quote(words)}") as r:
            return json.load(r)["conversations"]

    [found] = search("Zyxwort")
    assert "Tomasz" in found["title"]
    request = urllib.request.Request(f"{served}/api/conversations/{found['id']}", method="DELETE")
    with urllib.request.urlopen(request) as r:
        assert r.status == 204
    assert search("Zyxwort") == []


def test_unknown_watches_and_empty_questions_are_refused(served):
    """An unknown watch is a 404 in the API's own error shape, a chat with no
    question a 4xx, and the server keeps serving."""
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="assistant/nowhere", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="assistant", messages=[{"role": "system", "content": "only this"}])
    assert 400 <= refused.value.status_code < 500
    assert client.models.list() is not None


def status_when(db, done, seconds=240):
    """The corpus watch's `watch status`, polled until `done(status)` holds
    or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        [status] = json.loads(subprocess.run(
            [SHELF, "--assistant-db", db, "watch", "status", "corpus", "--json"],
            check=True, capture_output=True, text=True).stdout)
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(1)


def test_digests_are_written_in_the_background(served):
    """While the server runs, the assistant's model writes digests of the
    watched files as background work: `watch status` counts them, and a
    digest is stored for the text it was written from."""
    status = status_when(served_db(served), lambda s: s["digested"] >= 1)
    assert status["digested"] >= 1, status
    assert status["digested"] + status["queued"] == status["indexed"]


def test_every_file_is_embedded_with_the_embedding_model(served):
    """With `--assistant-embed`, the real embedding model makes vectors of
    every indexed file's text while the server runs (`watch status` counts
    files whose vectors match their current text), and the assistant still
    answers with them fused into its search."""
    status = status_when(served_db(served), lambda s: s["embedded"] == s["indexed"])
    assert status["embedded"] == status["indexed"] > 0, status
    client = openai.OpenAI(base_url=f"{served}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "What salary is Ingrid Holm offered?"}])
    assert reply.choices[0].message.content.strip()