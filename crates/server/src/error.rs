//! One error type for every handler, rendered in OpenAI's error shape.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shelf_api::openai::{ErrorBody, ErrorDetail};
use shelf_engine::EngineError;
use shelf_scheduler::HostError;

/// Status, error type, code, message and param of an error.
type Parts = (
    StatusCode,
    &'static str,
    Option<&'static str>,
    String,
    Option<String>,
);

/// Everything a request can fail with, each mapped to one status code.
#[derive(Debug)]
pub enum AppError {
    /// 400: the body is not JSON, or not the right shape.
    Malformed {
        message: String,
        param: Option<String>,
    },
    /// 400: an integer below its minimum, as OpenAI reports it.
    BelowMinimum {
        param: &'static str,
        minimum: u32,
        given: u32,
    },
    /// 400: the prompt does not fit the model's context.
    ContextLength(String),
    /// 404: no such model.
    ModelNotFound(String),
    /// 404: no such route.
    RouteNotFound,
    /// 404: no such thing (a conversation, say) for this caller.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 413: the body is over the limit.
    TooLarge,
    /// 422: well-formed, but a value is out of range or unsupported.
    Invalid {
        message: String,
        param: Option<String>,
    },
    /// 503: the model is loading.
    Loading(String),
    /// 503: the model is being pulled (only when implicit pulls are allowed).
    Preparing(String),
    /// 503: the model store could not be read in time.
    StoreUnavailable(String),
    /// 500: the model could not be loaded; the message names the file.
    LoadFailed(String),
    /// 503: the model's queue is full.
    Overloaded { model: String, queued: usize },
    /// 400: the model can never fit the memory budget.
    ModelTooLarge(String),
    /// 502: fetching the model from its registry failed for good.
    PullFailed(String),
    /// 502: the model's runner process died under the request.
    ModelCrashed(String),
    /// 401: no key, or one that is wrong, revoked or expired.
    Unauthorized { missing: bool },
    /// 403: the key does not allow this, or the request came from a host or
    /// origin this server does not answer.
    Forbidden { message: String, code: &'static str },
    /// 429: over a key's requests (`kind` "requests") or tokens per minute.
    RateLimited { message: String, kind: &'static str },
    /// 408: the request body did not arrive in time.
    BodyTimeout,
    /// 500: something unexpected; details are logged, not sent.
    Internal(String),
}

impl AppError {
    pub fn invalid(message: impl Into<String>, param: &str) -> Self {
        Self::Invalid {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    /// [`Self::raw_parts`], with the message made safe to show a remote
    /// client.
    fn parts(self) -> Parts {
        let (status, kind, code, message, param) = self.raw_parts();
        (
            status,
            kind,
            code,
            clean(&message),
            param.map(|p| clean(&p)),
        )
    }

    fn raw_parts(self) -> Parts {
        use StatusCode as S;
        match self {
            Self::Malformed { message, param } => (
                S::BAD_REQUEST,
                "invalid_request_error",
                None,
                message,
                param,
            ),
            Self::BelowMinimum {
                param,
                minimum,
                given,
            } => (
                S::BAD_REQUEST,
                "invalid_request_error",
                Some("integer_below_min_value"),
                format!("Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, but got {given} instead."),
                Some(param.into()),
            ),
            Self::ContextLength(message) => (
                S::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
                message,
                Some("messages".into()),
            ),
            Self::ModelNotFound(model) => (
                S::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                format!(
                    "The model '{model}' does not exist; `shelf list` shows the models available"
                ),
                Some("model".into()),
            ),
            Self::RouteNotFound => (
                S::NOT_FOUND,
                "invalid_request_error",
                Some("unknown_url"),
                "Unknown request URL".into(),
                None,
            ),
            Self::NotFound(what) => (
                S::NOT_FOUND,
                "invalid_request_error",
                Some("not_found"),
                format!("No such {what}"),
                None,
            ),
            Self::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                Some("method_not_allowed"),
                "Method not allowed for this URL".into(),
                None,
            ),
            Self::TooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("request_too_large"),
                "The request body is larger than the server accepts".into(),
                None,
            ),
            Self::Invalid { message, param } => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                Some("invalid_value"),
                message,
                param,
            ),
            Self::Loading(model) => (
                S::SERVICE_UNAVAILABLE,
                "server_error",
                Some("model_loading"),
                format!("The model '{model}' is loading; retry shortly"),
                None,
            ),
            Self::Preparing(status) => (
                S::SERVICE_UNAVAILABLE,
                "server_error",
                Some("model_pulling"),
                status,
                None,
            ),
            Self::StoreUnavailable(detail) => (
                S::SERVICE_UNAVAILABLE,
                "server_error",
                Some("store_unavailable"),
                detail,
                None,
            ),
            Self::LoadFailed(message) => (
                S::INTERNAL_SERVER_ERROR,
                "server_error",
                Some("model_load_failed"),
                message,
                None,
            ),
            Self::Overloaded { model, queued } => (
                S::SERVICE_UNAVAILABLE,
                "server_error",
                Some("server_overloaded"),
                format!("The server is overloaded: '{model}' already has {queued} requests waiting; retry shortly"),
                None,
            ),
            Self::ModelTooLarge(message) => (
                S::BAD_REQUEST,
                "invalid_request_error",
                Some("model_too_large"),
                message,
                Some("model".into()),
            ),
            Self::PullFailed(message) => (
                S::BAD_GATEWAY,
                "server_error",
                Some("model_pull_failed"),
                message,
                None,
            ),
            Self::ModelCrashed(message) => (
                S::BAD_GATEWAY,
                "server_error",
                Some("model_crashed"),
                message,
                None,
            ),
            Self::Unauthorized { missing: true } => (
                S::UNAUTHORIZED,
                "invalid_request_error",
                Some("missing_api_key"),
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' (or 'x-api-key: KEY'); `shelf keys create` makes one".into(),
                None,
            ),
            Self::Unauthorized { missing: false } => (
                S::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect API key provided, or the key was revoked or has expired".into(),
                None,
            ),
            Self::Forbidden { message, code } => (
                S::FORBIDDEN,
                "permission_error",
                Some(code),
                message,
                None,
            ),
            Self::RateLimited { message, kind } => (
                S::TOO_MANY_REQUESTS,
                kind,
                Some("rate_limit_exceeded"),
                message,
                None,
            ),
            Self::BodyTimeout => (
                S::REQUEST_TIMEOUT,
                "invalid_request_error",
                Some("request_timeout"),
                "The request body did not arrive in time".into(),
                None,
            ),
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    S::INTERNAL_SERVER_ERROR,
                    "server_error",
                    None,
                    "The server had an error processing the request".into(),
                    None,
                )
            }
        }
    }

    /// Status, error kind and message, for dialects with other error shapes.
    pub fn status_and_message(self) -> (StatusCode, &'static str, String) {
        let (status, kind, _, message, _) = self.parts();
        (status, kind, message)
    }

    /// Status and message for Ollama's and Anthropic's APIs, which answer
    /// every bad value with 400 where OpenAI's uses 422.
    pub fn status_400_and_message(self) -> (StatusCode, String) {
        let (status, _, message) = self.status_and_message();
        match status {
            StatusCode::UNPROCESSABLE_ENTITY => (StatusCode::BAD_REQUEST, message),
            other => (other, message),
        }
    }

    /// Status and OpenAI body.
    fn render(self) -> (StatusCode, ErrorBody) {
        let (status, kind, code, message, param) = self.parts();
        let body = ErrorBody {
            error: ErrorDetail {
                message,
                kind: kind.into(),
                param,
                code: code.map(Into::into),
            },
        };
        (status, body)
    }

    /// The JSON body alone, for errors inside a stream.
    pub fn body(self) -> ErrorBody {
        self.render().1
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let retry = matches!(
            self,
            Self::Loading(_)
                | Self::Preparing(_)
                | Self::StoreUnavailable(_)
                | Self::Overloaded { .. }
        );
        let (status, body) = self.render();
        let mut response = (status, Json(body)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<HostError> for AppError {
    fn from(error: HostError) -> Self {
        match error {
            HostError::NotFound(model) => Self::ModelNotFound(model),
            HostError::Preparing(status) => Self::Preparing(status),
            HostError::StoreUnavailable(detail) => Self::StoreUnavailable(detail),
            HostError::PullFailed(detail) => Self::PullFailed(detail),
            HostError::Load(e) => Self::from(e),
            HostError::Overloaded { model, queued } => Self::Overloaded { model, queued },
            HostError::TooLarge {
                model,
                needed,
                available,
            } => Self::ModelTooLarge(format!(
                "The model '{model}' needs about {} with one slot at the served context, and the memory budget has {} for it; lower --ctx, or raise --memory-budget",
                gib(needed),
                gib(available)
            )),
            HostError::Crashed { model, how } => {
                Self::ModelCrashed(format!("The model '{model}' could not be served: its runner process stopped: {how}"))
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Longest message a client is sent, in characters: errors may quote a
/// client's own input back.
const MAX_MESSAGE_CHARS: usize = 1024;

/// `text` fit for a remote client: control characters escaped (they could
/// rewrite a terminal or forge log lines), paths cut to their last part
/// (they describe the server's disk, or probe it), and long text shortened.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS));
    let mut rest = text;
    let mut previous = ' ';
    let mut count = 0;
    while let Some(c) = rest.chars().next() {
        if count == MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        count += 1;
        if starts_path(previous) && is_path_start(rest) {
            let end = rest
                .find(|n: char| {
                    n.is_whitespace() || matches!(n, '\'' | '"' | ')' | ',' | ';' | '`')
                })
                .unwrap_or(rest.len());
            let last = rest[..end]
                .rsplit(['/', '\\'])
                .find(|p| !p.is_empty())
                .unwrap_or("");
            out.push_str("…/");
            out.extend(last.chars().flat_map(escape_control));
            rest = &rest[end..];
            previous = 'x';
            continue;
        }
        out.extend(escape_control(c));
        previous = c;
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Whether `text` begins a path: `/x`, `./`, `../`, `~/`, or `C:\`.
fn is_path_start(text: &str) -> bool {
    let bytes = text.as_bytes();
    let drive =
        bytes.len() > 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\';
    (bytes.first() == Some(&b'/') && bytes.get(1).is_some_and(|b| !b.is_ascii_whitespace()))
        || text.starts_with("./")
        || text.starts_with("../")
        || text.starts_with("~/")
        || drive
}

/// Whether a path may begin after `previous`, rather than inside a word or
/// a URL.
fn starts_path(previous: char) -> bool {
    previous.is_whitespace() || matches!(previous, '\'' | '"' | '(' | '=' | '`' | '[')
}

fn escape_control(c: char) -> impl Iterator<Item = char> {
    let escaped: Vec<char> = if c.is_control() {
        c.escape_unicode().collect()
    } else {
        vec![c]
    };
    escaped.into_iter()
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

impl From<EngineError> for AppError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::PromptTooLong { .. } => Self::ContextLength(error.to_string()),
            EngineError::EmptyPrompt => Self::invalid(error.to_string(), "messages"),
            // A schema or tool setup the server cannot honour is a bad request.
            EngineError::InvalidParam {
                param: param @ ("response_format" | "tools" | "tool_choice"),
                ..
            } => Self::Malformed {
                message: error.to_string(),
                param: Some(param.into()),
            },
            EngineError::InvalidParam { param, .. } => Self::invalid(error.to_string(), param),
            EngineError::Template(_) => Self::Malformed {
                message: error.to_string(),
                param: Some("messages".into()),
            },
            // The file's name only: clients never see the server's paths.
            EngineError::Load { path, reason } => Self::LoadFailed(format!(
                "cannot load model {}: {reason}",
                path.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            )),
            EngineError::Unavailable => Self::Loading("requested".into()),
            EngineError::Unsupported(what) => Self::Malformed {
                message: what,
                param: Some("model".into()),
            },
            EngineError::Crashed(how) => Self::ModelCrashed(format!(
                "The model's runner process stopped: {how}; retry to start it again"
            )),
            other => Self::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\u{1b}[31mb\nc"), "a\\u{1b}[31mb\\u{a}c");
    }

    #[test]
    fn absolute_paths_keep_only_their_last_part() {
        assert_eq!(
            clean("cannot open /home/ann/.shelf/models/blobs/sha256-ab: denied"),
            "cannot open …/sha256-ab: denied"
        );
        assert_eq!(
            clean("model '/etc/passwd' not found"),
            "model '…/passwd' not found"
        );
        assert_eq!(
            clean("see https://huggingface.co/a/b"),
            "see https://huggingface.co/a/b"
        );
        assert_eq!(
            clean("hf.co/org/repo:Q4 and a/b"),
            "hf.co/org/repo:Q4 and a/b"
        );
        assert_eq!(clean("1 / 2"), "1 / 2");
        assert_eq!(clean("model '../../etc/passwd'"), "model '…/passwd'");
        assert_eq!(clean("model '~/.ssh/id_rsa' x"), "model '…/id_rsa' x");
        assert_eq!(clean("model 'C:\\Windows\\win.ini'"), "model '…/win.ini'");
        assert_eq!(clean("v0.5 ./ok"), "v0.5 …/ok");
    }

    #[test]
    fn long_messages_are_cut() {
        let cleaned = clean(&"x".repeat(5000));
        assert_eq!(cleaned.chars().count(), super::MAX_MESSAGE_CHARS + 1);
    }
}
