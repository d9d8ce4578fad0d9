//! The HTTP server: routes, handlers, errors and streaming.
//!
//! This is the only crate that knows HTTP. Requests are parsed into wire
//! types (`shelf-api`), validated and converted to engine requests here, on
//! the HTTP threads; raw JSON never reaches the engine. Which model is
//! resident is the scheduler's business, not this crate's.

mod admin;
mod anthropic;
pub mod assistant;
mod audit;
mod auth;
mod chat;
mod conversations;
mod convert;
mod dialect;
mod embed;
mod error;
mod guard;
mod json;
mod listen;
mod metrics;
mod ollama;
mod openai;
mod ps;
mod responses;
mod running;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use shelf_scheduler::ModelHost;
use tokio::net::TcpListener;

pub use admin::{AdminError, ModelAdmin, PullUpdate, Pulling};
pub use audit::{AuditConfig, AuditLog};
pub use auth::Auth;
pub use error::AppError;
pub use metrics::Metrics;
pub use tokio_rustls::rustls;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Request bodies above this get 413.
    pub max_body_bytes: usize,
    /// After a shutdown signal, how long in-flight responses may take to finish.
    pub drain_timeout: Duration,
    /// A request head must arrive within this (also HTTP/1.1's keep-alive).
    pub header_timeout: Duration,
    /// A whole request body must arrive within this.
    pub body_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// The largest request head (431 above it).
    pub max_header_bytes: usize,
    /// Host names answered besides localhost and the bound address.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the API (CORS).
    pub cors_origins: Vec<String>,
    /// The address bound; set by [`serve`] for the Host check.
    pub bound: Option<SocketAddr>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with this.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            drain_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
            max_header_bytes: 64 << 10,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            bound: None,
            tls: None,
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
    /// API keys; `None` leaves the server open (`--no-auth`, tests).
    pub auth: Option<Arc<Auth>>,
    /// Where each request is recorded, without its content.
    pub audit: Option<Arc<AuditLog>>,
    /// The `assistant` model's database and model; `None`: no such model.
    pub assistant: Option<Arc<assistant::AssistantConfig>>,
}

impl AppState {
    /// State for a host, with fresh metrics, not starting.
    pub fn new(host: Arc<ModelHost>) -> Self {
        Self {
            host,
            metrics: Arc::new(Metrics::new()),
            starting: Arc::new(AtomicBool::new(false)),
            admin: None,
            auth: None,
            audit: None,
            assistant: None,
        }
    }
}

/// The router, without a socket: tests drive it with `oneshot`.
pub fn app(state: AppState, config: &ServerConfig) -> Router {
    let policy = Arc::new(guard::Policy {
        bound: config.bound,
        allowed_hosts: config.allowed_hosts.clone(),
        cors_origins: config.cors_origins.clone(),
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.body_timeout,
    });
    Router::new()
        .route("/", get(ui::root))
        .route("/ui", get(ui::folder))
        .route("/ui/", get(ui::index))
        .route("/ui/{*path}", get(ui::asset))
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
        .route(
            "/api/conversations",
            get(conversations::list).post(conversations::create),
        )
        .route(
            "/api/conversations/{id}",
            get(conversations::show)
                .patch(conversations::update)
                .delete(conversations::delete),
        )
        .route(
            "/api/conversations/{id}/messages",
            post(conversations::append),
        )
        .route("/api/assistant/lines", get(conversations::lines))
        .route("/api/fit", get(admin::fit))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { AppError::RouteNotFound })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        // Outermost last: count, account, guard, keys, then the body.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&policy),
            guard::read_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(policy, guard::guard))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit::account,
        ))
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
    mut config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    config.bound = Some(listener.local_addr()?);
    let router = app(state, &config);
    listen::serve(listener, router, Arc::new(config), shutdown).await
}

/// `{"status": ...}` for `/health`.
fn status_body(status: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": status }))
}
