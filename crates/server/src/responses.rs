//! OpenAI's Responses API (`POST /v1/responses`), stateless: input items
//! become a chat, the answer becomes output items, streamed as Responses
//! events. Stored state (`previous_response_id`) is refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shelf_engine::chat::{Chat, OutputFormat, Piece, Tool, ToolChoice};
use shelf_engine::template::{ChatMessage, ToolCall};
use shelf_engine::{Completion, SamplingParams};

use crate::chat::{self, ChatEvent, Collected, Finish, Params};
use crate::{convert, json, AppError, AppState};

#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    #[serde(default)]
    model: String,
    /// shelf's extension, as in chat completions.
    speculative: Option<Value>,
    input: Option<Value>,
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    #[serde(default)]
    stream: bool,
    previous_response_id: Option<String>,
    text: Option<TextOptions>,
    reasoning: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct TextOptions {
    format: Option<Value>,
}

/// `POST /v1/responses`.
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let request: ResponsesRequest = json::parse(body)?;
    if request.previous_response_id.is_some() {
        return Err(AppError::Malformed {
            message: "previous_response_id is not supported: shelf keeps no response state; send the whole conversation in input".into(),
            param: Some("previous_response_id".into()),
        });
    }
    let chat = chat_of(&request)?;
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: request.temperature.unwrap_or(defaults.temperature),
        top_p: request.top_p.unwrap_or(defaults.top_p),
        ..defaults
    };
    sampling.validate()?;
    let params = Params {
        sampling,
        max_tokens: convert::max_tokens(request.max_output_tokens, "max_output_tokens")?,
        cache_prompt: true,
        speculative: convert::speculative(request.speculative.as_ref(), "speculative")?,
        ..Params::default()
    };
    let run = chat::start(&state, &request.model, chat, params).await?;
    let mut frames = Frames::new(&request);
    if request.stream {
        return Ok(chat::stream(run, frames, "text/event-stream"));
    }
    let collected = run.collect().await?;
    frames.collected(collected);
    Ok(Json(frames.response()).into_response())
}

fn chat_of(request: &ResponsesRequest) -> Result<Chat, AppError> {
    let mut messages = Vec::new();
    if let Some(instructions) = &request.instructions {
        messages.push(ChatMessage::new("system", instructions.clone()));
    }
    match &request.input {
        Some(Value::String(text)) => messages.push(ChatMessage::new("user", text.clone())),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                add_item(&mut messages, item, i)?;
            }
        }
        _ => {
            return Err(AppError::Malformed {
                message: "input must be a string or a list of input items".into(),
                param: Some("input".into()),
            })
        }
    }
    if messages.iter().all(|m| m.role == "system") {
        return Err(AppError::invalid(
            "input must hold at least one message",
            "input",
        ));
    }
    let tools = request
        .tools
        .iter()
        .enumerate()
        .map(|(i, tool)| function_tool(tool, i))
        .collect::<Result<Vec<Tool>, _>>()?;
    let format = match request.text.as_ref().and_then(|t| t.format.as_ref()) {
        None => OutputFormat::Text,
        Some(format) => output_format(format)?,
    };
    let effort = request
        .reasoning
        .as_ref()
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Chat {
        messages,
        tools,
        tool_choice: tool_choice(request.tool_choice.as_ref())?,
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        format,
        think: None,
        reasoning_effort: effort,
    })
}

