//! Anthropic's Messages API: `POST /v1/messages` (streamed in its exact
//! event sequence) and `POST /v1/messages/count_tokens`, with errors in
//! Anthropic's shape.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shelf_engine::chat::{self as engine_chat, Chat, Piece, Tool, ToolChoice};
use shelf_engine::template::{ChatMessage, ToolCall};
use shelf_engine::{Completion, SamplingParams};

use crate::chat::{self, ChatEvent, Finish, Params};
use crate::{convert, json, AppError, AppState};

/// An error in Anthropic's shape.
pub struct AnthropicError(AppError);

impl From<AppError> for AnthropicError {
    fn from(error: AppError) -> Self {
        Self(error)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let (status, message) = self.0.status_400_and_message();
        (status, Json(error_body(status, &message))).into_response()
    }
}

fn error_body(status: StatusCode, message: &str) -> Value {
    let kind = match status.as_u16() {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

type Result<T> = std::result::Result<T, AnthropicError>;

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    /// shelf's extension, as in OpenAI's chat completions.
    speculative: Option<Value>,
    max_tokens: Option<u32>,
    #[serde(default)]
    messages: Vec<InputMessage>,
    system: Option<Value>,
    stop_sequences: Option<Vec<String>>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    #[serde(default)]
    tools: Vec<InputTool>,
    tool_choice: Option<Value>,
    thinking: Option<Value>,
    #[serde(default)]
    stream: bool,
}

#[derive(Debug, Deserialize)]
struct InputMessage {
    role: String,
    content: Value,
}

#[derive(Debug, Deserialize)]
struct InputTool {
    name: String,
    description: Option<String>,
    input_schema: Option<Value>,
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let request: MessagesRequest = json::parse(body)?;
    let max_tokens = request
        .max_tokens
        .ok_or_else(|| AppError::invalid("max_tokens: Field required", "max_tokens"))?;
    let max_tokens = convert::max_tokens(Some(max_tokens), "max_tokens")?;
    let chat = chat_of(&request)?;
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: request.temperature.unwrap_or(1.0),
        top_p: request.top_p.unwrap_or(defaults.top_p),
        top_k: request.top_k.unwrap_or(defaults.top_k),
        ..defaults
    };
    if !(0.0..=1.0).contains(&sampling.temperature) {
        return Err(
            AppError::invalid("temperature: must be between 0 and 1", "temperature").into(),
        );
    }
    sampling.validate().map_err(AppError::from)?;
    let stops = convert::check_stops(
        request.stop_sequences.clone().unwrap_or_default(),
        "stop_sequences",
    )?;
    let params = Params {
        sampling,
        max_tokens,
        stops: stops.clone(),
        logprobs: None,
        prompt_logprobs: false,
        ignore_eos: false,
        cache_prompt: true,
        keep_alive: None,
        background: false,
        speculative: convert::speculative(request.speculative.as_ref(), "speculative")?,
        prediction: None,
    };
    let run = chat::start(&state, &request.model, chat, params).await?;
    let mut frames = Frames::new(request.model.clone(), stops);
    if request.stream {
        return Ok(chat::stream(run, frames, "text/event-stream"));
    }
    let collected = run.collect().await?;
    let mut content = Vec::new();
    if let Some(reasoning) = &collected.answer.reasoning {
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }
    if !collected.answer.content.is_empty() || collected.answer.tool_calls.is_empty() {
        content.push(json!({"type": "text", "text": collected.answer.content}));
    }
    for call in &collected.answer.tool_calls {
        content.push(tool_use(call));
    }
    frames.input_tokens = collected.completion.usage.prompt_tokens;
    let mut usage = json!({
        "input_tokens": collected.completion.usage.prompt_tokens,
        "output_tokens": collected.completion.usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": collected.completion.usage.cached_tokens,
    });
    convert::add_speculative(&mut usage, &collected.completion.usage);
    Ok(Json(json!({
        "id": frames.id,
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": frames.stop_reason(&collected.completion, collected.finish),
        "stop_sequence": frames.stop_sequence(&collected.completion),
        "usage": usage,
    }))
    .into_response())
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the model's
/// template renders it.
pub async fn count_tokens(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    // The same body as a message, less what only generation reads.
    let request: MessagesRequest = json::parse(body)?;
    let chat = chat_of(&request)?;
    if request.model.is_empty() {
        return Err(AppError::invalid("model: Field required", "model").into());
    }
    crate::auth::check_model(&request.model)?;
    let lease = state
        .host
        .acquire(&request.model)
        .await
        .map_err(AppError::from)?;
    let resident = std::sync::Arc::clone(lease.resident());
    let tokens = tokio::task::spawn_blocking(move || {
        let prepared = engine_chat::prepare(&chat, &resident.template)?;
        resident.model.tokenize(&prepared.prompt)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(AppError::from)?;
    Ok(Json(json!({ "input_tokens": tokens.len() })))
}

fn chat_of(request: &MessagesRequest) -> std::result::Result<Chat, AppError> {
    if request.messages.is_empty() {
        return Err(AppError::invalid(
            "messages: at least one message is required",
            "messages",
        ));
    }
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(ChatMessage::new("system", text_of(system, "system")?));
    }
    for (i, message) in request.messages.iter().enumerate() {
        if !["user", "assistant"].contains(&message.role.as_str()) {
            return Err(AppError::invalid(
                format!("messages.{i}.role: must be 'user' or 'assistant'"),
                "messages",
            ));
        }
        messages.extend(blocks_of(&message.role, &message.content, i)?);
    }
    let tools = request
        .tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            convert::function_tool(
                &t.name,
                t.description.clone(),
                t.input_schema.clone(),
                &format!("tools.{i}"),
            )
        })
        .collect::<std::result::Result<Vec<Tool>, _>>()?;
    let (tool_choice, parallel) = tool_choice(request.tool_choice.as_ref())?;
    let think = match request
        .thinking
        .as_ref()
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
    {
        Some("enabled") => Some(true),
        Some("disabled") => Some(false),
        _ => None,
    };
    Ok(Chat {
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: parallel,
        format: engine_chat::OutputFormat::Text,
        think,
        reasoning_effort: None,
    })
}

