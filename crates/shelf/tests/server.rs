//! The real `shelf serve` over HTTP on a loopback port, with real models.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{exclusive, shelf_output, truncated_copy, Server};
use serde_json::{json, Value};
use shelf_testmodels::{path, GEMMA3, QWEN_05B, SMOLLM2};

const SMOL: &str = "smollm2-135m-instruct-q4_1";

fn post(server: &Server, route: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(server.url(route))
        .json(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

fn post_raw(server: &Server, route: &str, body: &str) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(server.url(route))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": SMOL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 16,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Read an SSE response's `data:` payloads until `[DONE]`.
fn sse_events(response: reqwest::blocking::Response) -> Vec<String> {
    let mut events = Vec::new();
    for line in BufReader::new(response).lines() {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            events.push(data.to_string());
            if data == "[DONE]" {
                break;
            }
        }
    }
    events
}

#[test]
fn chat_completion_answers_in_openai_shape() {
    let _guard = exclusive();
    let server = Server::start(&path(SMOLLM2), &[]);
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &chat("Say hello.", json!({})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], SMOL);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
    // Greedy is deterministic across requests.
    let (_, again) = post(
        &server,
        "/v1/chat/completions",
        &chat("Say hello.", json!({})),
    );
    assert_eq!(again["choices"][0]["message"], choice["message"]);
}

#[test]
fn streamed_chat_matches_the_unstreamed_answer_and_reports_usage() {
    let _guard = exclusive();
    let server = Server::start(&path(SMOLLM2), &[]);
    let (_, whole) = post(
        &server,
        "/v1/chat/completions",
        &chat("Name three colors.", json!({})),
    );
    let response = reqwest::blocking::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(&chat(
            "Name three colors.",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(response);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)?
                .get("delta")?
                .get("content")?
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(last["usage"][field], whole["usage"][field], "{field}");
    }
    // The same prompt again: all but its last token come from the cache.
    assert_eq!(whole["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        last["usage"]["prompt_tokens_details"]["cached_tokens"],
        whole["usage"]["prompt_tokens"].as_u64().unwrap() - 1
    );
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, &whole["choices"][0]["finish_reason"]);
}

