//! Wire types to engine types and back: the one place they meet.

use serde_json::Value;
use shelf_api::openai::{self as wire, MessageContent, SamplingFields};
use shelf_engine::chat::{Chat, OutputFormat, Tool, ToolChoice};
use shelf_engine::template::{ChatMessage, ToolCall};
use shelf_engine::{
    SamplingParams, SpeculativeConfig, SpeculativeRequest, TokenLogprob, Usage, MAX_TOP_LOGPROBS,
};

use crate::chat::{token_text, Finish};
use crate::AppError;

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
const MAX_STOPS: usize = 16;
/// Longest stop string accepted, in bytes: matching holds back up to this
/// much text, and an unbounded one would hold back the whole answer.
const MAX_STOP_BYTES: usize = 512;

/// Sampling settings, defaulting as llama.cpp does; out-of-range values are 422.
pub fn sampling(fields: &SamplingFields) -> Result<SamplingParams, AppError> {
    if let Some(n) = fields.n {
        if n != 1 {
            return Err(AppError::invalid("only n=1 is supported", "n"));
        }
    }
    let defaults = SamplingParams::default();
    let params = SamplingParams {
        temperature: fields.temperature.unwrap_or(defaults.temperature),
        top_p: fields.top_p.unwrap_or(defaults.top_p),
        top_k: fields.top_k.unwrap_or(defaults.top_k),
        min_p: fields.min_p.unwrap_or(defaults.min_p),
        repeat_penalty: fields.repeat_penalty.unwrap_or(defaults.repeat_penalty),
        repeat_last_n: defaults.repeat_last_n,
        frequency_penalty: fields
            .frequency_penalty
            .unwrap_or(defaults.frequency_penalty),
        presence_penalty: fields.presence_penalty.unwrap_or(defaults.presence_penalty),
        // -1 is llama.cpp's "random"; other values keep their low 32 bits.
        seed: fields.seed.filter(|&s| s != -1).map(|s| s as u32),
    };
    params.validate()?;
    Ok(params)
}

/// Stop strings from `stop`, bounded in number.
pub fn stops(fields: &SamplingFields) -> Result<Vec<String>, AppError> {
    let stops = fields
        .stop
        .clone()
        .map(wire::Stop::into_vec)
        .unwrap_or_default();
    check_stops(stops, "stop")
}

/// Stop strings, bounded in number and length (matching runs on the
/// decode thread, and holds back up to the longest one's bytes).
pub fn check_stops(stops: Vec<String>, param: &str) -> Result<Vec<String>, AppError> {
    if stops.len() > MAX_STOPS {
        return Err(AppError::invalid(
            format!("at most {MAX_STOPS} stop strings are supported"),
            param,
        ));
    }
    if stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(AppError::invalid(
            format!("each stop string may be at most {MAX_STOP_BYTES} bytes"),
            param,
        ));
    }
    Ok(stops)
}

/// The most output tokens one request may ask for: beyond any model's
/// context, so only nonsense is refused.
pub const MAX_OUTPUT_TOKENS: u32 = 1 << 20;

/// `max_tokens` (or `max_completion_tokens`), which must be at least 1.
pub fn max_tokens(value: Option<u32>, param: &'static str) -> Result<Option<u32>, AppError> {
    match value {
        Some(0) => Err(AppError::BelowMinimum {
            param,
            minimum: 1,
            given: 0,
        }),
        Some(n) if n > MAX_OUTPUT_TOKENS => Err(AppError::Malformed {
            message: format!(
                "{param} is too large: {n}; at most {MAX_OUTPUT_TOKENS} tokens may be asked for"
            ),
            param: Some(param.into()),
        }),
        other => Ok(other),
    }
}

