//! The web chat's files on the router: `/` sends browsers to `/ui/`, the
//! files come with their types and a content security policy, and they load
//! without a key when keys are on. Driven with `oneshot`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use shelf_engine::fake::FakeModel;
use shelf_engine::LoadedModel;
use shelf_keys::{KeyStore, NewKey, Scope, Verifier};
use shelf_scheduler::{
    Catalog, CatalogError, HostConfig, LoadPlan, Loader, ModelCost, ModelHost, Resolution, Sizer,
};
use shelf_server::{app, AppState, Auth, ServerConfig};
use tower::ServiceExt;

struct Names;

impl Catalog for Names {
    fn resolve(&self, _: &str) -> Result<Resolution, CatalogError> {
        Ok(Resolution::Ready(PathBuf::from("/m/fake.gguf")))
    }
    fn list(&self) -> Result<Vec<String>, CatalogError> {
        Ok(vec!["fake".into()])
    }
}

fn state() -> AppState {
    let loader: Arc<Loader> =
        Arc::new(|_: &LoadPlan| Ok(Arc::new(FakeModel::new("Hi", 256)) as Arc<dyn LoadedModel>));
    let sizer: Arc<Sizer> = Arc::new(|_: &Path| {
        Ok(ModelCost {
            fixed: 1 << 20,
            per_slot: 1 << 10,
        })
    });
    let config = HostConfig {
        budget: 1 << 30,
        ..HostConfig::default()
    };
    AppState::new(Arc::new(ModelHost::new(
        Arc::new(Names),
        loader,
        sizer,
        config,
    )))
}

async fn get(
    state: &AppState,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut builder = Request::builder().uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(Body::empty()).unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = app(state.clone(), &ServerConfig::default())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn browsers_are_sent_to_the_ui_and_api_clients_get_the_plain_answer() {
    let state = state();
    let browser = "text/html,application/xhtml+xml,*/*;q=0.8";
    let (status, headers, _) = get(&state, "/", &[("accept", browser)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/ui/");
    for accept in [None, Some("*/*"), Some("application/json")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (status, _, body) = get(&state, "/", &headers).await;
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, &b"Ollama is running"[..])
        );
    }
}

#[tokio::test]
async fn the_files_come_with_their_types_and_a_strict_policy() {
    let state = state();
    let (status, headers, body) = get(&state, "/ui/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("<script type=\"module\" src=\"js/app.js\">"));
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    for (path, kind) in [
        ("/ui/js/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/vendor/marked.umd.js", "text/javascript; charset=utf-8"),
    ] {
        let (status, headers, body) = get(&state, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], kind, "{path}");
        assert!(!body.is_empty());
        // Revalidation with the file's tag answers 304 and no body.
        let etag = headers["etag"].to_str().unwrap().to_owned();
        let (status, _, body) = get(&state, path, &[("if-none-match", &etag)]).await;
        assert_eq!(
            (status, body.len()),
            (StatusCode::NOT_MODIFIED, 0),
            "{path}"
        );
    }
    let (status, _, _) = get(&state, "/ui", &[]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    for missing in [
        "/ui/nothing.js",
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
    ] {
        let (status, _, _) = get(&state, missing, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
}

#[tokio::test]
async fn with_keys_on_the_page_loads_but_the_api_behind_it_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let mut state = state();
    state.auth = Some(Arc::new(Auth::new(Verifier::open(&path).unwrap())));
    let key = NewKey {
        name: "k".into(),
        scopes: vec![Scope::Chat],
        models: vec![],
        rpm: None,
        tpm: None,
        expires_at: None,
    };
    KeyStore::open(&path).unwrap().create(&key, 1).unwrap();
    for path in ["/ui/", "/ui/js/api.js"] {
        assert_eq!(get(&state, path, &[]).await.0, StatusCode::OK, "{path}");
    }
    assert_eq!(
        get(&state, "/api/tags", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&state, "/api/conversations", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
}
