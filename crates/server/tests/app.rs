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
            "fake" | "held" | "huge" => {
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

/// `held` models hold every generation at `gate` until it opens.
fn state(gate: &Gate, max_queue: usize) -> AppState {
    let gate = gate.clone();
    let loader: Arc<Loader> = Arc::new(move |plan: &LoadPlan| {
        let model = FakeModel::new("Hello there", 256).with_slots(plan.slots);
        let model = match plan.name.as_str() {
            "held" => model.with_gate(&gate),
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
    while state.host.status().first().is_none_or(|m| m.queued == 0) {
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
