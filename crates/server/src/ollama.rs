//! Ollama's native API on the same port: chat, generate, embed, tags,
//! show, ps and version, in Ollama's shapes (NDJSON streams, durations in
//! nanoseconds, `{"error": "..."}` errors), so its clients work unchanged.

use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shelf_engine::chat::{Answer, Chat, OutputFormat, Piece, ToolChoice};
use shelf_engine::template::{ChatMessage, ToolCall};
use shelf_engine::{Completion, SamplingParams};
use shelf_scheduler::KeepAlive;

use crate::chat::{self, ChatEvent, Finish, Params};
use crate::{convert, embed, json, AdminError, AppError, AppState, ModelAdmin, PullUpdate};

/// The Ollama version shelf answers as: clients check it for features.
const COMPATIBLE_VERSION: &str = "0.12.0";

/// An error in Ollama's shape: `{"error": "..."}`, with its status.
pub struct OllamaError(AppError);

impl From<AppError> for OllamaError {
    fn from(error: AppError) -> Self {
        Self(error)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        // Ollama's own wording, which its clients and users know.
        if let AppError::ModelNotFound(name) = &self.0 {
            let message = crate::error::clean(&format!("model '{name}' not found"));
            return (StatusCode::NOT_FOUND, Json(json!({ "error": message }))).into_response();
        }
        let (status, message) = self.0.status_400_and_message();
        (status, Json(json!({ "error": message }))).into_response()
    }
}

type Result<T> = std::result::Result<T, OllamaError>;

/// `GET /`.
pub async fn root() -> &'static str {
    "Ollama is running"
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({ "version": COMPATIBLE_VERSION }))
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    tools: Vec<convert_tool::Tool>,
    format: Option<Value>,
    options: Option<Map<String, Value>>,
    stream: Option<bool>,
    keep_alive: Option<Value>,
    think: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Option<Vec<Value>>,
    #[serde(default)]
    tool_calls: Vec<OllamaCall>,
    thinking: Option<String>,
    tool_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OllamaCall {
    function: OllamaFunction,
}

#[derive(Debug, Deserialize)]
struct OllamaFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

mod convert_tool {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    pub struct Tool {
        #[serde(rename = "type", default)]
        pub kind: String,
        pub function: Function,
    }

    #[derive(Debug, Deserialize)]
    pub struct Function {
        pub name: String,
        pub description: Option<String>,
        pub parameters: Option<serde_json::Value>,
    }
}

/// `POST /api/chat`.
pub async fn chat(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let arrived = Instant::now();
    let request: ChatRequest = json::parse(body)?;
    let mut messages = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        messages.push(message_of(message, i)?);
    }
    let tools = tools_of(&request.tools)?;
    let think = think(request.think.as_ref())?;
    let params = params(request.options.as_ref(), request.keep_alive.as_ref())?;
    if messages.is_empty() {
        // Ollama loads (or, with keep_alive 0, unloads) the model.
        return load_only(&state, &request.model, params, arrived, true).await;
    }
    let chat = Chat {
        messages,
        tools,
        tool_choice: ToolChoice::Auto,
        parallel_tool_calls: true,
        format: format(request.format.as_ref())?,
        think,
        reasoning_effort: None,
    };
    if crate::assistant::target(&request.model).is_some() {
        let asking = crate::assistant::prepare(&state, &request.model, &chat)?;
        if request.stream == Some(false) {
            let outcome = asking.run(&state, &mut |_| {}).await?;
            return Ok(assistant_reply(&request.model, outcome.answer));
        }
        return Ok(assistant_stream(asking.stream(&state), request.model));
    }
    let run = chat::start(&state, &request.model, chat, params).await?;
    let frames = Frames {
        model: request.model,
        arrived,
        chat: true,
        hide_thinking: think == Some(false),
        calls: 0,
    };
    if request.stream.unwrap_or(true) {
        return Ok(chat::stream(run, frames, "application/x-ndjson"));
    }
    let collected = run.collect().await?;
    Ok(
        Json(frames.whole(&collected.answer, &collected.completion, collected.finish))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
struct GenerateRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt: String,
    suffix: Option<String>,
    system: Option<String>,
    template: Option<String>,
    #[serde(default)]
    raw: bool,
    format: Option<Value>,
    options: Option<Map<String, Value>>,
    stream: Option<bool>,
    keep_alive: Option<Value>,
    think: Option<Value>,
    images: Option<Vec<Value>>,
    #[serde(default)]
    tools: Vec<convert_tool::Tool>,
}

