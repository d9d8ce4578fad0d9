//! The router without a socket: handlers over a host of fake models, driven
//! with `oneshot`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shelf_engine::fake::{FakeModel, Gate};
use shelf_engine::LoadedModel;
use shelf_scheduler::{
    Catalog, CatalogError, HostConfig, KeepAlive, LoadPlan, Loader, ModelCost, ModelHost,
    Resolution, Sizer,
};
use shelf_server::{app, AppState, ServerConfig};
use tower::ServiceExt;

struct Names;

impl Catalog for Names {
    fn resolve(&self, name: &str) -> Result<Resolution, CatalogError> {
        match name {
            "fake" | "held" | "huge" | "thinker" | "embedder" | "caller" => {
                Ok(Resolution::Ready(PathBuf::from(format!("/m/{name}.gguf"))))
            }
            "failed" => Err(CatalogError::Failed(
                "pulling failed: 404 from the registry".into(),
            )),
            _ => Ok(Resolution::Missing),
        }
    }
    fn list(&self) -> Result<Vec<String>, CatalogError> {
        Ok(vec!["fake".into(), "held".into()])
    }
}

/// The `thinker` model's reply: reasoning, then the answer.
const THOUGHT_AND_ANSWER: &str = "<think>I should greet.</think>\n\nHello!";

/// The `caller` model's reply: a call in Qwen's syntax.
const A_CALL: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

