"""The server as an attacker meets it, and API keys, TLS and the audit log as
clients meet them: the real binary, SmolLM2, and the official clients."""
import concurrent.futures
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

import anthropic
import httpx
import ollama
import openai
import pytest

from conftest import MODEL, PROCESSES, shelf_keys, shelf_server


def hostport(base):
    url = urllib.parse.urlsplit(base)
    return url.hostname, url.port


def raw(base, data, timeout=10):
    """Send raw bytes on a fresh connection; everything the server answers
    until it closes (or `timeout`)."""
    with socket.create_connection(hostport(base), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return out


def status_of(response):
    match = re.match(rb"HTTP/1\.1 (\d{3})", response)
    return int(match.group(1)) if match else None


def chat_request(base, key, body, timeout=60):
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {key}"})


def strings(value):
    """Every string inside a decoded JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def hello(max_tokens=4, **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": max_tokens, "temperature": 0, **extra}


@pytest.fixture(scope="module")
def keyed():
    """A server with keys on: `good` (chat, embed), `embed` (embed only), and
    `gone` (revoked)."""
    with tempfile.TemporaryDirectory() as home:
        db = os.path.join(home, "keys.db")
        keys = {name: shelf_keys(db, "create", name, *flags) for name, flags in
                [("good", ()), ("embed", ("--scope", "embed")), ("gone", ())]}
        shelf_keys(db, "revoke", "gone")
        with shelf_server("--header-timeout", "3", "--parallel", "2", keys=db) as base:
            yield base, keys, home


def test_slowloris_sockets_are_closed_and_normal_requests_still_answer(keyed):
    """300 connections dribbling a request head never starve a real client,
    and each is closed once the header timeout passes."""
    base, keys, _ = keyed
    sockets = []
    for _ in range(300):
        sock = socket.create_connection(hostport(base), timeout=10)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sockets.append(sock)
    stop = threading.Event()

    def dribble():
        while not stop.is_set():
            for sock in sockets:
                try:
                    sock.send(b"a")
                except OSError:
                    pass
            stop.wait(0.5)

    dripper = threading.Thread(target=dribble)
    dripper.start()
    try:
        started = time.monotonic()
        reply = chat_request(base, keys["good"], hello())
        assert reply.status_code == 200, reply.text
        assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        dripper.join()
    for sock in sockets:
        sock.settimeout(10)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert answer == b"" or 400 <= (status_of(answer) or 0) < 500, answer[:80]
        sock.close()


def test_a_one_mebibyte_header_is_refused_and_the_server_goes_on(keyed):
    """An oversized request head gets 431 (or the connection is cut) and
    costs the server nothing."""
    base, _, _ = keyed
    answer = raw(base, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                 + b"a" * (1 << 20) + b"\r\n\r\n")
    assert answer == b"" or status_of(answer) == 431, answer[:80]
    assert httpx.get(f"{base}/health").status_code == 200


def test_conflicting_framing_is_refused_and_nothing_is_smuggled(keyed):
    """Content-Length with Transfer-Encoding is a 400, the connection closes,
    and the bytes behind it are never served as a second request."""
    base, keys, _ = keyed
    smuggled = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Bearer " + keys["good"].encode() + b"\r\n"
                b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = raw(base, smuggled)
    assert status_of(answer) == 400, answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1


def test_a_body_declared_huge_gets_413_at_once(keyed):
    """A 200 MB Content-Length with a tiny body behind it is answered at
    once, without waiting for the rest."""
    base, keys, _ = keyed
    started = time.monotonic()
    answer = raw(base, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer " + keys["good"].encode() + b"\r\n"
                 b"Content-Length: 200000000\r\n\r\n{}")
    assert status_of(answer) == 413, answer[:200]
    assert time.monotonic() - started < 2.0
    assert b"request_too_large" in answer


def test_a_rebinding_host_and_other_sites_origins_get_403(keyed):
    """DNS rebinding (a foreign Host) and cross-origin pages, preflight
    included, are refused before any key or model is touched."""
    base, keys, _ = keyed
    auth = {"Authorization": f"Bearer {keys['good']}"}
    reply = httpx.get(f"{base}/v1/models", headers={**auth, "Host": "evil.example"})
    assert reply.status_code == 403
    reply = httpx.post(f"{base}/v1/chat/completions", json=hello(),
                       headers={**auth, "Origin": "https://evil.example"})
    assert reply.status_code == 403
    reply = httpx.options(f"{base}/v1/chat/completions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert reply.status_code == 403
    assert "access-control-allow-origin" not in reply.headers


def test_model_names_with_paths_get_4xx_that_name_no_path(keyed):
    """Traversal and absolute paths in model names reach no file, and no
    answer shows the server's paths or echoes a control character."""
    base, keys, home = keyed
    auth = {"Authorization": f"Bearer {keys['good']}"}
    for name in ["../../../../etc/passwd", "/etc/passwd", "..%2f..%2fetc%2fpasswd",
                 "C:\\Windows\\win.ini", "~/.ssh/id_rsa", "x\x1b[31m\x07\x00y", "sha256-" + "0" * 64]:
        for method, path, body in [
            ("POST", "/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "x"}]}),
            ("POST", "/v1/embeddings", {"model": name, "input": "x"}),
            ("POST", "/api/show", {"model": name}),
            ("POST", "/api/generate", {"model": name, "prompt": "x"}),
        ]:
            reply = httpx.request(method, f"{base}{path}", json=body, headers=auth)
            assert 400 <= reply.status_code < 500, (name, path, reply.text)
            text = " ".join(strings(reply.json()))
            for forbidden in ["/etc/passwd", home, os.path.expanduser("~"), "\x1b", "\x07", "\x00"]:
                assert forbidden not in text, (name, path, text)
        reply = httpx.get(f"{base}/v1/models/{urllib.parse.quote(name, safe='')}", headers=auth)
        assert 400 <= reply.status_code < 500
        text = " ".join(strings(reply.json()))
        assert "\x1b" not in text and "/etc/passwd" not in text, text


@pytest.mark.parametrize("body", [
    hello(stop=["x"] * 10_000),
    hello(stop=["x" * 200_000]),
    hello(max_tokens=10**9),
    hello(n=1000),
    hello(logprobs=True, top_logprobs=1_000_000),
    {"model": MODEL, "messages": [{"role": "user", "content": "hi"}] * 150_000},
], ids=["10k-stops", "200k-stop", "1e9-max-tokens", "n-1000", "top-logprobs-1e6", "150k-messages"])
def test_oversized_parameters_get_a_clear_4xx_quickly(keyed, body):
    """Caps on stops, max_tokens, n, top_logprobs and array lengths answer
    at once with a 4xx, in OpenAI's shape."""
    base, keys, _ = keyed
    started = time.monotonic()
    reply = chat_request(base, keys["good"], body)
    assert 400 <= reply.status_code < 500, reply.text[:300]
    assert reply.json()["error"]["message"]
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("data", [
    b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"model": "\xff\xfe", "messages": []}',
    b'{"model": "m", "messages": [{"role": "user", "content": "\xc3\x28"}]}',
], ids=["nested-100k", "bad-utf8-name", "bad-utf8-content"])
def test_hostile_json_gets_400(keyed, data):
    """JSON nested 100,000 deep and invalid UTF-8 are refused as bad requests."""
    base, keys, _ = keyed
    for path in ["/v1/chat/completions", "/api/chat", "/v1/messages"]:
        reply = httpx.post(f"{base}{path}", content=data, headers={
            "Authorization": f"Bearer {keys['good']}", "x-api-key": keys["good"],
            "content-type": "application/json"})
        assert reply.status_code == 400, (path, reply.text[:300])


def test_wrong_revoked_and_out_of_scope_keys_are_refused_and_the_server_is_whole(keyed):
    """Keys that are wrong, revoked or out of scope get 401/401/403, and after
    the whole suite the server still answers a real request."""
    base, keys, _ = keyed
    assert chat_request(base, "shelf_" + "x" * 43, hello()).status_code == 401
    assert chat_request(base, keys["gone"], hello()).status_code == 401
    assert chat_request(base, keys["embed"], hello()).status_code == 403
    reply = chat_request(base, keys["good"], hello())
    assert reply.status_code == 200
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}


