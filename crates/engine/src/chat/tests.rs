use serde_json::json;

use super::*;

fn weather() -> Tool {
    Tool {
        name: "get_weather".into(),
        description: Some("Weather in a city".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

/// Parse `text` whole and split at every character: both must agree.
fn parse(text: &str, starts_thinking: bool, tools: bool) -> Answer {
    let make = || OutputParser::new(starts_thinking, tools.then(|| vec![weather()]));
    let mut whole = Answer::default();
    let mut parser = make();
    for piece in parser.push(text).into_iter().chain(parser.finish()) {
        whole.add(piece);
    }
    let mut split = Answer::default();
    let mut parser = make();
    for c in text.chars() {
        for piece in parser.push(&c.to_string()) {
            split.add(piece);
        }
    }
    for piece in parser.finish() {
        split.add(piece);
    }
    let ids = |a: &Answer| {
        a.tool_calls
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (&whole.content, &whole.reasoning, ids(&whole)),
        (&split.content, &split.reasoning, ids(&split)),
        "{text:?}"
    );
    whole
}

#[test]
fn reasoning_never_reaches_the_content() {
    let answer = parse("<think>\nLet me see.\n</think>\n\nHello!", false, false);
    assert_eq!(answer.reasoning.as_deref(), Some("Let me see.\n"));
    assert_eq!(answer.content, "Hello!");
    // The prompt opened the block (R1 distills): no opening tag in the output.
    let answer = parse("Thinking about it</think>The answer is 4.", true, false);
    assert_eq!(answer.reasoning.as_deref(), Some("Thinking about it"));
    assert_eq!(answer.content, "The answer is 4.");
    // Cut off while thinking: all of it is reasoning.
    let answer = parse("<think>still going", false, false);
    assert_eq!(
        (answer.reasoning.as_deref(), answer.content.as_str()),
        (Some("still going"), "")
    );
    // No block: all content, a lone "<thin" included.
    assert_eq!(parse("<thin air", false, false).content, "<thin air");
    assert_eq!(
        parse("Hi <think> there", false, false).content,
        "Hi <think> there"
    );
}

#[test]
fn calls_are_found_in_every_form() {
    let forms = [
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```",
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
        "<|python_tag|>{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}",
    ];
    for form in forms {
        let answer = parse(form, false, true);
        assert_eq!(answer.content, "", "{form}");
        assert_eq!(answer.tool_calls.len(), 1, "{form}");
        assert_eq!(answer.tool_calls[0].name, "get_weather");
        let arguments: serde_json::Value =
            serde_json::from_str(&answer.tool_calls[0].arguments).unwrap();
        assert_eq!(arguments, json!({"city": "Paris"}), "{form}");
        assert!(answer.tool_calls[0].id.starts_with("call_"));
    }
}

#[test]
fn text_before_a_call_is_content_and_non_calls_stay_text() {
    let answer = parse(
        "Sure.\n```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n```",
        false,
        true,
    );
    assert_eq!(answer.content, "Sure.\n");
    assert_eq!(answer.tool_calls.len(), 1);
    // JSON that calls no known tool, and code fences, are the answer.
    let text = "```json\n{\"name\": \"other\", \"arguments\": {}}\n```";
    assert_eq!(parse(text, false, true).content, text);
    assert_eq!(
        parse("```python\nprint(1)\n```", false, true).content,
        "```python\nprint(1)\n```"
    );
    let two = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}</tool_call>\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"B\"}}</tool_call>";
    assert_eq!(parse(two, false, true).tool_calls.len(), 2);
}

const QWEN_LIKE: &str = "{%- if tools %}<|im_start|>system\nTools:{% for t in tools %} {{ t.function.name }}{% endfor %}\nUse <tool_call></tool_call>.<|im_end|>\n{%- endif %}{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";

#[test]
fn tools_reach_the_template_and_the_grammar_names_them() {
    let template = ChatTemplate::new(Some(QWEN_LIKE), "", "").unwrap();
    let chat = Chat {
        messages: vec![ChatMessage::new("user", "Weather in Paris?")],
        tools: vec![weather()],
        tool_choice: ToolChoice::Required,
        ..Chat::default()
    };
    let prepared = prepare(&chat, &template).unwrap();
    assert!(
        prepared.prompt.contains("Tools: get_weather"),
        "{}",
        prepared.prompt
    );
    let grammar = prepared.grammar.unwrap();
    assert!(
        grammar.triggers.is_none(),
        "required calls are held from the first token"
    );
    assert!(
        grammar.gbnf.contains("<tool_call>") && grammar.gbnf.contains("get_weather"),
        "{}",
        grammar.gbnf
    );

    let auto = Chat {
        tool_choice: ToolChoice::Auto,
        ..chat.clone()
    };
    assert!(prepare(&auto, &template)
        .unwrap()
        .grammar
        .unwrap()
        .triggers
        .is_some());
    let none = Chat {
        tool_choice: ToolChoice::None,
        ..chat.clone()
    };
    let prepared = prepare(&none, &template).unwrap();
    assert!(prepared.grammar.is_none() && !prepared.prompt.contains("Tools:"));
    let unknown = Chat {
        tool_choice: ToolChoice::Function("nope".into()),
        ..chat
    };
    assert!(matches!(
        prepare(&unknown, &template),
        Err(EngineError::InvalidParam {
            param: "tool_choice",
            ..
        })
    ));
}

#[test]
fn templates_without_tools_get_them_in_the_system_message() {
    let template = ChatTemplate::fallback("", "");
    let mut call_turn = ChatMessage::new("assistant", "");
    call_turn.tool_calls.push(crate::template::ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{\"city\":\"Paris\"}".into(),
    });
    let chat = Chat {
        messages: vec![ChatMessage::new("user", "Weather?"), call_turn],
        tools: vec![weather()],
        ..Chat::default()
    };
    let prompt = prepare(&chat, &template).unwrap().prompt;
    assert!(
        prompt.starts_with("<|im_start|>system\nYou can call these functions"),
        "{prompt}"
    );
    assert!(
        prompt.contains(r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#),
        "{prompt}"
    );
}

#[test]
fn bad_schemas_are_refused_naming_the_parameter() {
    let template = ChatTemplate::fallback("", "");
    let chat = Chat {
        messages: vec![ChatMessage::new("user", "x")],
        format: OutputFormat::JsonSchema(json!({"type": "string", "pattern": "a+"})),
        ..Chat::default()
    };
    match prepare(&chat, &template) {
        Err(EngineError::InvalidParam { param, reason }) => {
            assert_eq!(param, "response_format");
            assert!(reason.contains("pattern"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_call_streams_its_name_then_argument_fragments_then_the_whole_call() {
    let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let mut parser = OutputParser::new(false, Some(vec![weather()]));
    let mut pieces = Vec::new();
    for c in text.chars() {
        pieces.extend(parser.push(&c.to_string()));
    }
    pieces.extend(parser.finish());
    let Some(Piece::CallStart { id, name }) = pieces.first().cloned() else {
        panic!("{pieces:?}");
    };
    assert_eq!(name, "get_weather");
    let fragments: Vec<&str> = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::CallArguments(a) => Some(a.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        fragments.len() > 1,
        "arguments arrive as they are generated"
    );
    let Some(Piece::Call(call)) = pieces.last() else {
        panic!("{pieces:?}");
    };
    assert_eq!(
        (&call.id, fragments.concat()),
        (&id, call.arguments.clone())
    );
    assert_eq!(
        pieces
            .iter()
            .filter(|p| matches!(p, Piece::Content(_)))
            .count(),
        0
    );
}

#[test]
fn triggers_fire_only_on_text_the_grammar_accepts() {
    let built = tools::grammar(&[weather()], Syntax::Hermes, &ToolChoice::Auto, false).unwrap();
    let patterns: Vec<regex::Regex> = built
        .triggers
        .unwrap()
        .iter()
        .map(|p| regex::Regex::new(p).unwrap())
        .collect();
    let fires_at = |text: &str| {
        patterns
            .iter()
            .filter_map(|p| p.captures(text).and_then(|c| c.get(1)).map(|m| m.start()))
            .min()
    };
    assert_eq!(fires_at("Sure. <tool_call>"), Some(6));
    assert_eq!(fires_at("ok ```json\n{\"name\""), Some(3));
    assert_eq!(fires_at("```\n  {\n  \"name\""), Some(0));
    // Whitespace the grammar's `space` rule would refuse never fires it.
    assert_eq!(fires_at("```json\n\n{\"name\""), None);
    assert_eq!(fires_at("```json\n{\t\"name\""), None);
    assert_eq!(fires_at("Here is some code: ```python"), None);
}

#[test]
fn fences_are_held_only_until_they_show_a_call_or_not() {
    let call = "```\n  {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n```";
    let answer = parse(call, false, true);
    assert_eq!((answer.content.as_str(), answer.tool_calls.len()), ("", 1));
    let answer = parse(
        "``` {\"name\": \"get_weather\", \"arguments\": {}}```",
        false,
        true,
    );
    assert_eq!(answer.tool_calls.len(), 1);
    // Code is streamed as soon as its fence shows it is not a call.
    let mut parser = OutputParser::new(false, Some(vec![weather()]));
    let mut streamed = String::new();
    for piece in parser.push("Here:\n```python\nprint(1)") {
        if let Piece::Content(text) = piece {
            streamed.push_str(&text);
        }
    }
    assert_eq!(streamed, "Here:\n```python\nprint(1)");
}

#[test]
fn a_forced_grammar_after_an_opened_think_block_is_the_answer() {
    let source = "{% for m in messages %}{{ m.content }}{% endfor %}<think>\n";
    let template = ChatTemplate::new(Some(source), "", "").unwrap();
    let json = Chat {
        format: OutputFormat::JsonObject,
        ..Chat {
            messages: vec![ChatMessage::new("user", "x")],
            ..Chat::default()
        }
    };
    let mut parser = prepare(&json, &template).unwrap().parser;
    let mut pieces = parser.push("{\"a\": 1}");
    pieces.extend(parser.finish());
    assert_eq!(pieces, vec![Piece::Content("{\"a\": 1}".into())]);
    // Without a grammar the same prompt starts in reasoning.
    let plain = Chat {
        messages: vec![ChatMessage::new("user", "x")],
        ..Chat::default()
    };
    let mut parser = prepare(&plain, &template).unwrap().parser;
    let mut pieces = parser.push("hmm</think>ok");
    pieces.extend(parser.finish());
    assert_eq!(
        pieces,
        vec![Piece::Reasoning("hmm".into()), Piece::Content("ok".into())]
    );
}