/// The conversation, with text parts joined; other part types are 422.
pub fn messages(messages: &[wire::ChatMessage]) -> Result<Vec<ChatMessage>, AppError> {
    if messages.is_empty() {
        return Err(AppError::invalid(
            "messages must contain at least one message",
            "messages",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            if !ROLES.contains(&message.role.as_str()) {
                return Err(AppError::invalid(
                    format!(
                        "unknown role '{}'; expected one of {}",
                        message.role,
                        ROLES.join(", ")
                    ),
                    &format!("messages[{i}].role"),
                ));
            }
            let content = match &message.content {
                None => String::new(),
                Some(MessageContent::Text(text)) => text.clone(),
                Some(MessageContent::Parts(parts)) => text_parts(parts, i)?,
            };
            let mut converted = ChatMessage::new(message.role.clone(), content);
            converted.reasoning = message.reasoning_content.clone();
            converted.tool_call_id = message.tool_call_id.clone();
            converted.name = message.name.clone();
            for (j, call) in message.tool_calls.iter().flatten().enumerate() {
                let at = format!("messages[{i}].tool_calls[{j}].function.arguments");
                converted.tool_calls.push(ToolCall {
                    id: call.id.clone(),
                    name: call.function.name.clone(),
                    arguments: arguments_text(&call.function.arguments, &at)?,
                });
            }
            Ok(converted)
        })
        .collect()
}

/// Arguments as a JSON object's text: OpenAI sends a string holding one,
/// some clients the object itself.
pub fn arguments_text(arguments: &Value, at: &str) -> Result<String, AppError> {
    let object = match arguments {
        Value::String(text) => serde_json::from_str::<Value>(text).ok(),
        other => Some(other.clone()),
    };
    match object {
        Some(object @ Value::Object(_)) => Ok(object.to_string()),
        _ => Err(AppError::Malformed {
            message: format!(
                "invalid value for '{at}': must be a JSON object (or a string holding one)"
            ),
            param: Some(at.to_string()),
        }),
    }
}

/// The whole chat request in the engine's terms.
pub fn chat(request: &wire::ChatCompletionRequest) -> Result<Chat, AppError> {
    let tools = tools(request.tools.as_deref().unwrap_or_default())?;
    Ok(Chat {
        messages: messages(&request.messages)?,
        tool_choice: tool_choice(request.tool_choice.as_ref())?,
        tools,
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        format: response_format(request.response_format.as_ref())?,
        think: None,
        reasoning_effort: request.reasoning_effort.clone(),
    })
}

/// Function tools; other kinds are refused.
pub fn tools(tools: &[wire::ToolDefinition]) -> Result<Vec<Tool>, AppError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            if tool.kind != "function" {
                return Err(AppError::Malformed {
                    message: format!("tools[{i}].type must be 'function'"),
                    param: Some(format!("tools[{i}].type")),
                });
            }
            function_tool(
                &tool.function.name,
                tool.function.description.clone(),
                tool.function.parameters.clone(),
                &format!("tools[{i}].function"),
            )
        })
        .collect()
}

/// One function tool, its name and schema checked.
pub fn function_tool(
    name: &str,
    description: Option<String>,
    parameters: Option<Value>,
    at: &str,
) -> Result<Tool, AppError> {
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !valid_name {
        return Err(AppError::Malformed {
            message: format!("{at}.name must be 1 to 64 letters, digits, '_', '-' or '.'"),
            param: Some(format!("{at}.name")),
        });
    }
    let parameters =
        parameters.unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
    if !parameters.is_object() {
        return Err(AppError::Malformed {
            message: format!("{at}.parameters must be a JSON Schema object"),
            param: Some(format!("{at}.parameters")),
        });
    }
    Ok(Tool {
        name: name.to_string(),
        description,
        parameters,
    })
}

