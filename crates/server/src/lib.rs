//! The HTTP server: routes, handlers, errors and streaming.
//!
//! This is the only crate that knows HTTP. Requests are parsed into wire
//! types (`shelf-api`), validated and converted to engine requests here, on
//! the HTTP threads; raw JSON never reaches the engine. Which model is
//! resident is the scheduler's business, not this crate's.

mod admin;
mod anthropic;
mod chat;
mod convert;
mod embed;
mod error;
mod json;
mod metrics;
mod ollama;
mod openai;
mod ps;
mod responses;
mod running;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use shelf_scheduler::ModelHost;
use tokio::net::TcpListener;

pub use admin::{AdminError, ModelAdmin, PullUpdate, Pulling};
pub use error::AppError;
pub use metrics::Metrics;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Request bodies above this get 413.
    pub max_body_bytes: usize,
    /// After a shutdown signal, how long in-flight responses may take to finish.
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The resident models.
    pub host: Arc<ModelHost>,
    pub metrics: Arc<Metrics>,
    /// Set while the models named at start-up load: `/health` says 503.
    pub starting: Arc<AtomicBool>,
    /// Pull, copy and delete; `None` where the server has no store (tests).
    pub admin: Option<Arc<dyn ModelAdmin>>,
}

impl AppState {
    /// State for a host, with fresh metrics, not starting.
    pub fn new(host: Arc<ModelHost>) -> Self {
        Self {
            host,
            metrics: Arc::new(Metrics::new()),
            starting: Arc::new(AtomicBool::new(false)),
            admin: None,
        }
    }
}

/// The router, without a socket: tests drive it with `oneshot`.
pub fn app(state: AppState, config: &ServerConfig) -> Router {
    Router::new()
        .route("/", get(ollama::root))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/pull", post(ollama::pull))
        .route("/api/copy", post(ollama::copy))
        .route("/api/delete", axum::routing::delete(ollama::delete))
        .route("/health", get(openai::health))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(embed::embeddings))
        .route("/v1/responses", post(responses::create))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/ps", get(ps::ps))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { AppError::RouteNotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// Count every request by its route's template (never its raw path, which
/// a client controls) and status.
async fn count_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.request(&route, response.status().as_u16());
    response
}

/// `GET /metrics`.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.host);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Serve until `shutdown` resolves, then let in-flight responses finish for
/// up to `config.drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let router = app(state, &config);
    // Tokens go out as small writes; Nagle's algorithm would hold one back
    // until the client acknowledges the last (up to its 40 ms delayed ACK).
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
    });
    let drain_deadline = async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(config.drain_timeout).await;
    };
    tokio::select! {
        result = server => result,
        () = drain_deadline => {
            tracing::warn!("drain timeout reached; closing remaining connections");
            Ok(())
        }
    }
}

/// `{"status": ...}` for `/health`.
fn status_body(status: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": status }))
}