/// One input item onto the conversation.
fn add_item(messages: &mut Vec<ChatMessage>, item: &Value, index: usize) -> Result<(), AppError> {
    let at = format!("input[{index}]");
    let bad = |what: &str| AppError::Malformed {
        message: format!("{at}: {what}"),
        param: Some(at.clone()),
    };
    let field = |name: &str| item.get(name).and_then(Value::as_str);
    let kind = field("type").unwrap_or("message");
    match kind {
        "message" => {
            let role = match field("role") {
                Some("developer") | Some("system") => "system",
                Some(role @ ("user" | "assistant")) => role,
                _ => return Err(bad("role must be user, assistant, system or developer")),
            };
            let text = content_text(item.get("content"), &at)?;
            messages.push(ChatMessage::new(role, text));
        }
        "function_call" => {
            let call = ToolCall {
                id: field("call_id")
                    .ok_or_else(|| bad("call_id is required"))?
                    .to_string(),
                name: field("name")
                    .ok_or_else(|| bad("name is required"))?
                    .to_string(),
                arguments: convert::arguments_text(
                    item.get("arguments").unwrap_or(&Value::Null),
                    &format!("{at}.arguments"),
                )?,
            };
            // Calls of one turn join the assistant message before them.
            match messages.last_mut() {
                Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                _ => {
                    let mut turn = ChatMessage::new("assistant", "");
                    turn.tool_calls.push(call);
                    messages.push(turn);
                }
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(text)) => text.clone(),
                other => content_text(other, &at)?,
            };
            let mut result = ChatMessage::new("tool", output);
            result.tool_call_id = field("call_id").map(str::to_string);
            messages.push(result);
        }
        "reasoning" | "item_reference" => {}
        other => {
            return Err(bad(&format!(
                "input items of type '{}' are not supported",
                other.chars().take(40).collect::<String>()
            )))
        }
    }
    Ok(())
}

/// A message's content: a string, or text parts.
fn content_text(content: Option<&Value>, at: &str) -> Result<String, AppError> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("input_text" | "output_text" | "text"), Some(piece)) => {
                        text.push_str(piece)
                    }
                    (kind, _) => {
                        return Err(AppError::Malformed {
                            message: format!(
                                "{at}: content parts of type '{}' are not supported; only text is",
                                kind.unwrap_or("?").chars().take(40).collect::<String>()
                            ),
                            param: Some(at.to_string()),
                        })
                    }
                }
            }
            Ok(text)
        }
        _ => Err(AppError::Malformed {
            message: format!("{at}: content must be a string or a list of text parts"),
            param: Some(at.to_string()),
        }),
    }
}

fn function_tool(tool: &Value, index: usize) -> Result<Tool, AppError> {
    let at = format!("tools[{index}]");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(AppError::Malformed {
            message: format!("{at}.type: only function tools are supported"),
            param: Some(format!("{at}.type")),
        });
    }
    let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
    let description = tool
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let parameters = tool.get("parameters").filter(|p| !p.is_null()).cloned();
    convert::function_tool(name, description, parameters, &at)
}

fn tool_choice(value: Option<&Value>) -> Result<ToolChoice, AppError> {
    match value {
        Some(Value::Object(object))
            if object.get("type").and_then(Value::as_str) == Some("function") =>
        {
            match object.get("name").and_then(Value::as_str) {
                Some(name) => Ok(ToolChoice::Function(name.to_string())),
                None => convert::tool_choice(value),
            }
        }
        other => convert::tool_choice(other),
    }
}

/// `text.format`: flat, unlike Chat Completions' `json_schema` wrapper.
fn output_format(format: &Value) -> Result<OutputFormat, AppError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") | None => Ok(OutputFormat::Text),
        Some("json_object") => Ok(OutputFormat::JsonObject),
        Some("json_schema") => format
            .get("schema")
            .cloned()
            .map(OutputFormat::JsonSchema)
            .ok_or_else(|| AppError::Malformed {
                message: "text.format.schema is required".into(),
                param: Some("text.format.schema".into()),
            }),
        Some(_) => Err(AppError::Malformed {
            message: "text.format.type must be text, json_object or json_schema".into(),
            param: Some("text.format.type".into()),
        }),
    }
}

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{prefix}_{nanos:x}{:04x}",
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff
    )
}

/// The open output item while streaming.
enum Open {
    Message {
        index: usize,
        id: String,
        text: String,
    },
    Reasoning {
        index: usize,
        id: String,
        text: String,
    },
    /// A function call streaming its arguments.
    Call { index: usize, id: String },
}