# Keys through the official clients.

@pytest.fixture(scope="module")
def limited():
    """A server whose `limited` key allows 3 requests a minute."""
    with tempfile.TemporaryDirectory() as home:
        db = os.path.join(home, "keys.db")
        keys = {"chat": shelf_keys(db, "create", "chat"),
                "embed": shelf_keys(db, "create", "embedder", "--scope", "embed"),
                "gone": shelf_keys(db, "create", "gone"),
                "limited": shelf_keys(db, "create", "limited", "--rpm", "3")}
        shelf_keys(db, "revoke", "gone")
        with shelf_server(keys=db) as base:
            yield base, keys, db


def test_openai_client_sees_401_403_and_429_at_the_right_request(limited):
    """Through `openai`: no key, a wrong key and a revoked key are 401, a key
    without the chat scope is 403, and the 4th request in a minute on an
    rpm-3 key is 429 with Retry-After."""
    base, keys, _ = limited

    def strip_key(request):
        request.headers.pop("Authorization", None)

    def ask(key):
        # No key at all: the client insists on one, so take it off the wire.
        http = httpx.Client(event_hooks={"request": [strip_key]} if key is None else {})
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=key or "unused",
                               max_retries=0, http_client=http)
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)

    for key in [None, "shelf_wrong", keys["gone"]]:
        with pytest.raises(openai.AuthenticationError):
            ask(key)
    with pytest.raises(openai.PermissionDeniedError):
        ask(keys["embed"])
    assert ask(keys["chat"]).choices[0].message.content is not None
    for _ in range(3):
        ask(keys["limited"])
    with pytest.raises(openai.RateLimitError) as refused:
        ask(keys["limited"])
    headers = refused.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_anthropic_client_sees_401_403_and_429(limited):
    """Through `anthropic` (x-api-key): wrong and revoked keys are 401, a key
    without the chat scope is 403, a good key answers, and the 3rd request
    on a key created just now with rpm 2 is 429 with Retry-After."""
    base, keys, db = limited

    def ask(key):
        return anthropic.Anthropic(base_url=base, api_key=key, max_retries=0).messages.create(
            model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])

    for key in ["shelf_wrong", keys["gone"]]:
        with pytest.raises(anthropic.AuthenticationError):
            ask(key)
    with pytest.raises(anthropic.PermissionDeniedError):
        ask(keys["embed"])
    assert ask(keys["chat"]).content is not None
    fresh = shelf_keys(db, "create", "anthropic-rpm", "--rpm", "2")
    ask(fresh)
    ask(fresh)
    with pytest.raises(anthropic.RateLimitError) as refused:
        ask(fresh)
    headers = refused.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["anthropic-ratelimit-requests-limit"] == "2"


