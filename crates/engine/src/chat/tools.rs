//! Tool calls in each model family's own syntax: recognising the syntax
//! from the chat template, the grammar that holds a call's arguments to its
//! schema, and parsing calls out of generated text.

use serde_json::{Map, Value};

use crate::schema::{gbnf_string, GrammarBuilder, SchemaError};
use crate::template::ToolCall;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// Which calls the model may or must make.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// Call tools or answer in text, as the model decides.
    #[default]
    Auto,
    /// Answer in text; the tools are not shown to the model.
    None,
    /// Call at least one tool.
    Required,
    /// Call this function.
    Function(String),
}

/// How a model family writes its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Qwen 2.5, Hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.
    Hermes,
    /// Llama 3.1+: `{"name": ..., "parameters": {...}}`, or after `<|python_tag|>`.
    Llama3,
    /// Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}]`.
    Mistral,
    /// Templates without tool support: the tools are described in a system
    /// message and the model answers `{"name": ..., "arguments": {...}}`.
    Generic,
}

impl Syntax {
    /// Recognise the family from its chat template's text.
    pub fn of_template(source: &str) -> Self {
        if source.contains("<tool_call>") {
            Self::Hermes
        } else if source.contains("[TOOL_CALLS]") {
            Self::Mistral
        } else if source.contains("<|python_tag|>")
            || (source.contains("<|start_header_id|>") && source.contains("tools"))
        {
            Self::Llama3
        } else {
            Self::Generic
        }
    }

    /// Whether the template renders `tools` itself.
    pub fn template_shows_tools(source: &str) -> bool {
        source.contains("tools")
    }

    /// The key a call's arguments go under.
    fn arguments_key(self) -> &'static str {
        match self {
            Self::Llama3 => "parameters",
            _ => "arguments",
        }
    }
}

/// Text that starts a call in any family's syntax: the output parser holds
/// text back from here on. (A fenced JSON block, which every model falls
/// back to, is recognised by its opening `{`: see the output parser.)
pub const CALL_MARKERS: [&str; 3] = ["<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"];

/// The system message that describes tools to a model whose template does
/// not, and the form its calls must take.
pub fn generic_instructions(tools: &[Tool]) -> String {
    let list: Vec<Value> = tools.iter().map(openai_shape).collect();
    let list = serde_json::to_string_pretty(&list).unwrap_or_default();
    format!(
        "You can call these functions:\n{list}\n\nTo call one, answer with only a JSON object: \
         {{\"name\": \"<function name>\", \"arguments\": {{<arguments>}}}}. \
         Otherwise answer normally."
    )
}

/// A tool in OpenAI's shape, as templates read `tools`.
pub fn openai_shape(tool: &Tool) -> Value {
    let mut function = Map::new();
    function.insert("name".into(), tool.name.clone().into());
    if let Some(description) = &tool.description {
        function.insert("description".into(), description.clone().into());
    }
    function.insert("parameters".into(), tool.parameters.clone());
    serde_json::json!({"type": "function", "function": function})
}

/// The grammar's `space` rule as a regular expression.
const SPACE: &str = r"(?: |\n[ \t]{0,20})?";

/// A grammar for tool calls, and when it starts to hold.
pub struct ToolGrammar {
    pub gbnf: String,
    /// `None`: from the first token (a call is required). Otherwise the
    /// regular expressions after which it holds.
    pub triggers: Option<Vec<String>>,
}

