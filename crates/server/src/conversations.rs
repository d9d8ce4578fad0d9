//! `/api/conversations`: the conversations kept on the box (the web chat's
//! and the assistant's), listed, searched, read, changed, exported and
//! deleted, each visible only to the API key that made it; and
//! `/api/assistant/lines`, a watched file's lines for a citation. Shelf
//! extensions in Ollama's error shape. Knows the store's interface, not its
//! tables.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shelf_assistant::conversations::to_markdown;
use shelf_assistant::{Conversation, Message, Settings, Store, Summary};

use crate::ollama::OllamaError;
use crate::{json, AppError, AppState};

type Result<T> = std::result::Result<T, OllamaError>;

/// Most conversations one listing returns.
const MOST: usize = 500;

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Words to search titles and messages for.
    q: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    /// `json` (the default) or `markdown`.
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    title: Option<String>,
    model: Option<String>,
    system: Option<String>,
    temperature: Option<f64>,
    messages: Option<Vec<MessageBody>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    role: String,
    content: String,
    #[serde(default)]
    extra: Option<Value>,
}

/// The conversations' owner: the request's key, or nobody when keys are off.
fn owner() -> Option<i64> {
    crate::auth::grant().map(|key| key.id)
}

/// The store, or 404 when this server keeps no assistant database.
pub(crate) fn store(state: &AppState) -> std::result::Result<Store, AppError> {
    let config = state.assistant.as_ref().ok_or(AppError::RouteNotFound)?;
    Store::open(&config.db).map_err(|e| AppError::Internal(e.to_string()))
}

fn internal(error: shelf_assistant::AssistantError) -> OllamaError {
    AppError::Internal(error.to_string()).into()
}

fn missing() -> OllamaError {
    AppError::NotFound("conversation".into()).into()
}

/// `GET /api/conversations[?q=WORDS][&limit=N]`.
pub async fn list(
    State(state): State<AppState>,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(query) = query.map_err(bad_query)?;
    let store = store(&state)?;
    let limit = query.limit.unwrap_or(100).clamp(1, MOST);
    let words = query.q.as_deref().filter(|q| !q.trim().is_empty());
    let found = store
        .conversations(owner(), words, limit)
        .map_err(internal)?;
    let listed: Vec<Value> = found.iter().map(summary_json).collect();
    Ok(Json(json!({ "conversations": listed })))
}

/// `POST /api/conversations`: 201 with the new conversation.
pub async fn create(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let body: Body = json::parse(body)?;
    let (settings, messages) = checked(body)?;
    let store = store(&state)?;
    let id = store
        .create_conversation(owner(), &settings, &messages.unwrap_or_default())
        .map_err(internal)?;
    let created = store.conversation(owner(), id).map_err(internal)?;
    let created = created.ok_or_else(missing)?;
    Ok((StatusCode::CREATED, Json(conversation_json(&created))).into_response())
}

/// `GET /api/conversations/{id}[?format=markdown]`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: std::result::Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(bad_query)?;
    let id = number(&id)?;
    let store = store(&state)?;
    let conversation = store.conversation(owner(), id).map_err(internal)?;
    let conversation = conversation.ok_or_else(missing)?;
    match query.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(conversation_json(&conversation)).into_response()),
        "markdown" | "md" => Ok((
            [
                (
                    header::CONTENT_TYPE,
                    "text/markdown; charset=utf-8".to_owned(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"conversation-{id}.md\""),
                ),
            ],
            to_markdown(&conversation),
        )
            .into_response()),
        _ => Err(AppError::invalid("format is json or markdown", "format").into()),
    }
}

/// `PATCH /api/conversations/{id}`: the settings given change; `messages`,
/// when given, replaces them all (edit and resend, regenerate).
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let id = number(&id)?;
    let body: Body = json::parse(body)?;
    let (settings, messages) = checked(body)?;
    let store = store(&state)?;
    let found = store
        .update_conversation(owner(), id, &settings, messages.as_deref())
        .map_err(internal)?;
    changed(&store, id, found)
}

/// `POST /api/conversations/{id}/messages`: `{"messages": [...]}` added at
/// the end.
pub async fn append(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let id = number(&id)?;
    let body: Body = json::parse(body)?;
    let Some(messages) = body.messages else {
        return Err(AppError::invalid("messages is required", "messages").into());
    };
    let messages = checked_messages(messages)?;
    let store = store(&state)?;
    let found = store
        .append_messages(owner(), id, &messages)
        .map_err(internal)?;
    changed(&store, id, found)
}