#[test]
fn completions_and_models() {
    let _guard = exclusive();
    let server = Server::start(&path(GEMMA3), &[]);
    let name = "gemma3-270m-q4_k_m";
    let models: Value = reqwest::blocking::get(server.url("/v1/models"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == name),
        "{models}"
    );

    let body = json!({"model": name, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "ignore_eos": true});
    let (status, body) = post(&server, "/v1/completions", &body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["usage"]["completion_tokens"], 6);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert!(!body["choices"][0]["text"].as_str().unwrap().is_empty());
    // A base model with no template still chats, through the fallback format.
    let chat_body =
        json!({"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    assert_eq!(post(&server, "/v1/chat/completions", &chat_body).0, 200);
}

#[test]
fn qwen_serves_chat() {
    let _guard = exclusive();
    let server = Server::start(&path(QWEN_05B), &[]);
    let body = json!({
        "model": "qwen2.5-coder-0.5b-instruct-q4_k_m",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is the capital of France? One word."}],
        "temperature": 0, "max_tokens": 8,
    });
    let (status, body) = post(&server, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{body}"
    );
}

fn assert_openai_error(status: u16, body: &Value, expected_status: u16) {
    assert_eq!(status, expected_status, "{body}");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let _guard = exclusive();
    let server = Server::start(&path(SMOLLM2), &["--max-body-bytes", "100000"]);
    let route = "/v1/chat/completions";
    let cases: Vec<(&str, String, u16)> = vec![
        ("malformed JSON", "{\"model\": ".into(), 400),
        ("not an object", "[1,2]".into(), 400),
        ("empty body", String::new(), 400),
        (
            "wrong type for messages",
            json!({"model": SMOL, "messages": "hi"}).to_string(),
            400,
        ),
        (
            "wrong type for temperature",
            chat("hi", json!({"temperature": "hot"})).to_string(),
            400,
        ),
        (
            "missing model",
            json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(),
            400,
        ),
        (
            "unknown model",
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            404,
        ),
        (
            "empty messages",
            json!({"model": SMOL, "messages": []}).to_string(),
            422,
        ),
        (
            "unknown role",
            json!({"model": SMOL, "messages": [{"role": "wizard", "content": "hi"}]}).to_string(),
            422,
        ),
        (
            "temperature out of range",
            chat("hi", json!({"temperature": -1})).to_string(),
            422,
        ),
        (
            "top_p out of range",
            chat("hi", json!({"top_p": 7})).to_string(),
            422,
        ),
        ("n > 1", chat("hi", json!({"n": 3})).to_string(), 422),
        (
            "prompt longer than the context",
            chat(&"many words here ".repeat(600), json!({})).to_string(),
            400,
        ),
        (
            "body over the limit",
            chat(&"x".repeat(200_000), json!({})).to_string(),
            413,
        ),
    ];
    for (case, body, expected) in cases {
        let (status, body) = post_raw(&server, route, &body);
        assert_openai_error(status, &body, expected);
        assert!(status < 500, "{case}");
    }
    let (status, body) = post_raw(
        &server,
        "/v1/completions",
        &json!({"model": SMOL, "prompt": ""}).to_string(),
    );
    assert_openai_error(status, &body, 422);
    let (status, body) = post_raw(&server, "/v1/nothing", "{}");
    assert_openai_error(status, &body, 404);
    let response = reqwest::blocking::get(server.url("/v1/chat/completions")).unwrap();
    assert_eq!(response.status(), 405);

    let context = post_raw(
        &server,
        route,
        &chat(&"many words here ".repeat(600), json!({})).to_string(),
    )
    .1;
    assert_eq!(context["error"]["code"], "context_length_exceeded");
    let health = reqwest::blocking::get(server.url("/health")).unwrap();
    assert_eq!(health.status(), 200);
    let (status, _) = post(&server, route, &chat("Still there?", json!({})));
    assert_eq!(status, 200);
}

#[test]
fn a_client_that_disconnects_mid_stream_frees_the_model() {
    let _guard = exclusive();
    let server = Server::start(&path(SMOLLM2), &[]);
    let addr = server.base.trim_start_matches("http://").to_string();
    let body = chat(
        "Write a long story.",
        json!({"stream": true, "max_tokens": 900, "ignore_eos": true}),
    )
    .to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Wait until tokens are flowing, then hang up.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while seen.windows(5).filter(|w| w == b"data:").count() < 5 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    // 900 tokens take several seconds; a freed model starts the next
    // request at once and answers one token in well under a second.
    let started = Instant::now();
    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        &chat("Hi", json!({"max_tokens": 1})),
    );
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        elapsed < Duration::from_millis(1000),
        "the next request waited {elapsed:?}"
    );
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let _guard = exclusive();
    let server = Server::start(&path(SMOLLM2), &[]);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.wait();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn corrupt_files_give_clear_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let truncated = truncated_copy(&path(SMOLLM2), dir.path());
    for file in [&junk, &truncated] {
        let file_arg = file.to_str().unwrap();
        for args in [
            vec!["run", file_arg, "hi"],
            vec!["import", file_arg],
            vec!["serve", "--addr", "127.0.0.1:0", "--model", file_arg],
        ] {
            let output = shelf_output(&args, dir.path());
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
            let file_name = file.file_name().unwrap().to_str().unwrap();
            assert!(
                stderr.contains(file_name),
                "{args:?} did not name the file: {stderr}"
            );
            assert!(
                stderr.contains("not a GGUF") || stderr.contains("truncated"),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn shutdown_lets_a_running_stream_finish() {
    let _guard = exclusive();
    let server = Server::start(&path(SMOLLM2), &[]);
    let response = reqwest::blocking::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(&chat(
            "Count to twenty.",
            json!({"stream": true, "max_tokens": 60, "ignore_eos": true}),
        ))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = BufReader::new(response);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(
        rest.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {rest}"
    );
    assert!(server.wait().success());
}
