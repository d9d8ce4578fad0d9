//! The serving core end to end: the real `shelf serve`, its runner
//! processes and real models, over HTTP on a loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{exclusive, shelf_output, Server};
use serde_json::{json, Value};
use shelf_testmodels::{path, GEMMA3, QWEN_05B, SMOLLM2};

/// A store holding the three test models (linked, not copied) as `smol`,
/// `gemma` and `qwen`.
fn store_with_models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (model, name) in [(SMOLLM2, "smol"), (GEMMA3, "gemma"), (QWEN_05B, "qwen")] {
        let file = path(model);
        let out = shelf_output(
            &["import", file.to_str().unwrap(), "--name", name, "--link"],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

/// `shelf serve` on the store, with `extra` flags, once it listens.
fn serve(store: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--ctx",
        "1024",
        "--parallel",
        "2",
    ];
    args.extend_from_slice(extra);
    Server::spawn(&args, store, &[])
}

fn chat(model: &str, content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 8,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn post(server: &Server, body: &Value) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(server.url("/v1/chat/completions"))
        .json(body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

fn ps(server: &Server) -> Vec<Value> {
    let list: Value = reqwest::blocking::get(server.url("/api/ps"))
        .unwrap()
        .json()
        .unwrap();
    list["models"].as_array().unwrap().clone()
}

fn loaded(server: &Server) -> Vec<String> {
    let mut names: Vec<String> = ps(server)
        .iter()
        .filter(|m| m["loading"] == false)
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The metric samples named `name`, by their `model` label.
fn metric(server: &Server, name: &str) -> HashMap<String, f64> {
    let text = reqwest::blocking::get(server.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| {
            let model = l.split("model=\"").nth(1)?.split('"').next()?.to_string();
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some((model, value))
        })
        .collect()
}

/// What a stream ended with: its text, the error event if any, the finish reason.
type Streamed = (String, Option<Value>, Option<String>);

/// A streamed chat, read on its own thread, and a channel that says when
/// its first text arrived.
fn stream_in_background(
    server: &Server,
    body: Value,
) -> (
    std::thread::JoinHandle<Streamed>,
    std::sync::mpsc::Receiver<()>,
) {
    let url = server.url("/v1/chat/completions");
    let (started_tx, started) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let response = reqwest::blocking::Client::new()
            .post(url)
            .json(&body)
            .send()
            .unwrap();
        let mut text = String::new();
        let mut error = None;
        let mut finish = None;
        for line in BufReader::new(response).lines() {
            let line = line.unwrap();
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(data).unwrap();
            if chunk.get("error").is_some() {
                error = Some(chunk["error"].clone());
                continue;
            }
            if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
                if !piece.is_empty() && text.is_empty() {
                    let _ = started_tx.send(());
                }
                text.push_str(piece);
            }
            if let Some(reason) = chunk["choices"][0]["finish_reason"].as_str() {
                finish = Some(reason.to_string());
            }
        }
        (text, error, finish)
    });
    (handle, started)
}

/// Poll `cond` until it holds or `limit` passes (the server does the work
/// in the background; this only waits for it to show).
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// What each model is admitted with here, read from a server that loads all three.
fn sizes(store: &Path) -> HashMap<String, u64> {
    let server = serve(store, &["--memory-budget", "64GiB"]);
    for model in ["smol", "gemma", "qwen"] {
        assert_eq!(
            post(&server, &chat(model, "Hi", json!({"max_tokens": 1}))).0,
            200
        );
    }
    ps(&server)
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Several models that fit the budget together stay loaded: interleaved
/// requests start no runner after each model's first.
#[test]
fn models_that_fit_together_are_never_reloaded() {
    let _guard = exclusive();
    let store = store_with_models();
    let server = serve(store.path(), &["--memory-budget", "8GiB"]);
    for round in 0..3 {
        for model in ["smol", "gemma", "qwen"] {
            let (status, body) = post(&server, &chat(model, &format!("Round {round}"), json!({})));
            assert_eq!(status, 200, "{body}");
        }
    }
    assert_eq!(loaded(&server), vec!["gemma", "qwen", "smol"]);
    let starts = metric(&server, "shelf_runner_starts_total");
    for model in ["smol", "gemma", "qwen"] {
        assert_eq!(starts.get(model), Some(&1.0), "{model}: {starts:?}");
    }
    assert!(metric(&server, "shelf_model_unloads_total")
        .values()
        .all(|&n| n == 0.0));
}

/// Under a budget that fits two, a request for C while A streams unloads
/// the idle B, never A, and A's stream completes intact.
#[test]
fn a_third_model_unloads_the_idle_one_never_the_busy_one() {
    let _guard = exclusive();
    let store = store_with_models();
    let size = sizes(store.path());
    // A = smol, B = gemma, C = qwen.
    let budget = size["smol"] + size["gemma"].max(size["qwen"]) + (1 << 20);
    let server = serve(store.path(), &["--memory-budget", &budget.to_string()]);
    let story = chat(
        "smol",
        "Tell me a long story.",
        json!({"stream": true, "max_tokens": 200, "ignore_eos": true}),
    );
    let (expected, _) = stream_in_background(&server, story.clone());
    let (expected, error, _) = expected.join().unwrap();
    assert!(error.is_none());
    assert_eq!(post(&server, &chat("gemma", "Hello", json!({}))).0, 200);
    assert_eq!(loaded(&server), vec!["gemma", "smol"]);

    let (a, started) = stream_in_background(&server, story);
    started.recv().unwrap();
    let (status, body) = post(&server, &chat("qwen", "Hello", json!({})));
    assert_eq!(status, 200, "{body}");
    assert!(eventually(Duration::from_secs(10), || loaded(&server)
        == vec!["qwen", "smol"]));
    let (text, error, finish) = a.join().unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(finish.as_deref(), Some("length"));
    assert_eq!(text, expected, "A's stream was disturbed");
    let unloads = metric(&server, "shelf_model_unloads_total");
    assert_eq!(unloads.get("gemma"), Some(&1.0));
    assert_eq!(unloads.get("smol").copied().unwrap_or(0.0), 0.0);
}

/// A model that can never fit gets a 4xx saying what it needs and what the
/// budget has; nothing is loaded.
#[test]
fn a_model_over_the_budget_is_refused_with_its_estimate() {
    let store = store_with_models();
    let server = serve(store.path(), &["--memory-budget", "64MiB"]);
    let (status, body) = post(&server, &chat("qwen", "Hi", json!({})));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "model_too_large");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("GiB") && message.contains("budget"),
        "{message}"
    );
    assert!(ps(&server).is_empty());
}

