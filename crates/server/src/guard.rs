//! What every request passes before any key is looked at: the Host check
//! (DNS rebinding), CORS (other sites' pages), honest framing, and the body
//! limit and deadline. It knows nothing of keys, models or dialects beyond
//! picking the error shape.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD,
    CONTENT_LENGTH, HOST, ORIGIN, TRANSFER_ENCODING, VARY,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{dialect, AppError};

/// Who may talk to this server, as the browser and the LAN see it.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The address the server is bound to (`None` in router tests).
    pub bound: Option<SocketAddr>,
    /// Extra host names from `--allowed-host`; `*` allows any.
    pub allowed_hosts: Vec<String>,
    /// Origins from `--cors-origin` that get CORS headers; `*` allows any.
    pub cors_origins: Vec<String>,
    /// Bodies above this get 413, judged on `Content-Length` before reading.
    pub max_body_bytes: usize,
    /// The whole body must arrive within this.
    pub body_timeout: Duration,
}

/// Set by the connection when one request head carried both
/// `Content-Length` and `Transfer-Encoding` (hyper drops one silently).
#[derive(Debug, Clone, Default)]
pub struct ConflictingFraming(pub Arc<AtomicBool>);

/// The Host check, CORS, framing and the early 413.
pub async fn guard(State(policy): State<Arc<Policy>>, request: Request, next: Next) -> Response {
    let refuse = |error: AppError| dialect::render(request.uri().path(), request.headers(), error);
    if request
        .extensions()
        .get::<ConflictingFraming>()
        .is_some_and(|flag| flag.0.load(Ordering::Acquire))
        && request.headers().contains_key(TRANSFER_ENCODING)
    {
        let mut response = refuse(AppError::Malformed {
            message: "Content-Length and Transfer-Encoding must not both be sent".into(),
            param: None,
        });
        response
            .headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        return response;
    }
    if request.headers().get_all(HOST).iter().count() > 1 {
        return refuse(AppError::Malformed {
            message: "a request must carry one Host header".into(),
            param: None,
        });
    }
    if !host_allowed(&request, &policy) {
        return refuse(AppError::Forbidden {
            message: "This server does not answer to that Host name; start it with --allowed-host NAME to allow it".into(),
            code: "host_not_allowed",
        });
    }
    let origin = cross_origin(&request);
    if let Some(origin) = &origin {
        if !origin_allowed(origin, &policy) {
            return refuse(AppError::Forbidden {
                message: "Cross-origin requests from this origin are not allowed; start the server with --cors-origin ORIGIN to allow it".into(),
                code: "origin_not_allowed",
            });
        }
        if request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return preflight(origin);
        }
    }
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Refuse at once, without waiting for a body that may never come.
    if declared.is_some_and(|n| n > policy.max_body_bytes as u64) {
        let mut response = refuse(AppError::TooLarge);
        response
            .headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        return response;
    }
    let mut response = next.run(request).await;
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("*"));
        headers.append(VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// Read the whole body within the deadline and the limit, after the key
/// check (a stranger's upload is never buffered). Every handler wants the
/// whole body anyway; reading it here bounds a slow-drip upload.
pub async fn read_body(
    State(policy): State<Arc<Policy>>,
    request: Request,
    next: Next,
) -> Response {
    use http_body::Body as _;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, policy.max_body_bytes);
    let error = match tokio::time::timeout(policy.body_timeout, read).await {
        Ok(Ok(bytes)) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(_) => AppError::BodyTimeout,
        Ok(Err(error)) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                AppError::TooLarge
            } else {
                AppError::Malformed {
                    message: "could not read the request body".into(),
                    param: None,
                }
            }
        }
    };
    dialect::render(parts.uri.path(), &parts.headers, error)
}

/// Whether the Host names this server. A request without one (HTTP/1.0)
/// passes: browsers always send it, so rebinding can't come without one.
fn host_allowed(request: &Request, policy: &Policy) -> bool {
    if policy.allowed_hosts.iter().any(|h| h == "*") {
        return true;
    }
    let Some(host) = host_of(request) else {
        return !request.headers().contains_key(HOST);
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        // An address can't be rebound to another: only names need checking.
        // Still, answer only to addresses this server could be reached at.
        let bound = policy.bound.map(|b| b.ip());
        return ip.is_loopback()
            || bound.is_none_or(|b| b.is_unspecified() || b == ip)
            || policy.allowed_hosts.contains(&host);
    }
    host == "localhost"
        || host.ends_with(".localhost")
        || policy
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host))
}

/// The host named by the request, lower-case, without port or brackets.
fn host_of(request: &Request) -> Option<String> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.clone(),
        None => request
            .headers()
            .get(HOST)?
            .to_str()
            .ok()?
            .parse::<axum::http::uri::Authority>()
            .ok()?,
    };
    let host = authority.host();
    let host = host.strip_prefix('[').unwrap_or(host);
    let host = host.strip_suffix(']').unwrap_or(host);
    Some(host.to_ascii_lowercase())
}

/// The `Origin` of a request that comes from another site's page; `None`
/// for same-origin requests and for clients that are not browsers.
fn cross_origin(request: &Request) -> Option<HeaderValue> {
    let origin = request.headers().get(ORIGIN)?;
    let text = origin.to_str().unwrap_or("null");
    let authority = text.split_once("://").map(|(_, rest)| rest);
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| Some(request.headers().get(HOST)?.to_str().ok()?.to_string()));
    match (authority, host) {
        (Some(a), Some(h)) if a.eq_ignore_ascii_case(&h) => None,
        _ => Some(origin.clone()),
    }
}

fn origin_allowed(origin: &HeaderValue, policy: &Policy) -> bool {
    policy
        .cors_origins
        .iter()
        .any(|o| o == "*" || o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
}

fn preflight(origin: &HeaderValue) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            ),
            (
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(
                    "authorization, content-type, x-api-key, anthropic-version, anthropic-beta, openai-organization, openai-project, x-stainless-os, x-stainless-lang, x-stainless-package-version, x-stainless-runtime, x-stainless-runtime-version, x-stainless-arch, x-stainless-retry-count, x-stainless-timeout",
                ),
            ),
            (ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600")),
            (VARY, HeaderValue::from_static("origin")),
        ],
    )
        .into_response()
}
