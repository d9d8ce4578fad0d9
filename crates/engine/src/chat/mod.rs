//! The one chat request model behind every API dialect: messages, tools,
//! output constraints and reasoning, turned into a prompt, a grammar and an
//! output parser for the model's own template.
//!
//! Dialects (OpenAI, Ollama, Anthropic) translate into [`Chat`] and out of
//! [`Piece`]s; nothing here knows their wire shapes or HTTP.

pub mod output;
mod stream_calls;
pub mod tools;

use serde_json::Value;

pub use output::{Answer, OutputParser, Piece};
pub use tools::{Syntax, Tool, ToolChoice};

use crate::schema::{self, SchemaError};
use crate::template::{ChatMessage, ChatTemplate, RenderOptions};
use crate::{EngineError, Grammar};

/// Largest grammar a request may bring: llama.cpp compiles it on the
/// model's decode thread.
const MAX_GRAMMAR_BYTES: usize = 1 << 20;

/// What form the answer must take.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// A JSON document valid against this schema.
    JsonSchema(Value),
}

/// A chat request, whatever API it came through.
#[derive(Debug, Clone, Default)]
pub struct Chat {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    pub format: OutputFormat,
    /// `Some(false)` asks a reasoning model not to think, where its
    /// template supports that; `None` leaves the template's default.
    pub think: Option<bool>,
    pub reasoning_effort: Option<String>,
}

/// A chat made ready for the engine.
#[derive(Debug)]
pub struct Prepared {
    pub prompt: String,
    pub grammar: Option<Grammar>,
    pub parser: OutputParser,
}

/// Render `chat` with the model's template and build its grammar and parser.
pub fn prepare(chat: &Chat, template: &ChatTemplate) -> Result<Prepared, EngineError> {
    let tools_on = !chat.tools.is_empty() && chat.tool_choice != ToolChoice::None;
    check_choice(chat)?;
    let source = template.source();
    let shows_tools = !template.is_fallback && Syntax::template_shows_tools(source);
    let syntax = match shows_tools {
        true => Syntax::of_template(source),
        false => Syntax::Generic,
    };
    let mut messages = chat.messages.clone();
    if tools_on && !shows_tools {
        describe_tools(&mut messages, &chat.tools);
    }
    let options = RenderOptions {
        tools: (tools_on && shows_tools).then(|| {
            chat.tools
                .iter()
                .map(tools::openai_shape)
                .collect::<Vec<_>>()
                .into()
        }),
        enable_thinking: chat.think,
        reasoning_effort: chat.reasoning_effort.clone(),
    };
    let prompt = template.render_with(&messages, true, &options)?;
    let grammar = grammar(chat, tools_on, syntax)?;
    if let Some(g) = grammar
        .as_ref()
        .filter(|g| g.gbnf.len() > MAX_GRAMMAR_BYTES)
    {
        return Err(EngineError::InvalidParam {
            param: if tools_on { "tools" } else { "response_format" },
            reason: format!(
                "the schemas make a grammar of {} bytes; at most {MAX_GRAMMAR_BYTES} are supported",
                g.gbnf.len()
            ),
        });
    }
    // A prompt that ends by opening the reasoning block (R1 distills,
    // Qwen 3 thinking) means the output starts inside it, unless a grammar
    // holds the output from its first token: then it is the answer.
    let forced = grammar.as_ref().is_some_and(|g| g.triggers.is_none());
    let starts_thinking = prompt.trim_end().ends_with("<think>") && !forced;
    let tools = tools_on.then(|| chat.tools.clone());
    Ok(Prepared {
        prompt,
        grammar,
        parser: OutputParser::new(starts_thinking, tools),
    })
}

fn check_choice(chat: &Chat) -> Result<(), EngineError> {
    let invalid = |reason: String| EngineError::InvalidParam {
        param: "tool_choice",
        reason,
    };
    match &chat.tool_choice {
        ToolChoice::Required if chat.tools.is_empty() => {
            Err(invalid("is \"required\" but no tools were given".into()))
        }
        ToolChoice::Function(name) if !chat.tools.iter().any(|t| t.name == *name) => {
            Err(invalid(format!(
                "names function '{}', which is not among the tools",
                escape(name)
            )))
        }
        _ => Ok(()),
    }
}

fn grammar(chat: &Chat, tools_on: bool, syntax: Syntax) -> Result<Option<Grammar>, EngineError> {
    let schema_error = |param: &'static str| {
        move |e: SchemaError| EngineError::InvalidParam {
            param,
            reason: e.to_string(),
        }
    };
    if tools_on {
        if chat.format != OutputFormat::Text {
            return Err(EngineError::InvalidParam {
                param: "response_format",
                reason: "cannot be combined with tools".into(),
            });
        }
        let built = tools::grammar(
            &chat.tools,
            syntax,
            &chat.tool_choice,
            chat.parallel_tool_calls,
        )
        .map_err(schema_error("tools"))?;
        return Ok(Some(Grammar {
            gbnf: built.gbnf,
            triggers: built.triggers,
        }));
    }
    let gbnf = match &chat.format {
        OutputFormat::Text => return Ok(None),
        OutputFormat::JsonObject => schema::any_object_gbnf(),
        OutputFormat::JsonSchema(schema) => {
            schema::schema_to_gbnf(schema).map_err(schema_error("response_format"))?
        }
    };
    Ok(Some(Grammar {
        gbnf,
        triggers: None,
    }))
}

/// For templates that cannot show tools: describe them in the system
/// message, and write earlier calls and results as plain turns.
fn describe_tools(messages: &mut Vec<ChatMessage>, tools: &[Tool]) {
    let instructions = tools::generic_instructions(tools);
    match messages.first_mut() {
        Some(first) if first.role == "system" => {
            first.content = format!("{}\n\n{instructions}", first.content);
        }
        _ => messages.insert(0, ChatMessage::new("system", instructions)),
    }
    for message in messages.iter_mut() {
        if message.role == "assistant"
            && !message.tool_calls.is_empty()
            && message.content.is_empty()
        {
            let calls: Vec<Value> = message
                .tool_calls
                .iter()
                .map(|c| {
                    let arguments: Value =
                        serde_json::from_str(&c.arguments).unwrap_or(Value::Null);
                    serde_json::json!({"name": c.name, "arguments": arguments})
                })
                .collect();
            message.content = match calls.as_slice() {
                [one] => one.to_string(),
                _ => Value::from(calls).to_string(),
            };
        }
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
mod tests;