/// `POST /api/generate`.
pub async fn generate(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let arrived = Instant::now();
    let request: GenerateRequest = json::parse(body)?;
    if request.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(images_refused().into());
    }
    if request.suffix.as_ref().is_some_and(|s| !s.is_empty()) || request.template.is_some() {
        return Err(AppError::invalid("suffix and template are not supported", "suffix").into());
    }
    let think = think(request.think.as_ref())?;
    let params = params(request.options.as_ref(), request.keep_alive.as_ref())?;
    if request.prompt.is_empty() {
        return load_only(&state, &request.model, params, arrived, false).await;
    }
    let stream = request.stream.unwrap_or(true);
    let run = if request.raw {
        chat::start_raw(&state, &request.model, request.prompt, params).await?
    } else {
        let mut messages = Vec::new();
        if let Some(system) = request.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", request.prompt));
        let chat = Chat {
            messages,
            tools: tools_of(&request.tools)?,
            parallel_tool_calls: true,
            format: format(request.format.as_ref())?,
            think,
            ..Chat::default()
        };
        chat::start(&state, &request.model, chat, params).await?
    };
    let frames = Frames {
        model: request.model,
        arrived,
        chat: false,
        hide_thinking: think == Some(false),
        calls: 0,
    };
    if stream {
        return Ok(chat::stream(run, frames, "application/x-ndjson"));
    }
    let collected = run.collect().await?;
    Ok(
        Json(frames.whole(&collected.answer, &collected.completion, collected.finish))
            .into_response(),
    )
}

/// An empty chat or prompt: load the model (or unload it, with
/// `keep_alive: 0`) and say so.
async fn load_only(
    state: &AppState,
    model: &str,
    params: Params,
    arrived: Instant,
    chat: bool,
) -> Result<Response> {
    if model.is_empty() {
        return Err(AppError::invalid("model is required", "model").into());
    }
    crate::auth::check_model(model)?;
    let lease = state.host.acquire(model).await.map_err(AppError::from)?;
    let unload = params.keep_alive == Some(KeepAlive::After(std::time::Duration::ZERO));
    if let Some(keep_alive) = params.keep_alive {
        lease.keep_alive(keep_alive);
    }
    drop(lease);
    let reason = if unload { "unload" } else { "load" };
    let mut body = json!({
        "model": model,
        "created_at": created_at(),
        "done": true,
        "done_reason": reason,
        "total_duration": arrived.elapsed().as_nanos() as u64,
    });
    match chat {
        true => body["message"] = json!({"role": "assistant", "content": ""}),
        false => body["response"] = json!(""),
    }
    Ok(Json(body).into_response())
}

/// Ollama's tools (OpenAI's shape, `type` optional).
fn tools_of(
    tools: &[convert_tool::Tool],
) -> std::result::Result<Vec<shelf_engine::chat::Tool>, AppError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if !t.kind.is_empty() && t.kind != "function" {
                return Err(AppError::invalid(
                    format!("tools[{i}].type must be 'function'"),
                    "tools",
                ));
            }
            convert::function_tool(
                &t.function.name,
                t.function.description.clone(),
                t.function.parameters.clone(),
                &format!("tools[{i}].function"),
            )
        })
        .collect()
}

fn images_refused() -> AppError {
    AppError::invalid(
        "images are not supported: shelf serves text models only",
        "images",
    )
}