/// `held` models hold every generation at `gate` until it opens.
fn state(gate: &Gate, max_queue: usize) -> AppState {
    let gate = gate.clone();
    let loader: Arc<Loader> = Arc::new(move |plan: &LoadPlan| {
        let model = FakeModel::new("Hello there", 256).with_slots(plan.slots);
        let model = match plan.name.as_str() {
            "held" => model.with_gate(&gate),
            "thinker" => FakeModel::new(THOUGHT_AND_ANSWER, 256),
            "caller" => FakeModel::new(A_CALL, 4096),
            "embedder" => FakeModel::embedding(8, 256),
            _ => model,
        };
        Ok(Arc::new(model) as Arc<dyn LoadedModel>)
    });
    let sizer: Arc<Sizer> = Arc::new(|path: &Path| {
        let huge = path.ends_with("huge.gguf");
        Ok(ModelCost {
            fixed: if huge { 8 << 30 } else { 1 << 20 },
            per_slot: 1 << 10,
        })
    });
    let host = ModelHost::new(
        Arc::new(Names),
        loader,
        sizer,
        HostConfig {
            budget: 1 << 30,
            slots: Some(1),
            keep_alive: KeepAlive::Forever,
            max_queue,
            ..HostConfig::default()
        },
    );
    AppState::new(Arc::new(host))
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = app(state.clone(), &ServerConfig::default())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn error_code(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap()["error"]["code"].clone()
}

#[tokio::test]
async fn a_chat_answers_with_usage_including_cached_tokens() {
    let state = state(&Gate::closed(), 4);
    let (status, _, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("fake", json!({}))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello there");
    assert_eq!(body["usage"]["completion_tokens"], 11);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn max_tokens_zero_is_openais_400() {
    let state = state(&Gate::closed(), 4);
    for field in ["max_tokens", "max_completion_tokens"] {
        let (status, _, body) = call(
            &state,
            "POST",
            "/v1/chat/completions",
            Some(chat("fake", json!({field: 0}))),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "integer_below_min_value");
        assert_eq!(error["error"]["param"], field);
    }
    let completion = json!({"model": "fake", "prompt": "Hi", "max_tokens": 0});
    let (status, _, _) = call(&state, "POST", "/v1/completions", Some(completion)).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_overlong_stop_string_is_refused() {
    let state = state(&Gate::closed(), 4);
    let stop = "x".repeat(513);
    let (status, _, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("fake", json!({"stop": [stop]}))),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _, _) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("fake", json!({"stop": ["x".repeat(512)]}))),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_full_queue_is_503_server_overloaded_with_retry_after() {
    let gate = Gate::closed();
    let state = state(&gate, 1);
    let running = tokio::spawn({
        let state = state.clone();
        async move {
            call(
                &state,
                "POST",
                "/v1/chat/completions",
                Some(chat("held", json!({}))),
            )
            .await
        }
    });
    let queued = tokio::spawn({
        let state = state.clone();
        async move {
            // Behind the running one, once it holds the only slot.
            while state.host.status().first().is_none_or(|m| m.busy == 0) {
                tokio::task::yield_now().await;
            }
            call(
                &state,
                "POST",
                "/v1/chat/completions",
                Some(chat("held", json!({}))),
            )
            .await
        }
    });
    // The running request holds the slot (busy) and the second waits for it
    // (queued); a load in progress also counts as queued, so both are needed.
    while state
        .host
        .status()
        .first()
        .is_none_or(|m| m.busy == 0 || m.queued == 0)
    {
        tokio::task::yield_now().await;
    }
    let (status, headers, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("held", json!({}))),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "server_overloaded");
    assert_eq!(headers["retry-after"], "1");
    gate.open();
    assert_eq!(running.await.unwrap().0, 200);
    assert_eq!(queued.await.unwrap().0, 200);
}

#[tokio::test]
async fn a_model_that_never_fits_is_400_model_too_large() {
    let state = state(&Gate::closed(), 4);
    let (status, _, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("huge", json!({}))),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "model_too_large");
    assert!(
        body.contains("8.00 GiB") && body.contains("1.00 GiB"),
        "{body}"
    );
}

#[tokio::test]
async fn a_failed_pull_is_final_not_retry_later() {
    let state = state(&Gate::closed(), 4);
    let (status, headers, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("failed", json!({}))),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(error_code(&body), "model_pull_failed");
    assert!(headers.get("retry-after").is_none());
}

#[tokio::test]
async fn metrics_count_requests_and_tokens_and_ps_shows_the_model() {
    let state = state(&Gate::closed(), 4);
    let mut prompt_tokens = 0;
    for _ in 0..2 {
        let (_, _, body) = call(
            &state,
            "POST",
            "/v1/chat/completions",
            Some(chat("fake", json!({"max_tokens": 3}))),
        )
        .await;
        let body: Value = serde_json::from_str(&body).unwrap();
        prompt_tokens += body["usage"]["prompt_tokens"].as_u64().unwrap();
    }
    call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("nope", json!({}))),
    )
    .await;
    call(&state, "GET", "/no/such/route", None).await;
    let (status, headers, text) = call(&state, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let prompt_line = format!(r#"shelf_prompt_tokens_total{{model="fake"}} {prompt_tokens}"#);
    for line in [
        prompt_line.as_str(),
        r#"shelf_http_requests_total{route="/v1/chat/completions",status="200"} 2"#,
        r#"shelf_http_requests_total{route="/v1/chat/completions",status="404"} 1"#,
        r#"shelf_http_requests_total{route="unmatched",status="404"} 1"#,
        r#"shelf_generated_tokens_total{model="fake"} 6"#,
        r#"shelf_runner_starts_total{model="fake"} 1"#,
        r#"shelf_slots_total{model="fake"} 1"#,
        r#"shelf_time_to_first_token_seconds_count{model="fake"} 2"#,
        r#"shelf_queue_wait_seconds_count{model="fake"} 2"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    let (_, _, ps) = call(&state, "GET", "/api/ps", None).await;
    let ps: Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(ps["models"][0]["name"], "fake");
    assert_eq!(ps["models"][0]["slots"], 1);
    assert_eq!(ps["models"][0]["busy_slots"], 0);
    assert!(ps["models"][0]["expires_at"].is_null(), "kept forever");
}

/// Every line of an SSE body's `data:` fields that holds JSON.
fn sse_data(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

#[tokio::test]
async fn reasoning_is_split_from_the_answer_in_every_dialect_streamed_or_not() {
    let state = state(&Gate::closed(), 8);
    let thought = "I should greet.";
    let answer = "Hello!";

    let (status, _, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("thinker", json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message = &serde_json::from_str::<Value>(&body).unwrap()["choices"][0]["message"];
    assert_eq!(
        (
            message["content"].as_str(),
            message["reasoning_content"].as_str()
        ),
        (Some(answer), Some(thought))
    );
    let (_, _, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("thinker", json!({"stream": true}))),
    )
    .await;
    let chunks = sse_data(&body);
    let field = |name: &str| -> String {
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"][name].as_str())
            .collect()
    };
    assert_eq!(
        (field("content"), field("reasoning_content")),
        (answer.to_string(), thought.to_string())
    );

    let ollama = json!({"model": "thinker", "messages": [{"role": "user", "content": "Hi"}], "stream": false});
    let (_, _, body) = call(&state, "POST", "/api/chat", Some(ollama.clone())).await;
    let message = &serde_json::from_str::<Value>(&body).unwrap()["message"];
    assert_eq!(
        (message["content"].as_str(), message["thinking"].as_str()),
        (Some(answer), Some(thought))
    );
    let mut streamed = ollama;
    streamed["stream"] = json!(true);
    let (_, headers, body) = call(&state, "POST", "/api/chat", Some(streamed)).await;
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let joined = |name: &str| -> String {
        lines
            .iter()
            .filter_map(|l| l["message"][name].as_str())
            .collect()
    };
    assert_eq!(
        (joined("content"), joined("thinking")),
        (answer.to_string(), thought.to_string())
    );
    assert_eq!(lines.last().unwrap()["done"], json!(true));

    let anthropic = json!({"model": "thinker", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]});
    let (_, _, body) = call(&state, "POST", "/v1/messages", Some(anthropic.clone())).await;
    let content = serde_json::from_str::<Value>(&body).unwrap()["content"].clone();
    assert_eq!(content[0]["type"], "thinking");
    assert_eq!(
        (content[0]["thinking"].as_str(), content[1]["text"].as_str()),
        (Some(thought), Some(answer))
    );
    let mut streamed = anthropic;
    streamed["stream"] = json!(true);
    let (_, _, body) = call(&state, "POST", "/v1/messages", Some(streamed)).await;
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(
        &events[events.len() - 2..],
        ["message_delta", "message_stop"]
    );
    let deltas = sse_data(&body);
    let text = |kind: &str, field: &str| -> String {
        deltas
            .iter()
            .filter(|d| d["delta"]["type"] == kind)
            .filter_map(|d| d["delta"][field].as_str())
            .collect()
    };
    assert_eq!(
        (
            text("text_delta", "text"),
            text("thinking_delta", "thinking")
        ),
        (answer.to_string(), thought.to_string())
    );

    let responses = json!({"model": "thinker", "input": "Hi"});
    let (_, _, body) = call(&state, "POST", "/v1/responses", Some(responses.clone())).await;
    let output = serde_json::from_str::<Value>(&body).unwrap()["output"].clone();
    assert_eq!(
        (
            output[0]["type"].as_str(),
            output[0]["content"][0]["text"].as_str()
        ),
        (Some("reasoning"), Some(thought))
    );
    assert_eq!(output[1]["content"][0]["text"].as_str(), Some(answer));
    let mut streamed = responses;
    streamed["stream"] = json!(true);
    let (_, _, body) = call(&state, "POST", "/v1/responses", Some(streamed)).await;
    let events = sse_data(&body);
    let deltas = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .filter_map(|e| e["delta"].as_str())
            .collect()
    };
    assert_eq!(
        (
            deltas("response.output_text.delta"),
            deltas("response.reasoning_text.delta")
        ),
        (answer.to_string(), thought.to_string())
    );
    let numbers: Vec<u64> = events
        .iter()
        .filter_map(|e| e["sequence_number"].as_u64())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap()["type"], "response.completed");
}

#[tokio::test]
async fn malformed_requests_get_4xx_in_each_dialects_shape_and_the_server_keeps_serving() {
    let state = state(&Gate::closed(), 8);
    let openai = [
        json!({"model": "fake"}),
        json!({"model": "fake", "messages": []}),
        json!({"model": "fake", "messages": [{"role": "wizard", "content": "x"}]}),
        chat(
            "fake",
            json!({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}),
        ),
        chat("fake", json!({"tool_choice": "required"})),
        chat(
            "fake",
            json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [{"type": "function", "function": {"name": "f"}}]}),
        ),
        chat(
            "fake",
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        ),
        chat(
            "fake",
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "email"}}}}),
        ),
        chat("fake", json!({"response_format": {"type": "xml"}})),
        chat("fake", json!({"top_logprobs": 3})),
        chat("fake", json!({"logprobs": true, "top_logprobs": 50})),
        chat("embedder", json!({})),
        json!({"model": "fake", "input": "x"}),
    ];
    for (i, body) in openai.iter().enumerate() {
        let uri = if i == openai.len() - 1 {
            "/v1/embeddings"
        } else {
            "/v1/chat/completions"
        };
        let (status, _, text) = call(&state, "POST", uri, Some(body.clone())).await;
        assert!(status.is_client_error(), "{body}: {status} {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(parsed["error"]["message"].is_string(), "{text}");
    }
    let ollama = [
        (
            "/api/chat",
            json!({"model": "fake", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "format": 3}),
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"}),
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "options": {"temperature": "hot"}}),
        ),
        (
            "/api/chat",
            json!({"model": "missing", "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/api/generate",
            json!({"model": "fake", "prompt": "x", "think": 7}),
        ),
        ("/api/embed", json!({"model": "fake", "input": [1.5]})),
        ("/api/show", json!({})),
    ];
    for (uri, body) in ollama {
        let (status, _, text) = call(&state, "POST", uri, Some(body.clone())).await;
        assert!(status.is_client_error(), "{uri} {body}: {status} {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(parsed["error"].is_string(), "{text}");
    }
    let anthropic = [
        json!({"model": "fake", "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "fake", "max_tokens": 8, "messages": []}),
        json!({"model": "fake", "max_tokens": 8, "messages": [{"role": "system", "content": "x"}]}),
        json!({"model": "fake", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
        json!({"model": "fake", "max_tokens": 8, "temperature": 2, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "fake", "max_tokens": 8, "tool_choice": {"type": "tool"}, "messages": [{"role": "user", "content": "x"}]}),
    ];
    for body in anthropic {
        let (status, _, text) = call(&state, "POST", "/v1/messages", Some(body.clone())).await;
        assert!(status.is_client_error(), "{body}: {status} {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["type"], "error", "{text}");
        assert!(parsed["error"]["message"].is_string(), "{text}");
    }
    let responses = [
        json!({"model": "fake"}),
        json!({"model": "fake", "input": 3}),
        json!({"model": "fake", "input": "x", "previous_response_id": "resp_1"}),
        json!({"model": "fake", "input": [{"type": "message", "role": "wizard", "content": "x"}]}),
        json!({"model": "fake", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
        json!({"model": "fake", "input": "x", "tools": [{"type": "web_search"}]}),
        json!({"model": "fake", "input": "x", "text": {"format": {"type": "json_schema"}}}),
        json!({"model": "fake", "input": "x", "max_output_tokens": 0}),
    ];
    for body in responses {
        let (status, _, text) = call(&state, "POST", "/v1/responses", Some(body.clone())).await;
        assert!(status.is_client_error(), "{body}: {status} {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(parsed["error"]["message"].is_string(), "{text}");
    }
    let (status, _, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("fake", json!({}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "still serving: {body}");
}

#[tokio::test]
async fn embeddings_are_unit_vectors_in_input_order() {
    let state = state(&Gate::closed(), 8);
    let body = json!({"model": "embedder", "input": ["abc", "zzzz", "abc"]});
    let (status, _, text) = call(&state, "POST", "/v1/embeddings", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let parsed: Value = serde_json::from_str(&text).unwrap();
    let vectors: Vec<Vec<f64>> = parsed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);
    for v in &vectors {
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
    assert_eq!(parsed["usage"]["prompt_tokens"], json!(3 + 4 + 3));
}

#[tokio::test]
async fn a_call_is_the_same_call_in_every_dialect_streamed_or_not() {
    let state = state(&Gate::closed(), 8);
    let weather = json!({"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let paris = json!({"city": "Paris"});
    let args = |text: &str| serde_json::from_str::<Value>(text).unwrap();

    let openai = chat(
        "caller",
        json!({"tools": [{"type": "function", "function": weather}]}),
    );
    let (_, _, body) = call(&state, "POST", "/v1/chat/completions", Some(openai.clone())).await;
    let choice = serde_json::from_str::<Value>(&body).unwrap()["choices"][0].clone();
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert!(choice["message"]["content"].is_null(), "{body}");
    let function = &choice["message"]["tool_calls"][0]["function"];
    assert_eq!(
        (
            function["name"].as_str(),
            args(function["arguments"].as_str().unwrap())
        ),
        (Some("get_weather"), paris.clone())
    );
    let mut streamed = openai;
    streamed["stream"] = json!(true);
    let (_, _, body) = call(&state, "POST", "/v1/chat/completions", Some(streamed)).await;
    let chunks = sse_data(&body);
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    let fragments: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert!(
        deltas.len() > 2 && deltas.iter().all(|d| d["index"] == 0),
        "{body}"
    );
    assert_eq!(args(&fragments), paris);
    assert!(
        chunks.iter().all(|c| c["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty()),
        "no call text as content"
    );

    for (uri, stream) in [
        ("/api/chat", false),
        ("/api/chat", true),
        ("/api/generate", false),
    ] {
        let mut body = json!({"model": "caller", "tools": [{"type": "function", "function": weather}], "stream": stream});
        match uri {
            "/api/chat" => body["messages"] = json!([{"role": "user", "content": "Weather?"}]),
            _ => body["prompt"] = json!("Weather?"),
        }
        let (_, _, text) = call(&state, "POST", uri, Some(body)).await;
        let calls: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .flat_map(|l| {
                l["message"]["tool_calls"]
                    .as_array()
                    .or(l["tool_calls"].as_array())
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(calls.len(), 1, "{uri} {text}");
        assert_eq!(
            (
                calls[0]["function"]["name"].as_str(),
                calls[0]["function"]["arguments"].clone()
            ),
            (Some("get_weather"), paris.clone())
        );
    }

    let tools = json!([{"name": "get_weather", "input_schema": weather["parameters"]}]);
    let anthropic = json!({"model": "caller", "max_tokens": 256, "tools": tools, "messages": [{"role": "user", "content": "Weather?"}]});
    let (_, _, body) = call(&state, "POST", "/v1/messages", Some(anthropic.clone())).await;
    let message = serde_json::from_str::<Value>(&body).unwrap();
    assert_eq!(message["stop_reason"], "tool_use");
    let block = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(
        (block["name"].as_str(), block["input"].clone()),
        (Some("get_weather"), paris.clone())
    );
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    let mut streamed = anthropic;
    streamed["stream"] = json!(true);
    let (_, _, body) = call(&state, "POST", "/v1/messages", Some(streamed)).await;
    let partial: String = sse_data(&body)
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(args(&partial), paris);

    let responses = json!({"model": "caller", "input": "Weather?", "tools": [{"type": "function", "name": "get_weather", "parameters": weather["parameters"]}]});
    let (_, _, body) = call(&state, "POST", "/v1/responses", Some(responses.clone())).await;
    let output = serde_json::from_str::<Value>(&body).unwrap()["output"].clone();
    let item = output
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    assert_eq!(
        (
            item["name"].as_str(),
            args(item["arguments"].as_str().unwrap())
        ),
        (Some("get_weather"), paris.clone())
    );
    let mut streamed = responses;
    streamed["stream"] = json!(true);
    let (_, _, body) = call(&state, "POST", "/v1/responses", Some(streamed)).await;
    let events = sse_data(&body);
    let fragments: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(args(&fragments), paris);
}

#[tokio::test]
async fn anthropic_names_the_stop_sequence_that_ended_the_answer() {
    let state = state(&Gate::closed(), 8);
    let body = json!({"model": "fake", "max_tokens": 64, "stop_sequences": ["zzz", "ere"],
                      "messages": [{"role": "user", "content": "Hi"}]});
    let (_, _, text) = call(&state, "POST", "/v1/messages", Some(body.clone())).await;
    let message: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            message["stop_reason"].as_str(),
            message["stop_sequence"].as_str()
        ),
        (Some("stop_sequence"), Some("ere"))
    );
    assert_eq!(message["content"][0]["text"], "Hello th");
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let (_, _, text) = call(&state, "POST", "/v1/messages", Some(streamed)).await;
    let delta = sse_data(&text)
        .into_iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(
        (
            delta["delta"]["stop_reason"].as_str(),
            delta["delta"]["stop_sequence"].as_str()
        ),
        (Some("stop_sequence"), Some("ere"))
    );
    let plain =
        json!({"model": "fake", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]});
    let (_, _, text) = call(&state, "POST", "/v1/messages", Some(plain)).await;
    let message: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            message["stop_reason"].as_str(),
            message["stop_sequence"].clone()
        ),
        (Some("end_turn"), Value::Null)
    );
}

/// A predicted output reaches the engine as a prediction; the tokens it
/// drafted and the ones kept come back in OpenAI's own usage fields,
/// streamed or not, and in the metrics; a request can turn speculation
/// off. (The fake drafts its prediction and keeps what matches its reply.)
#[tokio::test]
async fn predicted_outputs_are_drafted_and_reported_as_openai_reports_them() {
    let state = state(&Gate::closed(), 4);
    let prediction = json!({"prediction": {"type": "content", "content": "Hello world"}});
    let (status, _, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("fake", prediction.clone())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    // "Hello there" against "Hello world": "Hello " kept, "world" refused.
    let details = &body["usage"]["completion_tokens_details"];
    assert_eq!(details["accepted_prediction_tokens"], 6, "{body}");
    assert_eq!(details["rejected_prediction_tokens"], 5, "{body}");

    let mut streamed = chat("fake", prediction.clone());
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    streamed["prediction"]["content"] = json!([{"type": "text", "text": "Hello there"}]);
    let (_, _, body) = call(&state, "POST", "/v1/chat/completions", Some(streamed)).await;
    let last = sse_data(&body).pop().unwrap();
    let details = &last["usage"]["completion_tokens_details"];
    assert_eq!(details["accepted_prediction_tokens"], 11, "{last}");
    assert_eq!(details["rejected_prediction_tokens"], 0, "{last}");

    let mut off = chat("fake", prediction);
    off["speculative"] = json!({"n_max": 0});
    let (_, _, body) = call(&state, "POST", "/v1/chat/completions", Some(off)).await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["usage"].get("completion_tokens_details").is_none());

    let (_, _, metrics) = call(&state, "GET", "/metrics", None).await;
    for line in [
        r#"shelf_speculative_drafted_tokens_total{model="fake"} 22"#,
        r#"shelf_speculative_accepted_tokens_total{model="fake"} 17"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line}");
    }
    let ratio = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"shelf_speculative_acceptance_ratio{model="fake"} "#))
        .unwrap();
    assert!((ratio.parse::<f64>().unwrap() - 17.0 / 22.0).abs() < 1e-9);
}

/// The `speculative` extension is checked in every dialect: a bad value is
/// refused in the dialect's own shape (OpenAI's 422 for a bad value, the
/// others' 400), naming the field.
#[tokio::test]
async fn bad_speculative_settings_are_refused_in_every_dialect() {
    let state = state(&Gate::closed(), 4);
    let too_long = json!({"n_max": 65});
    let not_a_flag = json!({"ngram": "yes"});
    let cases = [
        (
            "/v1/chat/completions",
            chat("fake", json!({"speculative": too_long})),
        ),
        (
            "/v1/chat/completions",
            chat("fake", json!({"speculative": not_a_flag})),
        ),
        (
            "/v1/chat/completions",
            chat("fake", json!({"speculative.n_max": -1})),
        ),
        (
            "/v1/chat/completions",
            chat("fake", json!({"prediction": {"type": "text"}})),
        ),
        (
            "/v1/completions",
            json!({"model": "fake", "prompt": "Hi", "speculative": too_long}),
        ),
        (
            "/api/chat",
            json!({"model": "fake", "messages": [{"role": "user", "content": "Hi"}], "options": {"speculative": not_a_flag}}),
        ),
        (
            "/v1/messages",
            json!({"model": "fake", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}], "speculative": too_long}),
        ),
        (
            "/v1/responses",
            json!({"model": "fake", "input": "Hi", "speculative": "fast"}),
        ),
    ];
    for (route, body) in cases {
        let (status, _, text) = call(&state, "POST", route, Some(body.clone())).await;
        let expected = if route.starts_with("/v1/messages") || route.starts_with("/api") {
            400
        } else {
            422
        };
        assert_eq!(status, expected, "{route} {body}: {text}");
        assert!(
            text.contains("speculative") || text.contains("prediction"),
            "{route}: {text}"
        );
    }
    // Valid settings pass.
    let fine = json!({"speculative": {"n_max": 4, "ngram": true, "draft": false, "exact": false}});
    let (status, _, body) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("fake", fine)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