/// `tool_choice`: a mode string or a named function.
pub fn tool_choice(choice: Option<&Value>) -> Result<ToolChoice, AppError> {
    let bad = || {
        AppError::Malformed {
        message: "tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}".into(),
        param: Some("tool_choice".into()),
    }
    };
    match choice {
        None => Ok(ToolChoice::Auto),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            _ => Err(bad()),
        },
        Some(Value::Object(object)) => object
            .get("function")
            .and_then(|f| f.get("name"))
            .or_else(|| object.get("name"))
            .and_then(Value::as_str)
            .map(|name| ToolChoice::Function(name.to_string()))
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

/// `response_format`.
pub fn response_format(format: Option<&wire::ResponseFormat>) -> Result<OutputFormat, AppError> {
    let Some(format) = format else {
        return Ok(OutputFormat::Text);
    };
    match format.kind.as_str() {
        "text" => Ok(OutputFormat::Text),
        "json_object" => Ok(match &format.schema {
            Some(schema) => OutputFormat::JsonSchema(schema.clone()),
            None => OutputFormat::JsonObject,
        }),
        "json_schema" => {
            let schema = format
                .json_schema
                .as_ref()
                .and_then(|j| j.schema.clone())
                .or_else(|| format.schema.clone())
                .ok_or_else(|| AppError::Malformed {
                    message: "response_format.json_schema.schema is required".into(),
                    param: Some("response_format.json_schema.schema".into()),
                })?;
            Ok(OutputFormat::JsonSchema(schema))
        }
        other => Err(AppError::Malformed {
            message: format!(
                "response_format.type '{}' is not supported; use 'text', 'json_object' or 'json_schema'",
                other.chars().take(40).flat_map(char::escape_default).collect::<String>()
            ),
            param: Some("response_format.type".into()),
        }),
    }
}

/// `logprobs` and `top_logprobs` of a chat request.
pub fn chat_logprobs(logprobs: bool, top: Option<u32>) -> Result<Option<u32>, AppError> {
    match (logprobs, top) {
        (false, Some(_)) => Err(AppError::Malformed {
            message: "top_logprobs requires logprobs to be true".into(),
            param: Some("top_logprobs".into()),
        }),
        (_, Some(n)) if n > MAX_TOP_LOGPROBS => Err(AppError::invalid(
            format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"),
            "top_logprobs",
        )),
        (false, None) => Ok(None),
        (true, top) => Ok(Some(top.unwrap_or(0))),
    }
}

/// Engine log probabilities in the chat shape.
pub fn chat_logprobs_body(logprobs: &[TokenLogprob]) -> wire::ChatLogprobs {
    wire::ChatLogprobs {
        content: logprobs
            .iter()
            .map(|l| wire::TokenLogprob {
                token: token_text(&l.token.bytes),
                logprob: l.token.logprob,
                bytes: l.token.bytes.clone(),
                top_logprobs: l
                    .top
                    .iter()
                    .map(|t| wire::TopLogprob {
                        token: token_text(&t.bytes),
                        logprob: t.logprob,
                        bytes: t.bytes.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Engine log probabilities in the legacy completions shape.
pub fn text_logprobs(logprobs: &[TokenLogprob], offset: usize) -> wire::TextLogprobs {
    let mut body = wire::TextLogprobs::default();
    let mut at = offset;
    for l in logprobs {
        let token = token_text(&l.token.bytes);
        body.text_offset.push(at);
        at += token.len();
        body.tokens.push(token);
        body.token_logprobs.push(l.token.logprob);
        body.top_logprobs.push(
            l.top
                .iter()
                .map(|t| (token_text(&t.bytes), t.logprob))
                .collect(),
        );
    }
    body
}

/// A call in OpenAI's shape.
pub fn tool_call(call: &ToolCall) -> wire::ToolCall {
    wire::ToolCall {
        id: call.id.clone(),
        kind: "function".into(),
        function: wire::FunctionCall {
            name: call.name.clone(),
            arguments: Value::String(call.arguments.clone()),
        },
    }
}

/// A whole call as one streamed delta.
pub fn tool_call_delta(index: u32, call: &ToolCall) -> wire::ToolCallDelta {
    wire::ToolCallDelta {
        index,
        id: Some(call.id.clone()),
        kind: Some("function"),
        function: wire::FunctionCallDelta {
            name: Some(call.name.clone()),
            arguments: call.arguments.clone(),
        },
    }
}

/// The first delta of a streamed call: its index, id and name.
pub fn tool_call_start(index: u32, id: String, name: String) -> wire::ToolCallDelta {
    wire::ToolCallDelta {
        index,
        id: Some(id),
        kind: Some("function"),
        function: wire::FunctionCallDelta {
            name: Some(name),
            arguments: String::new(),
        },
    }
}

/// A later delta of a streamed call: a fragment of its arguments.
pub fn tool_call_fragment(index: u32, arguments: String) -> wire::ToolCallDelta {
    wire::ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: wire::FunctionCallDelta {
            name: None,
            arguments,
        },
    }
}

/// OpenAI's name for how a chat ended.
pub fn finish(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

fn text_parts(parts: &[wire::ContentPart], index: usize) -> Result<String, AppError> {
    let mut text = String::new();
    for part in parts {
        match (part.kind.as_str(), &part.text) {
            ("text", Some(piece)) => text.push_str(piece),
            (kind, _) => {
                return Err(AppError::invalid(
                    format!("content part of type '{kind}' is not supported; only text is"),
                    &format!("messages[{index}].content"),
                ))
            }
        }
    }
    Ok(text)
}

/// Engine usage to wire usage. Speculative decoding's tokens go where
/// OpenAI puts predicted outputs': accepted and rejected prediction tokens.
pub fn usage(usage: Usage) -> wire::Usage {
    wire::Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details: wire::PromptTokensDetails {
            cached_tokens: usage.cached_tokens,
        },
        completion_tokens_details: (usage.drafted_tokens > 0).then(|| {
            wire::CompletionTokensDetails {
                accepted_prediction_tokens: usage.accepted_tokens,
                rejected_prediction_tokens: usage.drafted_tokens - usage.accepted_tokens,
            }
        }),
    }
}

/// An answer's speeds in llama-server's `timings` shape. The first token
/// rides on the prompt's pass, so decode counts the tokens after it.
pub fn timings(completion: &shelf_engine::Completion) -> wire::Timings {
    let usage = completion.usage;
    let timings = completion.timings;
    let computed = usage.prompt_tokens.saturating_sub(usage.cached_tokens);
    wire::Timings {
        cache_n: usage.cached_tokens,
        prompt_n: computed,
        prompt_ms: timings.prefill_ms,
        prompt_per_second: timings.prefill_tps(computed),
        predicted_n: usage.completion_tokens,
        predicted_ms: timings.decode_ms,
        predicted_per_second: timings.decode_tps(),
    }
}

/// shelf's usage extension for the other dialects: `speculative`, the
/// drafted and accepted tokens, added to `object` when the answer was
/// speculated.
pub fn add_speculative(object: &mut Value, usage: &Usage) {
    if usage.drafted_tokens > 0 {
        object["speculative"] = serde_json::json!({
            "drafted_tokens": usage.drafted_tokens,
            "accepted_tokens": usage.accepted_tokens,
        });
    }
}

/// OpenAI's chat and completions: `speculative`, and llama-server's flat
/// `speculative.n_max`.
pub fn openai_speculative(fields: &SamplingFields) -> Result<SpeculativeRequest, AppError> {
    let mut asked = speculative(fields.speculative.as_ref(), "speculative")?;
    if let Some(n_max) = &fields.speculative_n_max {
        let flat = serde_json::json!({ "n_max": n_max });
        asked.max_draft = speculative(Some(&flat), "speculative.n_max")?.max_draft;
    }
    Ok(asked)
}

/// OpenAI's `prediction`: `{"type": "content", "content": TEXT}` or with
/// content a list of text parts.
pub fn prediction(value: Option<&Value>) -> Result<Option<String>, AppError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = || {
        AppError::invalid(
            "prediction must be {\"type\": \"content\", \"content\": text or text parts}",
            "prediction",
        )
    };
    if value.get("type").and_then(Value::as_str) != Some("content") {
        return Err(bad());
    }
    match value.get("content") {
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| part.get("text").and_then(Value::as_str).ok_or_else(bad))
            .collect::<Result<String, _>>()
            .map(Some),
        _ => Err(bad()),
    }
}

/// The `speculative` request extension: `{"n_max": N, "ngram": bool,
/// "draft": bool, "exact": bool}`, each optional (`n_max` 0 turns
/// speculation off).
pub fn speculative(value: Option<&Value>, param: &str) -> Result<SpeculativeRequest, AppError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(SpeculativeRequest::default());
    };
    let object = value
        .as_object()
        .ok_or_else(|| AppError::invalid(format!("{param} must be an object"), param))?;
    let flag = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(AppError::invalid(
            format!("{param}.{key} must be true or false"),
            param,
        )),
    };
    let n_max = match object.get("n_max") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|&n| n <= u64::from(SpeculativeConfig::MAX_DRAFT))
                .ok_or_else(|| {
                    AppError::invalid(
                        format!(
                            "{param}.n_max must be a whole number from 0 to {}",
                            SpeculativeConfig::MAX_DRAFT
                        ),
                        param,
                    )
                })? as u32,
        ),
    };
    Ok(SpeculativeRequest {
        max_draft: n_max,
        ngram: flag("ngram")?,
        draft: flag("draft")?,
        exact: flag("exact")?,
    })
}