fn message_of(message: &Message, index: usize) -> std::result::Result<ChatMessage, AppError> {
    const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];
    if !ROLES.contains(&message.role.as_str()) {
        return Err(AppError::invalid(
            format!("messages[{index}].role must be one of {}", ROLES.join(", ")),
            "messages",
        ));
    }
    if message.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(images_refused());
    }
    let mut converted = ChatMessage::new(message.role.clone(), message.content.clone());
    converted.reasoning = message.thinking.clone();
    converted.name = message.tool_name.clone();
    for (j, call) in message.tool_calls.iter().enumerate() {
        let arguments = match &call.function.arguments {
            Value::Null => "{}".to_string(),
            other => convert::arguments_text(
                other,
                &format!("messages[{index}].tool_calls[{j}].function.arguments"),
            )?,
        };
        converted.tool_calls.push(ToolCall {
            id: format!("call_{index}_{j}"),
            name: call.function.name.clone(),
            arguments,
        });
    }
    Ok(converted)
}

/// `think`: a boolean, or an effort level (which means thinking on).
fn think(value: Option<&Value>) -> std::result::Result<Option<bool>, AppError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(on)) => Ok(Some(*on)),
        Some(Value::String(level)) if ["high", "medium", "low"].contains(&level.as_str()) => {
            Ok(Some(true))
        }
        Some(_) => Err(AppError::invalid(
            "think must be true, false, \"high\", \"medium\" or \"low\"",
            "think",
        )),
    }
}

/// `format`: `"json"` or a JSON Schema.
fn format(value: Option<&Value>) -> std::result::Result<OutputFormat, AppError> {
    match value {
        None | Some(Value::Null) => Ok(OutputFormat::Text),
        Some(Value::String(s)) if s.is_empty() => Ok(OutputFormat::Text),
        Some(Value::String(s)) if s == "json" => Ok(OutputFormat::JsonObject),
        Some(schema @ Value::Object(_)) => Ok(OutputFormat::JsonSchema(schema.clone())),
        Some(_) => Err(AppError::invalid(
            "format must be \"json\" or a JSON schema object",
            "format",
        )),
    }
}

/// `options` and `keep_alive` to generation settings.
fn params(
    options: Option<&Map<String, Value>>,
    keep_alive: Option<&Value>,
) -> std::result::Result<Params, AppError> {
    let empty = Map::new();
    let options = options.unwrap_or(&empty);
    let number = |key: &str| -> std::result::Result<Option<f64>, AppError> {
        match options.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                AppError::invalid(format!("options.{key} must be a number"), "options")
            }),
        }
    };
    let defaults = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: number("temperature")?.map_or(defaults.temperature, |v| v as f32),
        top_p: number("top_p")?.map_or(defaults.top_p, |v| v as f32),
        top_k: number("top_k")?.map_or(defaults.top_k, |v| v.max(0.0) as u32),
        min_p: number("min_p")?.map_or(defaults.min_p, |v| v as f32),
        repeat_penalty: number("repeat_penalty")?.map_or(defaults.repeat_penalty, |v| v as f32),
        // -1: the whole window (the engine caps it at the context).
        repeat_last_n: number("repeat_last_n")?.map_or(defaults.repeat_last_n, |v| {
            if v < 0.0 {
                u32::MAX
            } else {
                v.min(f64::from(u32::MAX)) as u32
            }
        }),
        frequency_penalty: number("frequency_penalty")?
            .map_or(defaults.frequency_penalty, |v| v as f32),
        presence_penalty: number("presence_penalty")?
            .map_or(defaults.presence_penalty, |v| v as f32),
        seed: number("seed")?.filter(|s| *s >= 0.0).map(|s| s as u32),
    };
    sampling.validate().map_err(AppError::from)?;
    // -1: until the end of the turn; -2: until the window is full.
    let max_tokens = match number("num_predict")? {
        Some(n) if n < 0.0 => None,
        Some(0.0) => {
            return Err(AppError::invalid(
                "options.num_predict must not be 0",
                "options",
            ))
        }
        Some(n) => convert::max_tokens(Some(n.min(f64::from(u32::MAX)) as u32), "num_predict")?,
        None => None,
    };
    let stops = match options.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(_) => {
            return Err(AppError::invalid(
                "options.stop must be a list of strings",
                "options",
            ))
        }
    };
    let stops = convert::check_stops(stops, "options.stop")?;
    Ok(Params {
        sampling,
        max_tokens,
        stops,
        logprobs: None,
        prompt_logprobs: false,
        ignore_eos: false,
        cache_prompt: true,
        keep_alive: keep_alive.map(parse_keep_alive).transpose()?,
        background: false,
        speculative: convert::speculative(options.get("speculative"), "options.speculative")?,
        prediction: None,
    })
}

