//! The assistant's server side on the router, with a fake model and a real
//! assistant database: `/api/conversations`, the `assistant` model's stream,
//! and digests giving way to requests. Driven with `oneshot`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use shelf_assistant::store::{Content, FileRecord, Watch};
use shelf_assistant::Store;
use shelf_engine::fake::{FakeControl, FakeModel, Gate};
use shelf_engine::LoadedModel;
use shelf_keys::{KeyStore, NewKey, Scope, Verifier};
use shelf_scheduler::{
    Catalog, CatalogError, HostConfig, KeepAlive, LoadPlan, Loader, ModelCost, ModelHost,
    Resolution, Sizer,
};
use shelf_server::assistant::AssistantConfig;
use shelf_server::{app, AppState, Auth, ServerConfig};
use tower::ServiceExt;

struct Names;

impl Catalog for Names {
    fn resolve(&self, name: &str) -> Result<Resolution, CatalogError> {
        match name {
            "fake" | "held" | "embedder" => {
                Ok(Resolution::Ready(PathBuf::from(format!("/m/{name}.gguf"))))
            }
            _ => Ok(Resolution::Missing),
        }
    }
    fn list(&self) -> Result<Vec<String>, CatalogError> {
        Ok(vec!["fake".into()])
    }
}

/// The fake model's answer to everything, the assistant's turns included.
const ANSWER: &str = "The lease ends in June.";

/// A server whose assistant answers with the fake model, its database in a
/// temporary folder (kept alive by the returned guard).
fn server() -> (AppState, tempfile::TempDir) {
    let (state, dir, _) = server_with(&Gate::closed(), 2);
    (state, dir)
}

