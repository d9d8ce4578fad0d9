//! Wire types to engine types and back: the one place they meet.

use shelf_api::openai::{self as wire, MessageContent, SamplingFields};
use shelf_engine::template::ChatMessage;
use shelf_engine::{FinishReason, SamplingParams, Usage};

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
    if stops.len() > MAX_STOPS {
        return Err(AppError::invalid(
            format!("at most {MAX_STOPS} stop strings are supported"),
            "stop",
        ));
    }
    if stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(AppError::invalid(
            format!("each stop string may be at most {MAX_STOP_BYTES} bytes"),
            "stop",
        ));
    }
    Ok(stops)
}

/// `max_tokens` (or `max_completion_tokens`), which must be at least 1.
pub fn max_tokens(value: Option<u32>, param: &'static str) -> Result<Option<u32>, AppError> {
    match value {
        Some(0) => Err(AppError::BelowMinimum {
            param,
            minimum: 1,
            given: 0,
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
            Ok(ChatMessage::new(message.role.clone(), content))
        })
        .collect()
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

/// OpenAI's name for why generation ended.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
    }
}

/// Engine usage to wire usage.
pub fn usage(usage: Usage) -> wire::Usage {
    wire::Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details: wire::PromptTokensDetails {
            cached_tokens: usage.cached_tokens,
        },
    }
}