/// A system prompt or content: a string, or text blocks.
fn text_of(value: &Value, at: &str) -> std::result::Result<String, AppError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| {
                match (
                    b.get("type").and_then(Value::as_str),
                    b.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => Ok(text.to_string()),
                    _ => Err(AppError::invalid(
                        format!("{at}: only text blocks are supported here"),
                        at,
                    )),
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(|parts| parts.join("\n")),
        _ => Err(AppError::invalid(
            format!("{at}: must be a string or a list of text blocks"),
            at,
        )),
    }
}

/// One Anthropic message as chat turns: text and tool calls stay in the
/// turn; each tool result becomes a `tool` turn.
fn blocks_of(
    role: &str,
    content: &Value,
    index: usize,
) -> std::result::Result<Vec<ChatMessage>, AppError> {
    let at = format!("messages.{index}.content");
    let blocks = match content {
        Value::String(text) => return Ok(vec![ChatMessage::new(role, text.clone())]),
        Value::Array(blocks) => blocks,
        _ => {
            return Err(AppError::invalid(
                format!("{at}: must be a string or a list of blocks"),
                "messages",
            ))
        }
    };
    let mut turn = ChatMessage::new(role, "");
    let mut results = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let field = |name: &str| block.get(name).and_then(Value::as_str).map(str::to_string);
        match kind {
            "text" => turn.content.push_str(&field("text").unwrap_or_default()),
            "thinking" => turn.reasoning = field("thinking"),
            "redacted_thinking" => {}
            "tool_use" => turn.tool_calls.push(ToolCall {
                id: field("id").unwrap_or_default(),
                name: field("name").unwrap_or_default(),
                arguments: convert::arguments_text(
                    block.get("input").unwrap_or(&Value::Null),
                    &format!("{at}.{j}.input"),
                )?,
            }),
            "tool_result" => {
                let text = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(value) => text_of(value, &format!("{at}.{j}.content"))?,
                };
                let mut result = ChatMessage::new("tool", text);
                result.tool_call_id = field("tool_use_id");
                results.push(result);
            }
            "image" | "document" => {
                return Err(AppError::invalid(
                    format!(
                        "{at}.{j}: {kind} blocks are not supported: shelf serves text models only"
                    ),
                    "messages",
                ))
            }
            other => {
                return Err(AppError::invalid(
                    format!(
                        "{at}.{j}.type: unknown block type '{}'",
                        other.chars().take(40).collect::<String>()
                    ),
                    "messages",
                ))
            }
        }
    }
    let mut turns = results;
    if !turn.content.is_empty() || !turn.tool_calls.is_empty() || turns.is_empty() {
        turns.insert(0, turn);
    }
    Ok(turns)
}

fn tool_choice(value: Option<&Value>) -> std::result::Result<(ToolChoice, bool), AppError> {
    let Some(value) = value else {
        return Ok((ToolChoice::Auto, true));
    };
    let parallel = !value
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let choice = match value.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => match value.get("name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Function(name.to_string()),
            None => {
                return Err(AppError::invalid(
                    "tool_choice.name: Field required",
                    "tool_choice",
                ))
            }
        },
        _ => {
            return Err(AppError::invalid(
                "tool_choice.type: must be auto, any, tool or none",
                "tool_choice",
            ))
        }
    };
    Ok((choice, parallel))
}

fn tool_use(call: &ToolCall) -> Value {
    let input: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
    json!({"type": "tool_use", "id": tool_use_id(&call.id), "name": call.name, "input": input})
}

/// Anthropic's ids start `toolu_`.
fn tool_use_id(id: &str) -> String {
    match id.strip_prefix("call_") {
        Some(rest) => format!("toolu_{rest}"),
        None => id.to_string(),
    }
}