/// `held` holds each generation at `gate` until it opens; its control is
/// put in the returned slot once it loads.
fn server_with(gate: &Gate, slots: u32) -> (AppState, tempfile::TempDir, Held) {
    let gate = gate.clone();
    let held = Held::default();
    let control = Arc::clone(&held);
    let loader: Arc<Loader> = Arc::new(move |plan: &LoadPlan| {
        let model = FakeModel::new(ANSWER, 4096).with_slots(plan.slots);
        let model = match plan.name.as_str() {
            "embedder" => FakeModel::embedding(8, 256),
            "held" => {
                let model = model.with_gate(&gate);
                *control.lock().unwrap() = Some(model.control());
                model
            }
            _ => model,
        };
        Ok(Arc::new(model) as Arc<dyn LoadedModel>)
    });
    let sizer: Arc<Sizer> = Arc::new(|_: &Path| {
        Ok(ModelCost {
            fixed: 1 << 20,
            per_slot: 1 << 10,
        })
    });
    let host = ModelHost::new(
        Arc::new(Names),
        loader,
        sizer,
        HostConfig {
            budget: 1 << 30,
            slots: Some(slots),
            keep_alive: KeepAlive::Forever,
            max_queue: 8,
            ..HostConfig::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut state = AppState::new(Arc::new(host));
    state.assistant = Some(Arc::new(AssistantConfig {
        db: dir.path().join("assistant.db"),
        model: Some("fake".into()),
        embed: None,
    }));
    (state, dir, held)
}

type Held = Arc<std::sync::Mutex<Option<FakeControl>>>;

struct Reply {
    status: StatusCode,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(
    state: &AppState,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let mut request = builder
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = app(state.clone(), &ServerConfig::default())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn ids(reply: &Reply) -> Vec<i64> {
    reply.json()["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_conversation_is_created_searched_changed_exported_and_deleted() {
    let (state, _dir) = server();
    let created = send(
        &state,
        "POST",
        "/api/conversations",
        None,
        Some(json!({"model": "fake", "system": "Be brief.", "temperature": 0.3,
            "messages": [{"role": "user", "content": "Who signed the Brightwater lease?"},
                         {"role": "assistant", "content": "Ada Lovelace.", "extra": {"decode_per_s": 40.0}}]})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.json()["id"].as_i64().unwrap();
    assert_eq!(created.json()["title"], "Who signed the Brightwater lease?");
    assert_eq!(created.json()["messages"][1]["extra"]["decode_per_s"], 40.0);

    let found = send(&state, "GET", "/api/conversations?q=lovelace", None, None).await;
    assert_eq!(ids(&found), [id]);
    assert!(found.json()["conversations"][0]["snippet"]
        .as_str()
        .unwrap()
        .contains("Lovelace"));
    let none = send(&state, "GET", "/api/conversations?q=zebra", None, None).await;
    assert!(ids(&none).is_empty());

    let renamed = send(
        &state,
        "PATCH",
        &format!("/api/conversations/{id}"),
        None,
        Some(json!({"title": "Lease"})),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.json()["title"], "Lease");
    assert_eq!(renamed.json()["system"], "Be brief.");
    let appended = send(
        &state,
        "POST",
        &format!("/api/conversations/{id}/messages"),
        None,
        Some(json!({"messages": [{"role": "user", "content": "When?"}]})),
    )
    .await;
    assert_eq!(appended.json()["messages"].as_array().unwrap().len(), 3);

    let markdown = send(
        &state,
        "GET",
        &format!("/api/conversations/{id}?format=markdown"),
        None,
        None,
    )
    .await;
    assert_eq!(markdown.status, StatusCode::OK);
    assert!(markdown.content_type.starts_with("text/markdown"));
    assert!(markdown.body.starts_with("# Lease\n"), "{}", markdown.body);
    assert!(markdown.body.contains("## Assistant\n\nAda Lovelace."));

    let deleted = send(
        &state,
        "DELETE",
        &format!("/api/conversations/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = send(
        &state,
        "GET",
        &format!("/api/conversations/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(gone.json()["error"]
        .as_str()
        .unwrap()
        .contains("conversation"));
    assert!(
        ids(&send(&state, "GET", "/api/conversations?q=lovelace", None, None).await).is_empty()
    );
}

#[tokio::test]
async fn bad_requests_get_ollama_shaped_errors() {
    let (state, _dir) = server();
    let cases = [
        (
            "POST",
            "/api/conversations",
            Some(json!({"messages": [{"role": "robot", "content": "x"}]})),
            400,
        ),
        (
            "POST",
            "/api/conversations",
            Some(json!({"temperature": 9})),
            400,
        ),
        (
            "POST",
            "/api/conversations",
            Some(json!({"colour": "red"})),
            400,
        ),
        ("GET", "/api/conversations/abc", None, 404),
        ("GET", "/api/conversations/1?format=pdf", None, 404),
        ("GET", "/api/conversations?limit=lots", None, 400),
        ("DELETE", "/api/conversations/99", None, 404),
        (
            "POST",
            "/api/conversations/99/messages",
            Some(json!({})),
            400,
        ),
    ];
    for (method, uri, body, status) in cases {
        let reply = send(&state, method, uri, None, body).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{method} {uri}: {}",
            reply.body
        );
        assert!(
            reply.json()["error"].is_string(),
            "{method} {uri}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn with_keys_on_each_key_sees_only_its_own_conversations() {
    let (mut state, dir) = server();
    let path = dir.path().join("keys.db");
    state.auth = Some(Arc::new(Auth::new(Verifier::open(&path).unwrap())));
    let keys = KeyStore::open(&path).unwrap();
    let key = |name: &str| {
        let new = NewKey {
            name: name.into(),
            scopes: vec![Scope::Chat],
            models: vec![],
            rpm: None,
            tpm: None,
            expires_at: None,
        };
        keys.create(&new, 1).unwrap()
    };
    let (alice, bob) = (key("alice"), key("bob"));
    let body = json!({"messages": [{"role": "user", "content": "alice's secret plan"}]});
    let created = send(
        &state,
        "POST",
        "/api/conversations",
        Some(&alice),
        Some(body),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.json()["id"].as_i64().unwrap();
    let uri = format!("/api/conversations/{id}");

    assert_eq!(
        send(&state, "GET", "/api/conversations", None, None)
            .await
            .status,
        401
    );
    assert!(ids(&send(
        &state,
        "GET",
        "/api/conversations?q=secret",
        Some(&bob),
        None
    )
    .await)
    .is_empty());
    assert_eq!(
        send(&state, "GET", &uri, Some(&bob), None).await.status,
        404
    );
    assert_eq!(
        send(&state, "DELETE", &uri, Some(&bob), None).await.status,
        404
    );
    assert_eq!(
        ids(&send(&state, "GET", "/api/conversations", Some(&alice), None).await),
        [id]
    );
    assert_eq!(
        send(&state, "DELETE", &uri, Some(&alice), None)
            .await
            .status,
        204
    );
}

/// Content deltas of an OpenAI event stream, joined.
fn streamed_text(body: &str) -> String {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn the_assistant_streams_its_answer_and_keeps_the_conversation_going() {
    let (state, _dir) = server();
    let first = json!({"model": "assistant", "stream": true,
        "messages": [{"role": "user", "content": "When does the lease end?"}]});
    let reply = send(&state, "POST", "/v1/chat/completions", None, Some(first)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.content_type.starts_with("text/event-stream"));
    let chunks = reply.body.matches("\"content\"").count();
    assert!(chunks > 2, "the answer came in one piece: {}", reply.body);
    assert_eq!(streamed_text(&reply.body), ANSWER);
    assert!(
        reply.body.contains("\"finish_reason\":\"stop\"")
            && reply.body.ends_with("data: [DONE]\n\n")
    );

    // Ollama's client resends the history with the next question: the same
    // conversation grows.
    let next = json!({"model": "assistant",
        "messages": [{"role": "user", "content": "When does the lease end?"},
                     {"role": "assistant", "content": ANSWER},
                     {"role": "user", "content": "And who signed it?"}]});
    let reply = send(&state, "POST", "/api/chat", None, Some(next)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let lines: Vec<Value> = reply
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 2);
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert_eq!(text, ANSWER);
    assert_eq!(lines.last().unwrap()["done"], true);

    let listed = send(&state, "GET", "/api/conversations", None, None).await;
    assert_eq!(ids(&listed).len(), 1, "{}", listed.body);
    let id = ids(&listed)[0];
    let kept = send(
        &state,
        "GET",
        &format!("/api/conversations/{id}"),
        None,
        None,
    )
    .await
    .json();
    assert_eq!(kept["model"], "assistant");
    let contents: Vec<&str> = kept["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "When does the lease end?",
            ANSWER,
            "And who signed it?",
            ANSWER
        ]
    );
}

/// The assistant database in `dir` with a watch `docs` on it.
fn watched(dir: &tempfile::TempDir) -> Store {
    let store = Store::open(&dir.path().join("assistant.db")).unwrap();
    let watch = Watch {
        name: "docs".into(),
        root: dir.path().to_path_buf(),
        model: None,
    };
    store.add_watch(&watch).unwrap();
    store
}

/// Record `text` as the file `path` of `docs`, hashed by its text.
fn put(store: &Store, path: &str, text: &str) {
    let file = FileRecord {
        path: path.into(),
        size: text.len() as u64,
        mtime_ns: 1,
        content: Content::Text {
            text: text.into(),
            hash: format!("hash of {text}"),
        },
    };
    store.put("docs", &file).unwrap();
}

/// Poll `done` until it holds, failing after 10 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_gives_its_slot_to_a_waiting_request() {
    // One slot; the digest's generation is held, so without giving way the
    // chat would wait behind it for ever.
    let gate = Gate::closed();
    let (mut state, dir, held) = server_with(&gate, 1);
    let db = dir.path().join("assistant.db");
    state.assistant = Some(Arc::new(AssistantConfig {
        db: db.clone(),
        model: Some("held".into()),
        embed: None,
    }));
    let store = watched(&dir);
    put(
        &store,
        "lease.md",
        "Lease between Ada and Brightwater, ends June 2027.",
    );
    let config = state.assistant.clone().unwrap();
    let writer = tokio::spawn(shelf_server::assistant::write_digests(
        state.clone(),
        config,
    ));
    // Generations submitted to the model and held at the gate.
    let running = || {
        held.lock()
            .unwrap()
            .as_ref()
            .map_or(0, FakeControl::running)
    };
    until("the digest to take the slot", || running() == 1).await;

    let chat = json!({"model": "held", "messages": [{"role": "user", "content": "Hi"}]});
    let asking = state.clone();
    let reply = tokio::spawn(async move {
        send(&asking, "POST", "/v1/chat/completions", None, Some(chat)).await
    });
    // The chat's generation reaches the model only once it has the slot.
    until("the digest to give way", || running() == 2).await;
    assert_eq!(store.status("docs").unwrap().digested, 0);

    gate.open();
    let reply = reply.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], ANSWER);
    // Once the model is free, the digest is written after all.
    until("the digest", || store.status("docs").unwrap().digested == 1).await;
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_embedded_and_an_edit_is_embedded_again() {
    let (mut state, dir) = server();
    let db = dir.path().join("assistant.db");
    state.assistant = Some(Arc::new(AssistantConfig {
        db: db.clone(),
        model: Some("fake".into()),
        embed: Some("embedder".into()),
    }));
    let store = watched(&dir);
    // A long file is embedded a part at a time: 40 parts, three batches.
    let long: String = (0..40)
        .map(|i| format!("line {i} {}\n", "word ".repeat(190)))
        .collect();
    put(&store, "long.md", &long);
    put(&store, "short.md", "The lease ends in June.");
    let config = state.assistant.clone().unwrap();
    let writer = tokio::spawn(shelf_server::assistant::write_vectors(
        state.clone(),
        config,
    ));
    until("both files' vectors", || {
        store.status("docs").unwrap().embedded == 2
    })
    .await;
    assert!(store.unembedded("embedder", 10).unwrap().is_empty());
    let query = shelf_assistant::Embedding {
        model: "embedder".into(),
        vector: vec![1.0; 8],
    };
    assert_eq!(store.nearest(&query, None, 10).unwrap().len(), 2);

    put(&store, "short.md", "The lease ends in July.");
    assert_eq!(store.status("docs").unwrap().embedded, 1);
    until("the edit's vectors", || {
        store.status("docs").unwrap().embedded == 2
    })
    .await;
    writer.abort();
}

#[tokio::test]
async fn a_citation_opens_its_lines_and_nothing_outside_the_watches() {
    let (state, dir) = server();
    put(&watched(&dir), "notes/lease.md", "one\ntwo\nthree\nfour");
    let reply = send(
        &state,
        "GET",
        "/api/assistant/lines?path=docs/notes/lease.md&start=2&end=3",
        None,
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["lines"], json!(["two", "three"]));
    assert_eq!(
        (reply.json()["start"].clone(), reply.json()["end"].clone()),
        (json!(2), json!(3))
    );
    for path in [
        "docs/notes/../notes/lease.md",
        "/etc/passwd",
        "docs//notes/lease.md",
        "other/notes/lease.md",
        "docs/notes/missing.md",
        "docs",
    ] {
        let uri = format!("/api/assistant/lines?path={}", path.replace('/', "%2F"));
        let reply = send(&state, "GET", &uri, None, None).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.body
        );
        assert!(
            !reply.body.contains("/etc") && !reply.body.contains("two"),
            "{}",
            reply.body
        );
    }
}

#[tokio::test]
async fn the_assistant_is_listed_and_answers_carry_their_speeds() {
    let (state, _dir) = server();
    let models = send(&state, "GET", "/v1/models", None, None).await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"assistant") && ids.contains(&"fake"),
        "{ids:?}"
    );

    let chat = json!({"model": "fake", "messages": [{"role": "user", "content": "Hi"}]});
    let whole = send(
        &state,
        "POST",
        "/v1/chat/completions",
        None,
        Some(chat.clone()),
    )
    .await
    .json();
    let timings = &whole["timings"];
    assert_eq!(timings["predicted_n"], whole["usage"]["completion_tokens"]);
    assert_eq!(timings["prompt_n"], whole["usage"]["prompt_tokens"]);
    assert!(timings["predicted_per_second"].as_f64().unwrap() >= 0.0);

    let mut streamed = chat;
    streamed["stream"] = json!(true);
    let reply = send(&state, "POST", "/v1/chat/completions", None, Some(streamed)).await;
    let chunks: Vec<Value> = reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let with_timings: Vec<&Value> = chunks
        .iter()
        .filter(|c| c.get("timings").is_some())
        .collect();
    assert_eq!(with_timings.len(), 1);
    assert_eq!(with_timings[0]["choices"][0]["finish_reason"], "stop");
}