/// `keep_alive`: seconds as a number, or a duration string (`"5m"`); a
/// negative value keeps the model loaded.
fn parse_keep_alive(value: &Value) -> std::result::Result<KeepAlive, AppError> {
    let bad = || {
        AppError::invalid(
            "keep_alive must be a number of seconds or a duration such as \"5m\"",
            "keep_alive",
        )
    };
    let seconds = match value {
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        Value::String(text) => match text.strip_prefix('-') {
            Some(_) => -1.0,
            None => match text.parse::<f64>() {
                Ok(n) => n,
                Err(_) => humantime::parse_duration(text)
                    .map_err(|_| bad())?
                    .as_secs_f64(),
            },
        },
        _ => return Err(bad()),
    };
    Ok(match seconds < 0.0 {
        true => KeepAlive::Forever,
        false => KeepAlive::After(std::time::Duration::from_secs_f64(seconds.min(1e9))),
    })
}

/// Ollama's lines for a chat or generate answer.
struct Frames {
    model: String,
    arrived: Instant,
    /// `/api/chat` (a `message`) rather than `/api/generate` (a `response`).
    chat: bool,
    hide_thinking: bool,
    calls: u32,
}

impl Frames {
    fn line(&self, content: &str, thinking: Option<&str>, calls: Vec<Value>) -> Value {
        let mut body = json!({"model": self.model, "created_at": created_at()});
        if self.chat {
            let mut message = json!({"role": "assistant", "content": content});
            if let Some(thinking) = thinking.filter(|_| !self.hide_thinking) {
                message["thinking"] = json!(thinking);
            }
            if !calls.is_empty() {
                message["tool_calls"] = json!(calls);
            }
            body["message"] = message;
        } else {
            body["response"] = json!(content);
            if let Some(thinking) = thinking.filter(|_| !self.hide_thinking) {
                body["thinking"] = json!(thinking);
            }
            // Ollama's generate has no call field: shelf adds chat's.
            if !calls.is_empty() {
                body["tool_calls"] = json!(calls);
            }
        }
        body["done"] = json!(false);
        body
    }

    fn call(&mut self, call: &ToolCall) -> Value {
        let index = self.calls;
        self.calls += 1;
        let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
        json!({"id": call.id, "function": {"index": index, "name": call.name, "arguments": arguments}})
    }

    fn finish(&self, mut body: Value, completion: &Completion, finish: Finish) -> Value {
        let nanos = |ms: f64| (ms.max(0.0) * 1e6) as u64;
        body["done"] = json!(true);
        body["done_reason"] = json!(match finish {
            Finish::Length => "length",
            Finish::Stop | Finish::ToolCalls => "stop",
        });
        body["total_duration"] = json!(self.arrived.elapsed().as_nanos() as u64);
        body["load_duration"] = json!(0);
        body["prompt_eval_count"] = json!(completion.usage.prompt_tokens);
        body["prompt_eval_duration"] = json!(nanos(completion.timings.prefill_ms));
        body["eval_count"] = json!(completion.usage.completion_tokens);
        body["eval_duration"] = json!(nanos(completion.timings.decode_ms));
        convert::add_speculative(&mut body, &completion.usage);
        body
    }

    /// A non-streamed answer: one object.
    fn whole(mut self, answer: &Answer, completion: &Completion, finish: Finish) -> Value {
        let calls: Vec<Value> = answer.tool_calls.iter().map(|c| self.call(c)).collect();
        let body = self.line(&answer.content, answer.reasoning.as_deref(), calls);
        self.finish(body, completion, finish)
    }
}

impl chat::Frames for Frames {
    fn start(&mut self) -> Vec<Bytes> {
        Vec::new()
    }