/// The grammar for calls to `tools` in `syntax`: each call's arguments held
/// to its function's schema.
pub fn grammar(
    tools: &[Tool],
    syntax: Syntax,
    choice: &ToolChoice,
    parallel: bool,
) -> Result<ToolGrammar, SchemaError> {
    let mut builder = GrammarBuilder::new();
    let mut calls = Vec::new();
    for tool in tools {
        if let ToolChoice::Function(name) = choice {
            if *name != tool.name {
                continue;
            }
        }
        let parameters = match &tool.parameters {
            Value::Null => serde_json::json!({"type": "object"}),
            other => other.clone(),
        };
        let arguments = builder
            .schema(&parameters, &format!("{}-args", tool.name))
            .map_err(|e| SchemaError {
                at: format!("tools/{}/parameters{}", tool.name, e.at),
                reason: e.reason,
            })?;
        let body = format!(
            r#""{{" space "\"name\"" space ":" space {} space "," space {} space ":" space {arguments} "}}" space"#,
            gbnf_string(&serde_json::to_string(&tool.name).unwrap_or_default()),
            gbnf_string(&format!("\"{}\"", syntax.arguments_key())),
        );
        calls.push(builder.rule(&format!("{}-call", tool.name), body));
    }
    let call = builder.rule("call", calls.join(" | "));
    let many = |one: &str| match parallel {
        true => format!("{one} (space {one})*"),
        false => one.to_string(),
    };
    let native = match syntax {
        Syntax::Hermes => many(&format!(
            r#""<tool_call>" space {call} "</tool_call>" space"#
        )),
        Syntax::Mistral => match parallel {
            true => format!(r#""[TOOL_CALLS]" "[" space {call} ("," space {call})* "]" space"#),
            false => format!(r#""[TOOL_CALLS]" "[" space {call} "]" space"#),
        },
        Syntax::Llama3 | Syntax::Generic => many(&call),
    };
    let forced = matches!(choice, ToolChoice::Required | ToolChoice::Function(_));
    if forced {
        return Ok(ToolGrammar {
            gbnf: builder.finish(native),
            triggers: None,
        });
    }
    // Free text until the model starts a call; small models write theirs
    // in a fenced JSON block, which is held to the grammar too.
    let fenced = format!(r#""```" "json"? space {call} "```" space"#);
    let root = format!("{native} | {fenced}");
    // llama.cpp searches the text so far for each pattern after every
    // token and replays it into the grammar from the first group on: the
    // patterns are short needles (a `[\s\S]*` prefix recurses once per
    // character in libstdc++'s regex), and their whitespace is exactly the
    // grammar's `space`, so the replayed text always parses.
    let mut triggers = vec![format!(r#"(```(?:json)?{SPACE}\{{{SPACE}"name")"#)];
    triggers.push(match syntax {
        Syntax::Hermes => "(<tool_call>)".to_string(),
        Syntax::Mistral => r"(\[TOOL_CALLS\])".to_string(),
        Syntax::Llama3 | Syntax::Generic => format!(r#"^\s*(\{{{SPACE}"name")"#),
    });
    Ok(ToolGrammar {
        gbnf: builder.finish(root),
        triggers: Some(triggers),
    })
}

/// Calls in `text` (the output from a call's start on), in any of the
/// syntaxes, to functions among `tools`. `None` if it is not (all) calls.
pub fn parse_calls(
    text: &str,
    tools: &[Tool],
    next_id: &mut dyn FnMut() -> String,
) -> Option<Vec<ToolCall>> {
    let mut rest = text.trim();
    let mut calls = Vec::new();
    while !rest.is_empty() {
        rest = super::stream_calls::strip_wrappers(rest, true);
        if rest.is_empty() {
            break;
        }
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = values.next()?.ok()?;
        let end = values.byte_offset();
        for object in as_objects(value) {
            calls.push(call_of(&object, tools, next_id)?);
        }
        rest = rest[end..].trim_start();
    }
    (!calls.is_empty()).then_some(calls)
}

fn as_objects(value: Value) -> Vec<Map<String, Value>> {
    match value {
        Value::Object(object) => vec![object],
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Object(object) => Some(object),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One call object, in any of the shapes models write: `name` with
/// `arguments` or `parameters` (an object, or a string holding one), or
/// OpenAI's `{"function": {...}}`.
fn call_of(
    object: &Map<String, Value>,
    tools: &[Tool],
    next_id: &mut dyn FnMut() -> String,
) -> Option<ToolCall> {
    if let Some(Value::Object(function)) = object.get("function") {
        return call_of(function, tools, next_id);
    }
    let name = object.get("name")?.as_str()?;
    if !tools.iter().any(|t| t.name == name) {
        return None;
    }
    let arguments = match object.get("arguments").or_else(|| object.get("parameters")) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(text)) => serde_json::from_str(text).ok()?,
        Some(value) => value.clone(),
    };
    if !arguments.is_object() {
        return None;
    }
    let id = match object.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => next_id(),
    };
    Some(ToolCall {
        id,
        name: name.to_string(),
        arguments: arguments.to_string(),
    })
}