/// `kill -9` of one runner mid-stream: its stream ends with an error, a
/// stream on another model finishes, the server stays up, and the next
/// request to the killed model is answered by a new runner.
#[test]
fn a_killed_runner_takes_down_only_its_own_stream() {
    let _guard = exclusive();
    let store = store_with_models();
    let server = serve(store.path(), &["--memory-budget", "8GiB"]);
    let long = |model: &str| {
        chat(
            model,
            "Tell me a long story.",
            json!({"stream": true, "max_tokens": 300, "ignore_eos": true}),
        )
    };
    let (victim, victim_started) = stream_in_background(&server, long("smol"));
    let (other, other_started) = stream_in_background(&server, long("qwen"));
    victim_started.recv().unwrap();
    other_started.recv().unwrap();
    let pid = ps(&server)
        .iter()
        .find(|m| m["name"] == "smol")
        .and_then(|m| m["pid"].as_u64())
        .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (_, error, finish) = victim.join().unwrap();
    let error = error.expect("the killed runner's stream must end with an error");
    assert_eq!(error["code"], "model_crashed");
    assert!(finish.is_none());
    let (text, error, finish) = other.join().unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(finish.as_deref(), Some("length"));
    assert!(!text.is_empty());

    assert_eq!(
        reqwest::blocking::get(server.url("/health"))
            .unwrap()
            .status(),
        200
    );
    let (status, body) = post(&server, &chat("smol", "Are you back?", json!({})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        metric(&server, "shelf_runner_crashes_total").get("smol"),
        Some(&1.0)
    );
    assert_eq!(
        metric(&server, "shelf_runner_starts_total").get("smol"),
        Some(&2.0)
    );
}

/// 200 requests at once against a queue of 16: the excess get 503 with
/// Retry-After, none hangs, every admitted one finishes, and the server's
/// memory stays bounded.
#[test]
fn overload_is_refused_quickly_and_admitted_requests_finish() {
    let _guard = exclusive();
    let store = store_with_models();
    let server = serve(
        store.path(),
        &["--max-queue", "16", "--memory-budget", "8GiB"],
    );
    assert_eq!(post(&server, &chat("smol", "warm up", json!({}))).0, 200);
    let rss_before = rss_kib(server.pid());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = server.url("/v1/chat/completions");
    let outcomes: Vec<(u16, Option<String>, Value)> = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let client = client.clone();
                let url = url.clone();
                let body = chat("smol", &format!("Request {i}"), json!({"max_tokens": 16}));
                tokio::spawn(async move {
                    let response = client.post(url).json(&body).send().await.unwrap();
                    let status = response.status().as_u16();
                    let retry = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (status, retry, response.json::<Value>().await.unwrap())
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(
                tokio::time::timeout(Duration::from_secs(120), task)
                    .await
                    .expect("a request hung")
                    .unwrap(),
            );
        }
        outcomes
    });
    let ok = outcomes.iter().filter(|o| o.0 == 200).count();
    let refused: Vec<_> = outcomes.iter().filter(|o| o.0 == 503).collect();
    assert_eq!(
        ok + refused.len(),
        200,
        "only 200s and 503s: {:?}",
        outcomes.iter().map(|o| o.0).collect::<Vec<_>>()
    );
    assert!(
        ok >= 18,
        "the running slots and the queue were admitted: {ok}"
    );
    assert!(!refused.is_empty());
    for (_, retry, body) in &refused {
        assert!(retry.is_some(), "503 without Retry-After");
        assert_eq!(body["error"]["code"], "server_overloaded");
    }
    for (_, _, body) in outcomes.iter().filter(|o| o.0 == 200) {
        let tokens = body["usage"]["completion_tokens"].as_u64().unwrap();
        assert!((1..=16).contains(&tokens), "{body}");
        assert!(body["choices"][0]["finish_reason"].is_string());
    }
    let rss_after = rss_kib(server.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // And it still serves.
    assert_eq!(
        post(&server, &chat("smol", "still there?", json!({}))).0,
        200
    );
}

/// With a one-second keep-alive an idle model unloads and its runner
/// process exits; a pinned model stays.
#[test]
fn idle_models_unload_after_the_keep_alive_and_pinned_ones_stay() {
    let store = store_with_models();
    let server = serve(
        store.path(),
        &[
            "--keep-alive",
            "1s",
            "--model",
            "gemma",
            "--memory-budget",
            "8GiB",
        ],
    );
    assert!(eventually(Duration::from_secs(30), || loaded(&server) == vec!["gemma"]));
    assert_eq!(post(&server, &chat("smol", "Hi", json!({}))).0, 200);
    let pid = ps(&server)
        .iter()
        .find(|m| m["name"] == "smol")
        .and_then(|m| m["pid"].as_u64())
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || loaded(&server) == vec!["gemma"]));
    assert!(
        eventually(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the runner process is gone"
    );
    let pinned = ps(&server);
    assert_eq!(pinned[0]["pinned"], true);
}