    fn event(&mut self, event: ChatEvent) -> Vec<Bytes> {
        let line = match event {
            ChatEvent::Piece(Piece::Content(text)) => self.line(&text, None, Vec::new()),
            ChatEvent::Piece(Piece::Reasoning(text)) if !self.hide_thinking => {
                self.line("", Some(&text), Vec::new())
            }
            ChatEvent::Piece(Piece::Call(call)) => {
                let call = self.call(&call);
                self.line("", None, vec![call])
            }
            ChatEvent::Piece(
                Piece::Reasoning(_) | Piece::CallStart { .. } | Piece::CallArguments(_),
            )
            | ChatEvent::Logprob(_)
            | ChatEvent::PromptLogprobs(_) => return Vec::new(),
            ChatEvent::Done(completion, finish) => {
                let last = self.line("", None, Vec::new());
                self.finish(last, &completion, finish)
            }
            ChatEvent::Failed(error) => {
                let (_, _, message) = AppError::from(error).status_and_message();
                json!({ "error": message })
            }
        };
        vec![chat::ndjson(&line)]
    }
}

/// The `assistant` model's whole answer, as Ollama's chat body or as a
/// stream of its message line and its done line.
fn assistant_reply(model: &str, answer: String) -> Response {
    let message = json!({"role": "assistant", "content": answer});
    let body = json!({"model": model, "created_at": created_at(), "message": message,
        "done": true, "done_reason": "stop"});
    Json(body).into_response()
}