/// The response object, built up as output arrives, and its stream events.
struct Frames {
    id: String,
    created_at: u64,
    model: String,
    echo: Map<String, Value>,
    output: Vec<Value>,
    open: Option<Open>,
    sequence: u64,
    status: &'static str,
    usage: Value,
}

impl Frames {
    fn new(request: &ResponsesRequest) -> Self {
        let mut echo = Map::new();
        echo.insert("instructions".into(), json!(request.instructions));
        echo.insert("max_output_tokens".into(), json!(request.max_output_tokens));
        echo.insert("temperature".into(), json!(request.temperature));
        echo.insert("top_p".into(), json!(request.top_p));
        echo.insert("tools".into(), json!(request.tools));
        echo.insert(
            "tool_choice".into(),
            request.tool_choice.clone().unwrap_or(json!("auto")),
        );
        echo.insert(
            "parallel_tool_calls".into(),
            json!(request.parallel_tool_calls.unwrap_or(true)),
        );
        Self {
            id: unique("resp"),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: request.model.clone(),
            echo,
            output: Vec::new(),
            open: None,
            sequence: 0,
            status: "in_progress",
            usage: Value::Null,
        }
    }

    fn response(&self) -> Value {
        let mut body = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "error": null,
            "incomplete_details": if self.status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
            "model": self.model,
            "output": self.output,
            "previous_response_id": null,
            "store": false,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "usage": self.usage,
            "metadata": {},
        });
        if let Value::Object(object) = &mut body {
            object.extend(self.echo.clone());
        }
        body
    }

    fn finish(&mut self, completion: &Completion, finish: Finish) {
        self.status = match finish {
            Finish::Length => "incomplete",
            Finish::Stop | Finish::ToolCalls => "completed",
        };
        let usage = completion.usage;
        self.usage = json!({
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        });
        convert::add_speculative(&mut self.usage, &usage);
    }

    /// A non-streamed answer's output items.
    fn collected(&mut self, collected: Collected) {
        let answer = collected.answer;
        if let Some(reasoning) = answer.reasoning {
            self.output.push(reasoning_item(&unique("rs"), &reasoning));
        }
        if !answer.content.is_empty() || answer.tool_calls.is_empty() {
            self.output
                .push(message_item(&unique("msg"), &answer.content, "completed"));
        }
        for call in &answer.tool_calls {
            self.output.push(call_item(call, "completed"));
        }
        self.finish(&collected.completion, collected.finish);
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Bytes {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        chat::sse(Some(kind), &body)
    }

    /// Close the open item, sending its closing events and keeping it.
    fn close(&mut self, out: &mut Vec<Bytes>) {
        match self.open.take() {
            // A streamed call always ends with its whole form (see `call`).
            None | Some(Open::Call { .. }) => {}
            Some(Open::Message { index, id, text }) => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let common = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = common.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                out.push(self.event("response.output_text.done", done));
                let mut part_done = common;
                part_done["part"] = part;
                out.push(self.event("response.content_part.done", part_done));
                let item = message_item(&id, &text, "completed");
                self.output.push(item.clone());
                out.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                ));
            }
            Some(Open::Reasoning { index, id, text }) => {
                let done =
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text});
                out.push(self.event("response.reasoning_text.done", done));
                let item = reasoning_item(&id, &text);
                self.output.push(item.clone());
                out.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                ));
            }
        }
    }

    fn text(&mut self, piece: String, out: &mut Vec<Bytes>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let (index, id) = (self.output.len(), unique("msg"));
            let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            let part = json!({"item_id": id, "output_index": index, "content_index": 0,
                              "part": {"type": "output_text", "text": "", "annotations": []}});
            out.push(self.event("response.content_part.added", part));
            self.open = Some(Open::Message {
                index,
                id,
                text: String::new(),
            });
        }
        if let Some(Open::Message { index, id, text }) = &mut self.open {
            text.push_str(&piece);
            let delta = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": piece, "logprobs": []});
            out.push(self.event("response.output_text.delta", delta));
        }
    }

    fn reasoning(&mut self, piece: String, out: &mut Vec<Bytes>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(out);
            let (index, id) = (self.output.len(), unique("rs"));
            let item = json!({"type": "reasoning", "id": id, "summary": [], "content": []});
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            self.open = Some(Open::Reasoning {
                index,
                id,
                text: String::new(),
            });
        }
        if let Some(Open::Reasoning { index, id, text }) = &mut self.open {
            text.push_str(&piece);
            let delta =
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": piece});
            out.push(self.event("response.reasoning_text.delta", delta));
        }
    }

    /// A streamed call begins: its item, with empty arguments.
    fn call_start(&mut self, call_id: String, name: String, out: &mut Vec<Bytes>) {
        self.close(out);
        let index = self.output.len();
        let id = unique("fc");
        let item = json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
                          "arguments": "", "status": "in_progress"});
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        self.open = Some(Open::Call { index, id });
    }

    fn call_fragment(&mut self, fragment: String, out: &mut Vec<Bytes>) {
        if let Some(Open::Call { index, id }) = &self.open {
            let delta = json!({"item_id": id, "output_index": index, "delta": fragment});
            out.push(self.event("response.function_call_arguments.delta", delta));
        }
    }

    fn call(&mut self, call: &ToolCall, out: &mut Vec<Bytes>) {
        if let Some(Open::Call { index, id }) = self.open.take() {
            let done = json!({"item_id": id, "output_index": index, "name": call.name, "arguments": call.arguments});
            out.push(self.event("response.function_call_arguments.done", done));
            let mut item = call_item(call, "completed");
            item["id"] = json!(id);
            self.output.push(item.clone());
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
            return;
        }
        self.close(out);
        let index = self.output.len();
        let mut item = call_item(call, "in_progress");
        item["arguments"] = json!("");
        let id = item["id"].clone();
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        let delta = json!({"item_id": id, "output_index": index, "delta": call.arguments});
        out.push(self.event("response.function_call_arguments.delta", delta));
        let done = json!({"item_id": id, "output_index": index, "name": call.name, "arguments": call.arguments});
        out.push(self.event("response.function_call_arguments.done", done));
        let mut item = call_item(call, "completed");
        item["id"] = id;
        self.output.push(item.clone());
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]})
}