def test_ollama_client_sees_401_403_and_429(limited):
    """Through `ollama` (a bearer header): no key, wrong and revoked keys
    are 401, a key without the chat scope is 403, and the 3rd request on a
    key created just now with rpm 2 is 429."""
    base, keys, db = limited

    def ask(key):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return ollama.Client(host=base, headers=headers).chat(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2})

    for key in [None, "shelf_wrong", keys["gone"]]:
        with pytest.raises(ollama.ResponseError) as refused:
            ask(key)
        assert refused.value.status_code == 401
    with pytest.raises(ollama.ResponseError) as refused:
        ask(keys["embed"])
    assert refused.value.status_code == 403
    assert ask(keys["chat"]).message is not None
    fresh = shelf_keys(db, "create", "ollama-rpm", "--rpm", "2")
    ask(fresh)
    ask(fresh)
    with pytest.raises(ollama.ResponseError) as refused:
        ask(fresh)
    assert refused.value.status_code == 429


def test_the_key_database_holds_no_key_in_any_form_grep_finds(limited):
    """Only hashes are stored: neither a whole key nor any 12 characters of
    its secret part appear in the database or its journal files."""
    _, keys, db = limited
    stored = b""
    for suffix in ["", "-wal", "-shm"]:
        if os.path.exists(db + suffix):
            with open(db + suffix, "rb") as f:
                stored += f.read()
    assert stored
    for key in keys.values():
        secret = key.removeprefix("shelf_")
        for start in range(0, len(secret) - 12, 4):
            assert secret[start:start + 12].encode() not in stored


# TLS, the audit log, exposure and shutdown.

def test_the_openai_client_chats_over_https_with_the_self_signed_certificate():
    """`--tls self-signed` makes a certificate under ~/.shelf/tls, prints its
    SHA-256 fingerprint, offers HTTP/2 by ALPN, and the openai client,
    trusting that file, chats over HTTPS."""
    with tempfile.TemporaryDirectory() as home:
        with shelf_server("--tls", "self-signed", env={"HOME": home}) as base:
            assert base.startswith("https://")
            cert = os.path.join(home, ".shelf", "tls", "cert.pem")
            with open(cert) as f:
                der = ssl.PEM_cert_to_DER_cert(f.read())
            context = ssl.create_default_context(cafile=cert)
            context.set_alpn_protocols(["h2", "http/1.1"])
            with socket.create_connection(hostport(base)) as sock:
                with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                    assert tls.selected_alpn_protocol() == "h2"
                    assert hashlib.sha256(tls.getpeercert(binary_form=True)).digest() == hashlib.sha256(der).digest()
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="none",
                                   http_client=httpx.Client(verify=ssl.create_default_context(cafile=cert)),
                                   max_retries=0)
            answer = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
            assert answer.choices[0].message.content
            with pytest.raises(openai.APIConnectionError):
                openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0).models.list()