/// The assistant's answer as Ollama's NDJSON lines, text as it comes.
fn assistant_stream(
    said: impl futures::Stream<Item = crate::assistant::Said> + Send + 'static,
    model: String,
) -> Response {
    use crate::assistant::Said;
    use futures::StreamExt as _;
    let lines = said.map(move |said| {
        let line = match said {
            Said::Text(text) => json!({"model": model, "created_at": created_at(),
                "message": {"role": "assistant", "content": text}, "done": false}),
            Said::Done(_) => json!({"model": model, "created_at": created_at(),
                "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop"}),
            Said::Failed(error) => {
                let (_, _, message) = error.status_and_message();
                json!({ "error": message })
            }
        };
        Ok::<_, std::convert::Infallible>(chat::ndjson(&line))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// RFC 3339 with nanoseconds, as Ollama writes `created_at`.
fn created_at() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

#[derive(Debug, Deserialize)]
struct EmbedRequest {
    #[serde(default)]
    model: String,
    input: Option<Value>,
    /// `/api/embeddings`' single text.
    prompt: Option<String>,
    truncate: Option<bool>,
    keep_alive: Option<Value>,
    dimensions: Option<u32>,
}

/// `POST /api/embed`.
pub async fn embed(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let request: EmbedRequest = json::parse(body)?;
    if request.dimensions.is_some() {
        return Err(AppError::invalid("dimensions is not supported", "dimensions").into());
    }
    let input = request.input.clone().unwrap_or(Value::Array(Vec::new()));
    let inputs = embed::inputs(&input, "input")?;
    keep_alive_only(request.keep_alive.as_ref())?;
    let embedded = embed::embed(
        &state,
        &request.model,
        inputs,
        request.truncate.unwrap_or(true),
    )
    .await?;
    Ok(Json(json!({
        "model": request.model,
        "embeddings": embedded.vectors,
        "total_duration": embedded.elapsed.as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": embedded.prompt_tokens,
    }))
    .into_response())
}

/// `POST /api/embeddings` (the older single-text form).
pub async fn embeddings(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let request: EmbedRequest = json::parse(body)?;
    let prompt = request.prompt.clone().unwrap_or_default();
    keep_alive_only(request.keep_alive.as_ref())?;
    let inputs = embed::inputs(&Value::String(prompt), "prompt")?;
    let embedded = embed::embed(&state, &request.model, inputs, true).await?;
    let vector = embedded.vectors.into_iter().next().unwrap_or_default();
    Ok(Json(json!({ "embedding": vector })).into_response())
}

fn keep_alive_only(value: Option<&Value>) -> std::result::Result<(), AppError> {
    value.map(parse_keep_alive).transpose().map(drop)
}

/// `GET /api/tags`: every model the store offers.
pub async fn tags(State(state): State<AppState>) -> Result<Json<Value>> {
    let mut names = state.host.list().await.map_err(AppError::from)?;
    names.retain(|name| crate::auth::may_see(name));
    let mut models = Vec::new();
    for name in names {
        let path = state.host.path(&name).await.ok();
        let facts = match path {
            Some(path) => tokio::task::spawn_blocking(move || describe(&path))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let facts = facts.unwrap_or_default();
        models.push(json!({
            "name": name,
            "model": name,
            "modified_at": facts.modified,
            "size": facts.size,
            "digest": facts.digest,
            "details": facts.details,
        }));
    }
    Ok(Json(json!({ "models": models })))
}

#[derive(Debug, Deserialize)]
struct ShowRequest {
    model: Option<String>,
    name: Option<String>,
}

/// `POST /api/show`: a model's details, template and capabilities,
/// read from its GGUF without loading it.
pub async fn show(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<Value>> {
    let request: ShowRequest = json::parse(body)?;
    let name = request.model.or(request.name).unwrap_or_default();
    if name.is_empty() {
        return Err(AppError::invalid("model is required", "model").into());
    }
    crate::auth::check_model(&name)?;
    let path = state.host.path(&name).await.map_err(AppError::from)?;
    let facts = tokio::task::spawn_blocking(move || describe(&path))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| AppError::Internal("could not read the model file".into()))?;
    Ok(Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": facts.template,
        "details": facts.details,
        "model_info": facts.info,
        "capabilities": facts.capabilities,
        "modified_at": facts.modified,
    })))
}

/// What `tags` and `show` tell of a model file.
#[derive(Default)]
struct Described {
    size: u64,
    modified: String,
    digest: String,
    details: Value,
    info: Value,
    template: String,
    capabilities: Vec<&'static str>,
}

fn describe(path: &std::path::Path) -> Option<Described> {
    let metadata = std::fs::metadata(path).ok()?;
    let gguf = shelf_gguf::Gguf::open(path).ok()?;
    let facts = gguf.facts();
    let architecture = facts.architecture.clone();
    let template = gguf
        .get_str(shelf_gguf::KEY_CHAT_TEMPLATE)
        .unwrap_or_default()
        .to_string();
    let embedding = gguf.get(&format!("{architecture}.pooling_type")).is_some();
    let mut capabilities = vec![if embedding { "embedding" } else { "completion" }];
    if template.contains("tools") {
        capabilities.push("tools");
    }
    if template.contains("<think>") || template.contains("enable_thinking") {
        capabilities.push("thinking");
    }
    // Blobs are named by digest in the store; a plain file has none.
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let digest = file_name
        .strip_prefix("sha256-")
        .unwrap_or_default()
        .to_string();
    let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Some(Described {
        size: metadata.len(),
        modified: humantime::format_rfc3339_seconds(modified).to_string(),
        digest,
        details: json!({
            "parent_model": "",
            "format": "gguf",
            "family": architecture,
            "families": [architecture],
            "parameter_size": parameter_size(facts.parameters),
            "quantization_level": quantization(&facts.bytes_by_type),
        }),
        info: json!({
            "general.architecture": architecture,
            "general.parameter_count": facts.parameters,
            format!("{architecture}.context_length"): facts.context_length,
            format!("{architecture}.embedding_length"): facts.embedding,
            format!("{architecture}.block_count"): facts.layers,
        }),
        template,
        capabilities,
    })
}

fn parameter_size(parameters: u64) -> String {
    match parameters {
        p if p >= 1_000_000_000 => format!("{:.1}B", p as f64 / 1e9),
        p => format!("{}M", p / 1_000_000),
    }
}

/// The tensor type holding most of the weights, as the quantization's name.
fn quantization(bytes_by_type: &[(String, u64)]) -> String {
    bytes_by_type
        .iter()
        .max_by_key(|(_, bytes)| *bytes)
        .map(|(kind, _)| kind.clone())
        .unwrap_or_default()
}

/// The store operations, or a 500 where the server has none (tests).
fn admin(state: &AppState) -> std::result::Result<std::sync::Arc<dyn ModelAdmin>, AppError> {
    state
        .admin
        .clone()
        .ok_or_else(|| AppError::Internal("this server has no model store to change".into()))
}

fn admin_error(error: AdminError) -> AppError {
    match error {
        AdminError::NotFound(name) => AppError::ModelNotFound(name),
        AdminError::Invalid(message) => AppError::Malformed {
            message,
            param: Some("model".into()),
        },
        AdminError::Failed(message) => AppError::PullFailed(message),
    }
}

/// Run a store operation off the async threads (it touches the disk):
/// 200 with an empty body when it succeeds.
async fn store_call(
    state: &AppState,
    operation: impl FnOnce(&dyn ModelAdmin) -> std::result::Result<(), AdminError> + Send + 'static,
) -> Result<StatusCode> {
    let admin = admin(state)?;
    tokio::task::spawn_blocking(move || operation(admin.as_ref()))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(admin_error)?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
struct CopyRequest {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

/// `POST /api/copy`: 200 with an empty body.
pub async fn copy(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let request: CopyRequest = json::parse(body)?;
    if request.source.is_empty() || request.destination.is_empty() {
        return Err(AppError::invalid("source and destination are required", "source").into());
    }
    store_call(&state, move |admin| {
        admin.copy(&request.source, &request.destination)
    })
    .await
}

/// `DELETE /api/delete`: 200 with an empty body, 404 if there is no such model.
pub async fn delete(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let request: ShowRequest = json::parse(body)?;
    let name = request.model.or(request.name).unwrap_or_default();
    if name.is_empty() {
        return Err(AppError::invalid("model is required", "model").into());
    }
    store_call(&state, move |admin| admin.delete(&name)).await
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    model: Option<String>,
    name: Option<String>,
    #[serde(default)]
    insecure: bool,
    stream: Option<bool>,
}

/// `POST /api/pull`: shelf's own puller, its progress as Ollama's NDJSON
/// status lines, ending `{"status": "success"}` (or an `{"error"}` line).
pub async fn pull(
    State(state): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let request: PullRequest = json::parse(body)?;
    let name = request.model.or(request.name).unwrap_or_default();
    if name.is_empty() {
        return Err(AppError::invalid("model is required", "model").into());
    }
    let admin = admin(&state)?;
    let (updates, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let pulling = admin.pull(&name, request.insecure, updates);
    if !request.stream.unwrap_or(true) {
        pulling.await.map_err(admin_error)?;
        return Ok(Json(json!({"status": "success"})).into_response());
    }
    let lines = async_stream(move |send| async move {
        let mut pulling = pulling;
        loop {
            tokio::select! {
                Some(update) = progress.recv() => send(update_line(&update)),
                result = &mut pulling => {
                    while let Ok(update) = progress.try_recv() {
                        send(update_line(&update));
                    }
                    match result {
                        Ok(()) => send(json!({"status": "success"})),
                        Err(error) => {
                            let (_, _, message) = admin_error(error).status_and_message();
                            send(json!({"error": message}));
                        }
                    }
                    return;
                }
            }
        }
    });
    let mut response = Response::new(axum::body::Body::from_stream(lines));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

fn update_line(update: &PullUpdate) -> Value {
    let mut line = json!({"status": update.status});
    if let Some(digest) = &update.digest {
        line["digest"] = json!(digest);
    }
    if let Some(total) = update.total {
        line["total"] = json!(total);
    }
    if let Some(completed) = update.completed {
        line["completed"] = json!(completed);
    }
    line
}

/// A body stream fed by a task: each value `produce` sends becomes one NDJSON line.
fn async_stream<F, Fut>(
    produce: F,
) -> impl futures::Stream<Item = std::result::Result<Bytes, std::convert::Infallible>>
where
    F: FnOnce(Box<dyn Fn(Value) + Send + Sync>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (lines, receiver) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let send: Box<dyn Fn(Value) + Send + Sync> = Box::new(move |value| {
        let _ = lines.send(chat::ndjson(&value));
    });
    // The task ends with the pull; a client that goes away drops the
    // receiver, and the pull still finishes into the store.
    tokio::spawn(produce(send));
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|line| (Ok(line), receiver))
    })
}