fn call_item(call: &ToolCall, status: &str) -> Value {
    json!({"type": "function_call", "id": unique("fc"), "call_id": call.id, "name": call.name,
           "arguments": call.arguments, "status": status})
}

impl chat::Frames for Frames {
    fn start(&mut self) -> Vec<Bytes> {
        let response = self.response();
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    fn event(&mut self, event: ChatEvent) -> Vec<Bytes> {
        let mut out = Vec::new();
        match event {
            ChatEvent::Piece(Piece::Content(text)) => self.text(text, &mut out),
            ChatEvent::Piece(Piece::Reasoning(text)) => self.reasoning(text, &mut out),
            ChatEvent::Piece(Piece::CallStart { id, name }) => self.call_start(id, name, &mut out),
            ChatEvent::Piece(Piece::CallArguments(fragment)) => {
                self.call_fragment(fragment, &mut out)
            }
            ChatEvent::Piece(Piece::Call(call)) => self.call(&call, &mut out),
            ChatEvent::Logprob(_) | ChatEvent::PromptLogprobs(_) => {}
            ChatEvent::Done(completion, finish) => {
                if self.output.is_empty() && self.open.is_none() {
                    self.text(String::new(), &mut out);
                }
                self.close(&mut out);
                self.finish(&completion, finish);
                // Always `response.completed` (its status says incomplete when
                // cut off), so clients' final-response helpers have an end.
                let response = self.response();
                out.push(self.event("response.completed", json!({"response": response})));
            }
            ChatEvent::Failed(error) => {
                let (_, _, message) = AppError::from(error).status_and_message();
                let body = json!({"code": "server_error", "message": message, "param": null});
                out.push(self.event("error", body));
            }
        }
        out
    }
}