/// The streamed event sequence: message_start, then each content block
/// opened, its deltas, and closed in turn, then message_delta and
/// message_stop.
struct Frames {
    id: String,
    model: String,
    input_tokens: u32,
    /// The open block's index and kind.
    open: Option<(u32, &'static str)>,
    next_index: u32,
    /// A tool_use block is streaming its input.
    call_open: bool,
    /// The request's `stop_sequences`, to name the one that ended it.
    stops: Vec<String>,
}

impl Frames {
    fn new(model: String, stops: Vec<String>) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            id: format!(
                "msg_{nanos:x}{:04x}",
                COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
            ),
            model,
            input_tokens: 0,
            open: None,
            next_index: 0,
            call_open: false,
            stops,
        }
    }

    /// The stop sequence that ended the answer, if one did.
    fn stop_sequence(&self, completion: &Completion) -> Option<String> {
        let index = usize::from(completion.stop_index?);
        self.stops.get(index).cloned()
    }

    fn stop_reason(&self, completion: &Completion, finish: Finish) -> &'static str {
        match finish {
            Finish::Stop if self.stop_sequence(completion).is_some() => "stop_sequence",
            Finish::Stop => "end_turn",
            Finish::Length => "max_tokens",
            Finish::ToolCalls => "tool_use",
        }
    }

    /// Close the open block unless it is of `kind`; open one of `kind`.
    fn block(&mut self, kind: &'static str, start: Value, out: &mut Vec<Bytes>) -> u32 {
        if let Some((index, open)) = self.open {
            if open == kind && kind != "tool_use" {
                return index;
            }
            out.extend(self.close());
        }
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        out.push(chat::sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        index
    }

    fn close(&mut self) -> Vec<Bytes> {
        let Some((index, kind)) = self.open.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if kind == "thinking" {
            let delta = json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": ""}});
            out.push(chat::sse(Some("content_block_delta"), &delta));
        }
        out.push(chat::sse(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": index}),
        ));
        out
    }

    fn delta(index: u32, delta: Value) -> Bytes {
        chat::sse(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }
}

impl chat::Frames for Frames {
    fn start(&mut self) -> Vec<Bytes> {
        let message = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        });
        vec![chat::sse(
            Some("message_start"),
            &json!({"type": "message_start", "message": message}),
        )]
    }

    fn event(&mut self, event: ChatEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        match event {
            ChatEvent::Piece(Piece::Reasoning(text)) => {
                let index = self.block(
                    "thinking",
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    &mut out,
                );
                out.push(Self::delta(
                    index,
                    json!({"type": "thinking_delta", "thinking": text}),
                ));
            }
            ChatEvent::Piece(Piece::Content(text)) => {
                let index = self.block("text", json!({"type": "text", "text": ""}), &mut out);
                out.push(Self::delta(
                    index,
                    json!({"type": "text_delta", "text": text}),
                ));
            }
            ChatEvent::Piece(Piece::CallStart { id, name }) => {
                let start =
                    json!({"type": "tool_use", "id": tool_use_id(&id), "name": name, "input": {}});
                self.block("tool_use", start, &mut out);
                self.call_open = true;
            }
            ChatEvent::Piece(Piece::CallArguments(fragment)) => {
                if let Some((index, "tool_use")) = self.open {
                    out.push(Self::delta(
                        index,
                        json!({"type": "input_json_delta", "partial_json": fragment}),
                    ));
                }
            }
            ChatEvent::Piece(Piece::Call(_)) if self.call_open => self.call_open = false,
            ChatEvent::Piece(Piece::Call(call)) => {
                let start = json!({"type": "tool_use", "id": tool_use_id(&call.id), "name": call.name, "input": {}});
                let index = self.block("tool_use", start, &mut out);
                out.push(Self::delta(
                    index,
                    json!({"type": "input_json_delta", "partial_json": call.arguments}),
                ));
            }
            ChatEvent::Logprob(_) | ChatEvent::PromptLogprobs(_) => {}
            ChatEvent::Done(completion, finish) => {
                if self.next_index == 0 {
                    // Every message has at least one block.
                    self.block("text", json!({"type": "text", "text": ""}), &mut out);
                }
                out.extend(self.close());
                let mut usage = json!({
                    "input_tokens": completion.usage.prompt_tokens,
                    "output_tokens": completion.usage.completion_tokens,
                });
                convert::add_speculative(&mut usage, &completion.usage);
                let delta = json!({
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self.stop_reason(&completion, finish),
                        "stop_sequence": self.stop_sequence(&completion),
                    },
                    "usage": usage,
                });
                out.push(chat::sse(Some("message_delta"), &delta));
                out.push(chat::sse(
                    Some("message_stop"),
                    &json!({"type": "message_stop"}),
                ));
            }
            ChatEvent::Failed(error) => {
                let (status, _, message) = AppError::from(error).status_and_message();
                out.push(chat::sse(Some("error"), &error_body(status, &message)));
            }
        }
        out
    }
}