/// `DELETE /api/conversations/{id}`: the conversation and its index row.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode> {
    let id = number(&id)?;
    let store = store(&state)?;
    if store.delete_conversation(owner(), id).map_err(internal)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(missing())
    }
}

/// The conversation as it is after a change; 404 when there was none.
fn changed(store: &Store, id: i64, found: bool) -> Result<Json<Value>> {
    if !found {
        return Err(missing());
    }
    let conversation = store.conversation(owner(), id).map_err(internal)?;
    Ok(Json(conversation_json(&conversation.ok_or_else(missing)?)))
}

/// A conversation's id from the path: anything but a number names none.
fn number(id: &str) -> Result<i64> {
    id.parse().map_err(|_| missing())
}

fn bad_query(rejection: QueryRejection) -> OllamaError {
    AppError::Malformed {
        message: format!("invalid query string: {}", rejection.body_text()),
        param: None,
    }
    .into()
}

fn checked(body: Body) -> std::result::Result<(Settings, Option<Vec<Message>>), AppError> {
    if let Some(t) = body.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(AppError::invalid(
                "temperature must be between 0 and 2",
                "temperature",
            ));
        }
    }
    let messages = body.messages.map(checked_messages).transpose()?;
    let settings = Settings {
        title: body.title,
        model: body.model,
        system: body.system,
        temperature: body.temperature,
    };
    Ok((settings, messages))
}

fn checked_messages(messages: Vec<MessageBody>) -> std::result::Result<Vec<Message>, AppError> {
    messages
        .into_iter()
        .map(|m| {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(AppError::invalid(
                    "a message's role is system, user, assistant or tool",
                    "messages",
                ));
            }
            Ok(Message {
                role: m.role,
                content: m.content,
                extra: m.extra,
            })
        })
        .collect()
}

fn summary_json(summary: &Summary) -> Value {
    let mut out = json!({
        "id": summary.id,
        "title": summary.title,
        "model": summary.model,
        "created_at": summary.created_at,
        "updated_at": summary.updated_at,
        "messages": summary.messages,
    });
    if let Some(snippet) = &summary.snippet {
        out["snippet"] = json!(snippet);
    }
    out
}

fn conversation_json(conversation: &Conversation) -> Value {
    let messages: Vec<Value> = conversation
        .messages
        .iter()
        .map(|m| {
            let mut message = json!({ "role": m.role, "content": m.content });
            if let Some(extra) = &m.extra {
                message["extra"] = extra.clone();
            }
            message
        })
        .collect();
    json!({
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "system": conversation.system,
        "temperature": conversation.temperature,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "messages": messages,
    })
}

/// Most lines `/api/assistant/lines` returns.
const MOST_LINES: usize = 500;

#[derive(Debug, Deserialize)]
pub struct LinesQuery {
    path: String,
    start: Option<usize>,
    end: Option<usize>,
}

/// `GET /api/assistant/lines?path=WATCH/PATH&start=N&end=M`: lines of an
/// indexed file (at most 500), for a citation's link. The path is looked up
/// in the store as the agent's `read` looks it up, so nothing outside the
/// watched folders is reachable; the key must be allowed the assistant.
pub async fn lines(
    State(state): State<AppState>,
    query: std::result::Result<Query<LinesQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(query) = query.map_err(bad_query)?;
    if !crate::auth::may_see(crate::assistant::MODEL) {
        return Err(AppError::Forbidden {
            message: "This API key may not use the assistant".into(),
            code: "model_not_allowed",
        }
        .into());
    }
    let store = store(&state)?;
    let document = shelf_assistant::agent::lookup(&store, &query.path, None)
        .ok_or_else(|| OllamaError::from(AppError::NotFound("indexed file".into())))?;
    let all: Vec<&str> = document.text.split('\n').collect();
    let start = query.start.unwrap_or(1).clamp(1, all.len().max(1));
    let end = query
        .end
        .unwrap_or(all.len())
        .clamp(start, all.len().max(1))
        .min(start + MOST_LINES - 1);
    let lines: Vec<&str> = all[start - 1..end.min(all.len())]
        .iter()
        .map(|l| l.trim_start_matches('\x0c'))
        .collect();
    Ok(Json(json!({
        "path": query.path,
        "start": start,
        "end": end,
        "lines": lines,
    })))
}
