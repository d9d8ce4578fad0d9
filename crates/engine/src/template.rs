//! Chat prompts: rendering a conversation with the model's own Jinja template.
//!
//! GGUF files carry the Hugging Face chat template in
//! `tokenizer.chat_template`. It is rendered here with minijinja and Python
//! string methods, as `transformers` would. A model with no template gets
//! [`FALLBACK_TEMPLATE`] (ChatML) and the caller is told, so it can warn.

use minijinja::{Environment, Error, ErrorKind, Value};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant turn's reasoning, when a client sends it back.
    pub reasoning: Option<String>,
    /// Functions an assistant turn called.
    pub tool_calls: Vec<ToolCall>,
    /// On a `tool` turn: the call it answers.
    pub tool_call_id: Option<String>,
    /// On a `tool` turn: the function's name, when known.
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with this role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Self::default()
        }
    }

    /// The message as chat templates expect it (OpenAI's shape, with
    /// arguments as an object, as Hugging Face templates read them).
    fn to_value(&self) -> Value {
        let mut message = serde_json::Map::new();
        message.insert("role".into(), self.role.clone().into());
        message.insert("content".into(), self.content.clone().into());
        if let Some(reasoning) = &self.reasoning {
            message.insert("reasoning_content".into(), reasoning.clone().into());
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<serde_json::Value> =
                self.tool_calls.iter().map(ToolCall::to_json).collect();
            message.insert("tool_calls".into(), calls.into());
        }
        if let Some(id) = &self.tool_call_id {
            message.insert("tool_call_id".into(), id.clone().into());
        }
        if let Some(name) = &self.name {
            message.insert("name".into(), name.clone().into());
        }
        Value::from_serialize(&message)
    }
}

/// A function call the model made (or a client reports it made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON object, serialized.
    pub arguments: String,
}

impl ToolCall {
    fn to_json(&self) -> serde_json::Value {
        let arguments = serde_json::from_str::<serde_json::Value>(&self.arguments)
            .unwrap_or_else(|_| self.arguments.clone().into());
        serde_json::json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": arguments},
        })
    }
}

/// What a template is rendered with besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Tools in OpenAI's shape (`[{"type": "function", "function": {...}}]`).
    pub tools: Option<serde_json::Value>,
    /// `enable_thinking` for templates that read it (Qwen 3 and kin).
    pub enable_thinking: Option<bool>,
    /// `reasoning_effort` for templates that read it.
    pub reasoning_effort: Option<String>,
}

/// The format used for models whose GGUF has no chat template: ChatML, as
/// llama.cpp also falls back to.
pub const FALLBACK_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Stop strings that end a turn in the fallback format, for models whose
/// vocabulary has no ChatML end-of-turn token.
pub const FALLBACK_STOPS: [&str; 2] = ["<|im_end|>", "<|im_start|>"];

/// A parsed chat template, ready to render.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template's text, to recognise its tool-call and reasoning syntax.
    source: String,
    bos_token: String,
    eos_token: String,
    /// Whether this is [`FALLBACK_TEMPLATE`] rather than the model's own.
    pub is_fallback: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("is_fallback", &self.is_fallback)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Parse the model's template, or the fallback when it has none.
    pub fn new(
        source: Option<&str>,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, crate::EngineError> {
        let is_fallback = source.is_none();
        let source = source.unwrap_or(FALLBACK_TEMPLATE).to_string();
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.clone())
            .map_err(|e| crate::EngineError::Template(describe(&e)))?;
        Ok(Self {
            env,
            source,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            is_fallback,
        })
    }

    /// The template's Jinja text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The model's own template, or ChatML where it has none or it does not
    /// parse (for callers with nobody to warn).
    pub fn of_model(info: &crate::ModelInfo) -> Self {
        Self::new(
            info.chat_template.as_deref(),
            &info.bos_token,
            &info.eos_token,
        )
        .unwrap_or_else(|_| Self::fallback(&info.bos_token, &info.eos_token))
    }

    /// The built-in ChatML fallback.
    pub fn fallback(bos_token: &str, eos_token: &str) -> Self {
        // A constant template that `fallback_is_chatml` renders: it always parses.
        #[allow(clippy::expect_used)]
        Self::new(None, bos_token, eos_token).expect("the fallback chat template parses")
    }

    /// Render a conversation into prompt text, ending with the opening of the
    /// assistant's turn when `add_generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, crate::EngineError> {
        self.render_with(messages, add_generation_prompt, &RenderOptions::default())
    }

    /// [`ChatTemplate::render`] with tools and reasoning settings.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        options: &RenderOptions,
    ) -> Result<String, crate::EngineError> {
        let messages: Vec<Value> = messages.iter().map(ChatMessage::to_value).collect();
        // Only what is set is defined: templates test `x is defined`.
        let mut optional = std::collections::BTreeMap::new();
        if let Some(tools) = &options.tools {
            optional.insert("tools", Value::from_serialize(tools));
        }
        if let Some(enable) = options.enable_thinking {
            optional.insert("enable_thinking", Value::from(enable));
        }
        if let Some(effort) = &options.reasoning_effort {
            optional.insert("reasoning_effort", Value::from(effort.as_str()));
        }
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
            ..Value::from_iter(optional)
        };
        self.env
            .get_template("chat")
            .and_then(|t| t.render(context))
            .map_err(|e| crate::EngineError::Template(describe(&e)))
    }
}

