//! Keys, rates, the Host and Origin checks, body limits and the audit log,
//! on the router with a fake model, driven with `oneshot`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shelf_engine::fake::FakeModel;
use shelf_engine::LoadedModel;
use shelf_keys::{KeyStore, NewKey, Scope, Verifier};
use shelf_scheduler::{
    Catalog, CatalogError, HostConfig, KeepAlive, LoadPlan, Loader, ModelCost, ModelHost,
    Resolution, Sizer,
};
use shelf_server::{app, AppState, AuditConfig, AuditLog, Auth, ServerConfig};
use tower::ServiceExt;

struct Names;

impl Catalog for Names {
    fn resolve(&self, name: &str) -> Result<Resolution, CatalogError> {
        match name {
            "fake" | "other" | "embedder" => {
                Ok(Resolution::Ready(PathBuf::from(format!("/m/{name}.gguf"))))
            }
            _ => Ok(Resolution::Missing),
        }
    }
    fn list(&self) -> Result<Vec<String>, CatalogError> {
        Ok(vec!["fake".into(), "other".into()])
    }
}

fn host() -> Arc<ModelHost> {
    let loader: Arc<Loader> = Arc::new(|plan: &LoadPlan| {
        let model = match plan.name.as_str() {
            "embedder" => FakeModel::embedding(8, 256),
            _ => FakeModel::new("Hello there", 256),
        };
        Ok(Arc::new(model) as Arc<dyn LoadedModel>)
    });
    let sizer: Arc<Sizer> = Arc::new(|_: &Path| {
        Ok(ModelCost {
            fixed: 1 << 20,
            per_slot: 1 << 10,
        })
    });
    Arc::new(ModelHost::new(
        Arc::new(Names),
        loader,
        sizer,
        HostConfig {
            budget: 1 << 30,
            slots: Some(2),
            keep_alive: KeepAlive::Forever,
            max_queue: 8,
            ..HostConfig::default()
        },
    ))
}

/// A server state with keys on, its database in `dir`.
struct Keyed {
    state: AppState,
    store: KeyStore,
    _dir: tempfile::TempDir,
}

