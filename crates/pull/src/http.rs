//! HTTP plumbing: the two clients, and status codes turned into `PullError`s.

use std::time::Duration;

use reqwest::{header, redirect, Client, RequestBuilder, Response, StatusCode};

use crate::error::PullError;

const USER_AGENT: &str = concat!("shelf/", env!("CARGO_PKG_VERSION"));

/// One client that follows redirects (downloads), one that does not (to read
/// the metadata headers of a Hugging Face redirect).
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub follow: Client,
    pub no_follow: Client,
}

impl Clients {
    pub fn new() -> Result<Self, PullError> {
        // reqwest drops Authorization when a redirect leaves the host, so a
        // token never reaches a CDN.
        let build = |policy| {
            Client::builder()
                .user_agent(USER_AGENT)
                .redirect(policy)
                .connect_timeout(Duration::from_secs(30))
                .tcp_nodelay(true)
                .build()
                .map_err(|e| PullError::Internal(format!("HTTP client: {e}")))
        };
        Ok(Self {
            follow: build(redirect::Policy::limited(10))?,
            no_follow: build(redirect::Policy::none())?,
        })
    }
}

/// Add a bearer token, if any.
pub(crate) fn with_auth(request: RequestBuilder, auth: Option<&str>) -> RequestBuilder {
    match auth {
        Some(token) => request.header(header::AUTHORIZATION, format!("Bearer {token}")),
        None => request,
    }
}

/// Send, mapping transport failures.
pub(crate) async fn send(request: RequestBuilder, url: &str) -> Result<Response, PullError> {
    request.send().await.map_err(|e| connection(url, &e))
}

pub(crate) fn connection(url: &str, error: &reqwest::Error) -> PullError {
    // The source chain says what actually happened (refused, reset, ...).
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message = format!("{message}: {inner}");
        source = inner.source();
    }
    PullError::Connection {
        url: url.to_string(),
        message,
    }
}

/// Turn an error status into the error a user can act on.
pub(crate) fn check(
    response: Response,
    what: &str,
    unauthorized_hint: &'static str,
) -> Result<Response, PullError> {
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        return Ok(response);
    }
    Err(match status {
        StatusCode::NOT_FOUND => PullError::NotFound(what.to_string()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PullError::Unauthorized {
            what: what.to_string(),
            status: status.as_u16(),
            hint: unauthorized_hint,
        },
        _ => PullError::Status {
            url: response.url().to_string(),
            status: status.as_u16(),
        },
    })
}

/// Read a small body (a manifest, a file listing), refusing anything huge.
pub(crate) async fn small_body(mut response: Response, url: &str) -> Result<Vec<u8>, PullError> {
    const LIMIT: usize = 16 << 20;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| connection(url, &e))? {
        if body.len() + chunk.len() > LIMIT {
            return Err(PullError::BadManifest {
                url: url.to_string(),
                reason: "response larger than 16 MiB".into(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