/// `tojson` as Hugging Face renders it (Python's `json.dumps`: `", "` and
/// `": "` separators, no HTML escaping), so prompts match what the model
/// was trained on; minijinja's own writes compact, HTML-safe JSON.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        Some(n) => {
            let spaces = " ".repeat(n);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            serde::Serialize::serialize(
                &value,
                &mut serde_json::Serializer::with_formatter(&mut out, formatter),
            )
        }
        None => serde::Serialize::serialize(
            &value,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonStyle),
        ),
    };
    result.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(Value::from_safe_string(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// `", "` before every item but the first.
fn separate<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    match first {
        true => Ok(()),
        false => writer.write_all(b", "),
    }
}

/// Python's default JSON separators.
struct PythonStyle;

impl serde_json::ser::Formatter for PythonStyle {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Templates that print today's date call this; a fixed UTC date keeps
/// prompts reproducible without reading the clock's timezone.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month_name = MONTHS[(month - 1) as usize];
    format
        .replace("%d", &format!("{day:02}"))
        .replace("%m", &format!("{month:02}"))
        .replace("%Y", &year.to_string())
        .replace("%B", month_name)
        .replace("%b", &month_name[..3])
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn describe(error: &Error) -> String {
    match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: Option<&str>, messages: &[(&str, &str)]) -> String {
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let messages: Vec<_> = messages
            .iter()
            .map(|(r, c)| ChatMessage::new(*r, *c))
            .collect();
        template.render(&messages, true).unwrap()
    }

    #[test]
    fn fallback_is_chatml() {
        assert_eq!(
            render(None, &[("user", "hi")]),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_string_methods_and_special_tokens_work() {
        let source = "{{ bos_token }}{% for m in messages %}[{{ m.role | upper }}] {{ m.content.strip() }}{% if not loop.last %}\n{% endif %}{% endfor %}{{ eos_token }}";
        assert_eq!(
            render(Some(source), &[("system", " be brief "), ("user", "hi")]),
            "<s>[SYSTEM] be brief\n[USER] hi</s>"
        );
    }

    #[test]
    fn raise_exception_becomes_a_template_error() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}";
        let template = ChatTemplate::new(Some(source), "", "").unwrap();
        let err = template
            .render(&[ChatMessage::new("assistant", "x")], true)
            .unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn a_broken_template_is_an_error_not_a_panic() {
        assert!(ChatTemplate::new(Some("{% for %}"), "", "").is_err());
    }

    #[test]
    fn tojson_writes_python_style() {
        let source = "{{ {'a': 1, 'b': ['<x>', 2]} | tojson }}|{{ {'a': 1} | tojson(indent=2) }}";
        assert_eq!(
            render(Some(source), &[]),
            "{\"a\": 1, \"b\": [\"<x>\", 2]}|{\n  \"a\": 1\n}"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
    }
}