impl Keyed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let mut state = AppState::new(host());
        state.auth = Some(Arc::new(Auth::new(Verifier::open(&path).unwrap())));
        Keyed {
            state,
            store: KeyStore::open(&path).unwrap(),
            _dir: dir,
        }
    }

    fn key(&self, name: &str, scopes: &[Scope], edit: impl FnOnce(&mut NewKey)) -> String {
        let mut key = NewKey {
            name: name.into(),
            scopes: scopes.to_vec(),
            models: vec![],
            rpm: None,
            tpm: None,
            expires_at: None,
        };
        edit(&mut key);
        self.store.create(&key, now()).unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(state: &AppState, config: &ServerConfig, request: Request<Body>) -> Reply {
    let response = app(state.clone(), config).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
}

async fn chat_with(state: &AppState, headers: &[(&str, &str)]) -> Reply {
    let body = Some(chat_body("fake"));
    send(
        state,
        &ServerConfig::default(),
        request("POST", "/v1/chat/completions", headers, body),
    )
    .await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn with_no_key_created_the_server_is_open_whatever_key_is_sent() {
    let keyed = Keyed::new();
    let reply = chat_with(&keyed.state, &[("authorization", "Bearer none")]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = chat_with(&keyed.state, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn once_a_key_exists_requests_without_the_right_one_get_401_in_each_dialect() {
    let keyed = Keyed::new();
    keyed.key("ci", &[], |_| {});
    let reply = chat_with(&keyed.state, &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"]["code"], "missing_api_key");
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    let reply = chat_with(&keyed.state, &[("authorization", "Bearer shelf_wrong")]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"]["code"], "invalid_api_key");

    let config = ServerConfig::default();
    let anthropic = request(
        "POST",
        "/v1/messages",
        &[("x-api-key", "shelf_wrong")],
        Some(chat_body("fake")),
    );
    let reply = send(&keyed.state, &config, anthropic).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["type"], "error");
    assert_eq!(reply.json()["error"]["type"], "authentication_error");

    let ollama = request("POST", "/api/chat", &[], Some(chat_body("fake")));
    let reply = send(&keyed.state, &config, ollama).await;
    assert_eq!(reply.status, 401);
    assert!(reply.json()["error"].is_string(), "{}", reply.body);

    // Unknown routes need a key too, so a stranger can't map them.
    let reply = send(&keyed.state, &config, request("GET", "/nowhere", &[], None)).await;
    assert_eq!(reply.status, 401);
    // Health stays open and says only its status.
    let reply = send(&keyed.state, &config, request("GET", "/health", &[], None)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn a_key_works_in_either_header_and_revocation_counts_from_the_next_request() {
    let keyed = Keyed::new();
    let secret = keyed.key("ci", &[], |_| {});
    let reply = chat_with(&keyed.state, &[("authorization", &bearer(&secret))]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let config = ServerConfig::default();
    let messages = request(
        "POST",
        "/v1/messages",
        &[("x-api-key", &secret)],
        Some(chat_body("fake")),
    );
    assert_eq!(send(&keyed.state, &config, messages).await.status, 200);
    assert!(keyed.store.revoke("ci", now()).unwrap());
    let reply = chat_with(&keyed.state, &[("authorization", &bearer(&secret))]).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test]
async fn scopes_and_model_globs_limit_a_key_with_403() {
    let keyed = Keyed::new();
    let embed_only = keyed.key("embed", &[Scope::Embed], |_| {});
    let fake_only = keyed.key("fake", &[Scope::Chat], |k| k.models = vec!["fa*".into()]);
    let admin = keyed.key("admin", &[Scope::Admin], |_| {});
    let config = ServerConfig::default();

    let reply = chat_with(&keyed.state, &[("authorization", &bearer(&embed_only))]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["type"], "permission_error");

    let reply = chat_with(&keyed.state, &[("authorization", &bearer(&fake_only))]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let other = request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &bearer(&fake_only))],
        Some(chat_body("other")),
    );
    let reply = send(&keyed.state, &config, other).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["code"], "model_not_allowed");
    // Listings show only what the key may use.
    let list = request(
        "GET",
        "/v1/models",
        &[("authorization", &bearer(&fake_only))],
        None,
    );
    let ids: Vec<Value> = send(&keyed.state, &config, list).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("fake")]);

    // Metrics and store changes need admin.
    let metrics = request(
        "GET",
        "/metrics",
        &[("authorization", &bearer(&fake_only))],
        None,
    );
    assert_eq!(send(&keyed.state, &config, metrics).await.status, 403);
    let metrics = request(
        "GET",
        "/metrics",
        &[("authorization", &bearer(&admin))],
        None,
    );
    assert_eq!(send(&keyed.state, &config, metrics).await.status, 200);
    let delete = request(
        "DELETE",
        "/api/delete",
        &[("authorization", &bearer(&fake_only))],
        Some(json!({"model": "fake"})),
    );
    let reply = send(&keyed.state, &config, delete).await;
    assert_eq!(reply.status, 403);
    assert!(reply.json()["error"].is_string());
}

#[tokio::test]
async fn the_request_after_the_rpm_is_spent_gets_429_with_retry_after_and_rate_headers() {
    let keyed = Keyed::new();
    let secret = keyed.key("slow", &[], |k| k.rpm = Some(2));
    let auth = bearer(&secret);
    for remaining in ["1", "0"] {
        let reply = chat_with(&keyed.state, &[("authorization", &auth)]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.headers["x-ratelimit-limit-requests"], "2");
        assert_eq!(reply.headers["x-ratelimit-remaining-requests"], remaining);
    }
    let reply = chat_with(&keyed.state, &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
    let wait: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "retry-after {wait}");
    // Anthropic's clients read their own header names.
    let config = ServerConfig::default();
    let messages = request(
        "POST",
        "/v1/messages",
        &[("x-api-key", &secret)],
        Some(chat_body("fake")),
    );
    let reply = send(&keyed.state, &config, messages).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");
    assert_eq!(reply.headers["anthropic-ratelimit-requests-limit"], "2");
}

#[tokio::test]
async fn tokens_are_charged_after_the_answer_and_a_spent_tpm_gets_429() {
    let keyed = Keyed::new();
    let secret = keyed.key("tokens", &[], |k| k.tpm = Some(5));
    let auth = bearer(&secret);
    let reply = chat_with(&keyed.state, &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let used = reply.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert!(
        used > 5,
        "the fake answer should use more than the budget: {used}"
    );
    let reply = chat_with(&keyed.state, &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.json()["error"]["type"], "tokens");
}

#[tokio::test(start_paused = true)]
async fn repeated_failures_from_one_address_are_slowed_but_a_valid_key_is_not() {
    let keyed = Keyed::new();
    let secret = keyed.key("ci", &[], |_| {});
    let mut last = std::time::Duration::ZERO;
    for _ in 0..16 {
        let started = tokio::time::Instant::now();
        let reply = chat_with(&keyed.state, &[("authorization", "Bearer shelf_guess")]).await;
        assert_eq!(reply.status, 401);
        last = started.elapsed();
    }
    assert!(
        last >= std::time::Duration::from_millis(500),
        "the 16th failure took {last:?}"
    );
    let started = tokio::time::Instant::now();
    let reply = chat_with(&keyed.state, &[("authorization", &bearer(&secret))]).await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < std::time::Duration::from_millis(50));
}

#[tokio::test]
async fn only_this_servers_host_names_are_answered() {
    let state = AppState::new(host());
    let config = ServerConfig {
        bound: Some("127.0.0.1:11435".parse().unwrap()),
        allowed_hosts: vec!["box.lan".into()],
        ..ServerConfig::default()
    };
    for (host, allowed) in [
        ("localhost:11435", true),
        ("127.0.0.1:11435", true),
        ("[::1]:11435", true),
        ("box.lan", true),
        ("BOX.LAN:80", true),
        ("evil.example", false),
        ("localhost.evil.example", false),
        ("10.0.0.9:11435", false),
    ] {
        let reply = send(
            &state,
            &config,
            request("GET", "/v1/models", &[("host", host)], None),
        )
        .await;
        let expected = if allowed {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(reply.status, expected, "Host: {host}: {}", reply.body);
    }
}

#[tokio::test]
async fn other_sites_pages_are_refused_and_allowed_origins_get_cors() {
    let state = AppState::new(host());
    let config = ServerConfig {
        cors_origins: vec!["https://app.example".into()],
        ..ServerConfig::default()
    };
    let evil = [
        ("origin", "https://evil.example"),
        ("host", "localhost:11435"),
    ];
    let reply = send(
        &state,
        &config,
        request(
            "POST",
            "/v1/chat/completions",
            &evil,
            Some(chat_body("fake")),
        ),
    )
    .await;
    assert_eq!(reply.status, 403);
    let preflight = [
        ("origin", "https://evil.example"),
        ("access-control-request-method", "POST"),
        ("host", "localhost:11435"),
    ];
    let reply = send(
        &state,
        &config,
        request("OPTIONS", "/v1/chat/completions", &preflight, None),
    )
    .await;
    assert_eq!(reply.status, 403);
    assert!(!reply.headers.contains_key("access-control-allow-origin"));

    let good = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("host", "localhost:11435"),
    ];
    let reply = send(
        &state,
        &config,
        request("OPTIONS", "/v1/chat/completions", &good, None),
    )
    .await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let post = |headers: &'static [(&'static str, &'static str)]| {
        send(
            &state,
            &config,
            request(
                "POST",
                "/v1/chat/completions",
                headers,
                Some(chat_body("fake")),
            ),
        )
    };
    let reply = post(&[
        ("origin", "https://app.example"),
        ("host", "localhost:11435"),
    ])
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "https://app.example"
    );
    // The server's own pages (same origin) need no CORS.
    let reply = post(&[
        ("origin", "http://localhost:11435"),
        ("host", "localhost:11435"),
    ])
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_read() {
    let state = AppState::new(host());
    let config = ServerConfig {
        max_body_bytes: 1024,
        ..ServerConfig::default()
    };
    // The body never ends: only an answer from the declared length returns.
    let body = Body::from_stream(futures::stream::pending::<
        Result<axum::body::Bytes, std::io::Error>,
    >());
    let request = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-length", "200000000")
        .body(body)
        .unwrap();
    let reply = send(&state, &config, request).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "request_too_large");
}

#[tokio::test]
async fn the_audit_log_has_a_line_per_request_and_none_of_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let keyed = Keyed::new();
    let secret = keyed.key("auditor", &[], |_| {});
    let mut state = keyed.state.clone();
    let log = Arc::new(
        AuditLog::open(AuditConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 2,
        })
        .unwrap(),
    );
    state.audit = Some(Arc::clone(&log));
    let mut body = chat_body("fake");
    body["messages"][0]["content"] = json!("zanzibar-quokka");
    let config = ServerConfig::default();
    let auth = bearer(&secret);
    let ok = request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &auth)],
        Some(body),
    );
    let answer = send(&state, &config, ok).await;
    assert_eq!(answer.status, 200);
    let refused = request("GET", "/v1/models", &[], None);
    assert_eq!(send(&state, &config, refused).await.status, 401);
    log.close();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["key"], "auditor");
    assert_eq!(lines[0]["model"], "fake");
    assert_eq!(lines[0]["status"], 200);
    assert!(lines[0]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(lines[0]["addr"], "192.0.2.7:40000");
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[1]["key"], Value::Null);
    assert!(!text.contains("zanzibar"));
    assert!(!text.contains("Hello"));
    assert!(!text.contains(&secret));
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_still_charged_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let keyed = Keyed::new();
    let secret = keyed.key("leaver", &[], |k| k.tpm = Some(5));
    let mut state = keyed.state.clone();
    let log = Arc::new(
        AuditLog::open(AuditConfig {
            path: dir.path().join("audit.log"),
            max_bytes: 1 << 20,
            keep: 1,
        })
        .unwrap(),
    );
    state.audit = Some(Arc::clone(&log));
    let auth = bearer(&secret);
    let mut body = chat_body("fake");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(200);
    let streamed = request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &auth)],
        Some(body),
    );
    let response = app(state.clone(), &ServerConfig::default())
        .oneshot(streamed)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    let reply = chat_with(&state, &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    log.close();
    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["status"], 200);
    assert_eq!(first["finished"], false);
    assert!(first["prompt_tokens"].as_u64().unwrap() > 0, "{first}");
}