/// `shelf ps` shows what the server has loaded.
#[test]
fn ps_lists_loaded_models_with_their_slots() {
    let store = store_with_models();
    let server = serve(store.path(), &["--memory-budget", "8GiB"]);
    assert_eq!(post(&server, &chat("smol", "Hi", json!({}))).0, 200);
    let addr = server.base.trim_start_matches("http://").to_string();
    let out = common::shelf()
        .args(["ps", "--addr", &addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("smol"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("0/2"), "{row}");
    assert!(row.contains("from now"), "{row}");
    let out = common::shelf()
        .args(["ps", "--addr", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no shelf server answers"));
}

/// The second turn of a chat reuses the first turn's KV: `cached_tokens`
/// says so, and the answer is the same as with the cache off.
#[test]
fn the_next_turn_reports_cached_tokens_and_answers_the_same() {
    let _guard = exclusive();
    let store = store_with_models();
    let server = serve(store.path(), &["--memory-budget", "8GiB"]);
    let history = "The report lists ferries by city. ".repeat(60);
    let mut messages = vec![json!({"role": "user", "content": history})];
    let first = json!({"model": "smol", "messages": messages, "temperature": 0, "max_tokens": 12});
    let (_, first) = post(&server, &first);
    messages
        .push(json!({"role": "assistant", "content": first["choices"][0]["message"]["content"]}));
    messages.push(json!({"role": "user", "content": "Summarise it in one line."}));
    let second = json!({"model": "smol", "messages": messages, "temperature": 0, "max_tokens": 12});
    let (_, cached) = post(&server, &second);
    let mut fresh_body = second.clone();
    fresh_body["cache_prompt"] = json!(false);
    let (_, fresh) = post(&server, &fresh_body);
    let reused = cached["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        reused >= first["usage"]["prompt_tokens"].as_u64().unwrap(),
        "{reused}"
    );
    assert_eq!(fresh["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        cached["choices"][0]["message"]["content"],
        fresh["choices"][0]["message"]["content"]
    );
    assert!(metric(&server, "shelf_prompt_cached_tokens_total")["smol"] >= reused as f64);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