def test_the_fingerprint_printed_is_the_certificates():
    """The fingerprint on stdout is the SHA-256 of the certificate served."""
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(
            [os.environ.get("SHELF_BIN", "target/debug/shelf"), "serve", "--addr", "127.0.0.1:0",
             "--tls", "self-signed", "--keys", os.path.join(home, "keys.db"), "--models-dir", home],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "HOME": home})
        try:
            line = proc.stdout.readline()
            printed = line.strip().rsplit(" ", 1)[-1]
            with open(os.path.join(home, ".shelf", "tls", "cert.pem")) as f:
                der = ssl.PEM_cert_to_DER_cert(f.read())
            assert printed == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()), line
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_the_audit_log_has_a_line_per_request_and_no_words_of_any_prompt_or_answer():
    """One JSON line per request, in every dialect, streamed or not, with
    key, model, status and tokens, there by the time the client has its
    answer; no word of any prompt or answer appears in the audit log or the
    server's own log."""
    with tempfile.TemporaryDirectory() as home:
        db = os.path.join(home, "keys.db")
        key = shelf_keys(db, "create", "auditor")
        audit = os.path.join(home, "audit.log")
        server_log = os.path.join(home, "server.log")
        prompts = [f"Tell me about the {w} of the {v}." for w, v in
                   [("quokkas", "zanzibarians"), ("marmalade", "xylophonists"),
                    ("hedgerows", "wolframites"), ("snowdrifts", "quetzalcoatl")]]
        answers = []
        with open(server_log, "w") as log, shelf_server(
                "--audit-log", audit, keys=db, stderr=log, env={"SHELF_LOG": "debug,llama-cpp-2=error"}) as base:
            oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
            answers.append(oa.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompts[0]}], max_tokens=16).choices[0].message.content)
            stream = oa.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompts[1]}], max_tokens=16, stream=True)
            answers.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
            an = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
            answers.append(an.messages.create(
                model=MODEL, max_tokens=16, messages=[{"role": "user", "content": prompts[2]}]).content[0].text)
            ol = ollama.Client(host=base, headers={"Authorization": f"Bearer {key}"})
            answers.append(ol.chat(model=MODEL, messages=[{"role": "user", "content": prompts[3]}],
                                   options={"num_predict": 16})["message"]["content"])
            httpx.get(f"{base}/v1/models")  # no key: 401, logged too
            # Read while the server runs: a client that has its answer finds its line.
            with open(audit) as f:
                lines = [json.loads(line) for line in f]
        assert len(lines) == 5, lines
        served = [l for l in lines if l["status"] == 200]
        refused = [l for l in lines if l["status"] == 401]
        assert len(served) == 4 and len(refused) == 1, lines
        assert {l["path"] for l in served} == {"/v1/chat/completions", "/v1/messages", "/api/chat"}
        assert all(l["key"] == "auditor" and l["model"] == MODEL for l in served)
        assert all(l["prompt_tokens"] > 0 and l["output_tokens"] > 0 for l in served)
        assert refused[0]["key"] is None
        logs = open(audit).read() + open(server_log).read()
        words = {w for text in prompts + answers for w in re.findall(r"[A-Za-z]{7,}", text)}
        vocabulary = {"smollm2", "instruct", "completions", "messages", "prompt_tokens", "output_tokens"}
        words = {w for w in words if w.lower() not in vocabulary}
        assert words
        leaked = sorted(w for w in words if w in logs)
        assert not leaked, leaked


def test_serving_beyond_loopback_without_keys_refuses_to_start_unless_told():
    """On a non-loopback address with no keys, serve exits saying why; with
    --no-auth it starts, and warns."""
    with tempfile.TemporaryDirectory() as home:
        command = [os.environ.get("SHELF_BIN", "target/debug/shelf"), "serve", "--addr", "0.0.0.0:0",
                   "--keys", os.path.join(home, "keys.db"), "--models-dir", home, "--memory-budget", "1GiB"]
        refused = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0
        assert "--no-auth" in refused.stderr and "shelf keys create" in refused.stderr
        proc = subprocess.Popen(command + ["--no-auth"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().startswith("shelf listening on http://0.0.0.0:")
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=30)
        assert "--no-auth" in stderr


def test_sigterm_stops_the_server_promptly_while_it_is_busy():
    """A streaming generation and a large prompt in flight do not keep the
    server alive past its drain timeout after SIGTERM."""
    with shelf_server("--drain-timeout", "2") as base:
        proc = PROCESSES[base]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Count to a million."}],
            max_tokens=100_000, stream=True, extra_body={"ignore_eos": True})
        next(iter(stream))
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pool.submit(lambda: httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "max_tokens": 1,
            "messages": [{"role": "user", "content": "word " * 100}] * 4000}))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        pool.shutdown(wait=False, cancel_futures=True)
