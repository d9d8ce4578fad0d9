//! Grammars, log probabilities and embeddings on the real engine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use serde_json::{json, Value};
use shelf_engine::chat::{self, Chat, OutputFormat, Syntax, Tool, ToolChoice};
use shelf_engine::template::{ChatMessage, ChatTemplate};
use shelf_engine::{
    EngineError, Event, GenerateRequest, Generation, Grammar, LoadConfig, LoadedModel,
    SamplingParams, Token, TokenLogprob,
};
use shelf_engine_llama::{LlamaEngine, LlamaModelHandle};
use shelf_testmodels::{path, MINILM, SMOLLM2};

fn load(name: &str, slots: u32) -> LlamaModelHandle {
    let config = LoadConfig {
        threads: Some(2),
        ctx: Some(1024),
        slots,
        ..LoadConfig::default()
    };
    LlamaEngine.load(&path(name), &config).unwrap()
}

fn template(model: &LlamaModelHandle) -> ChatTemplate {
    let info = model.info();
    ChatTemplate::new(
        info.chat_template.as_deref(),
        &info.bos_token,
        &info.eos_token,
    )
    .unwrap()
}

/// A greedy request for `chat`, with its grammar.
fn request(model: &LlamaModelHandle, chat: &Chat, max_tokens: u32) -> GenerateRequest {
    let prepared = chat::prepare(chat, &template(model)).unwrap();
    let mut request = GenerateRequest::new(model.tokenize(&prepared.prompt).unwrap());
    request.sampling = SamplingParams::greedy();
    request.max_tokens = Some(max_tokens);
    request.grammar = prepared.grammar;
    request
}

fn ask(text: &str) -> Chat {
    Chat {
        messages: vec![ChatMessage::new("user", text)],
        ..Chat::default()
    }
}

/// Text, generated-token log probabilities and prompt log probabilities.
fn collect(mut generation: Generation) -> (String, Vec<TokenLogprob>, Vec<TokenLogprob>) {
    let (mut text, mut generated, mut prompt) = (String::new(), Vec::new(), Vec::new());
    loop {
        match generation.blocking_next() {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Logprob(l)) => generated.push(l),
            Some(Event::PromptLogprobs(l)) => prompt.extend(l),
            Some(Event::Done(_)) => return (text, generated, prompt),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[test]
fn a_schema_grammar_holds_the_output_and_leaves_other_slots_alone() {
    let model = load(SMOLLM2, 2);
    let schema = json!({
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "count": {"type": "integer", "minimum": 3, "maximum": 7},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3}
        },
        "required": ["color", "count", "tags"]
    });
    let constrained = Chat {
        format: OutputFormat::JsonSchema(schema),
        ..ask("Describe the sky as JSON.")
    };
    let free = ask("Name three fruits.");
    let alone = collect(model.submit(request(&model, &free, 40)).unwrap()).0;
    // Both at once, in two slots of one batch.
    let held = model.submit(request(&model, &constrained, 120)).unwrap();
    let beside = model.submit(request(&model, &free, 40)).unwrap();
    let (json_text, _, _) = collect(held);
    assert_eq!(
        collect(beside).0,
        alone,
        "a grammar in one slot changed another slot's output"
    );
    let value: Value =
        serde_json::from_str(&json_text).unwrap_or_else(|e| panic!("{e}: {json_text}"));
    assert!(
        ["red", "green", "blue"].contains(&value["color"].as_str().unwrap()),
        "{value}"
    );
    assert!(
        (3..=7).contains(&value["count"].as_i64().unwrap()),
        "{value}"
    );
    let tags = value["tags"].as_array().unwrap();
    assert!((1..=3).contains(&tags.len()), "{value}");
    assert!(
        tags.iter()
            .all(|t| t.as_str().unwrap().chars().count() <= 12),
        "{value}"
    );
}

#[test]
fn a_lazy_tool_grammar_changes_nothing_until_a_call_starts_and_a_forced_one_always_parses() {
    let model = load(SMOLLM2, 1);
    let tool = Tool {
        name: "get_weather".into(),
        description: Some("Weather in a city".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"]}),
    };
    let plain = ask("Say hello to Ada.");
    let free = collect(model.submit(request(&model, &plain, 30)).unwrap()).0;
    // Hermes triggers on SmolLM: its answer never writes `<tool_call>`.
    let built = chat::tools::grammar(
        std::slice::from_ref(&tool),
        Syntax::Hermes,
        &ToolChoice::Auto,
        false,
    )
    .unwrap();
    let mut lazy = request(&model, &plain, 30);
    lazy.grammar = Some(Grammar {
        gbnf: built.gbnf,
        triggers: built.triggers,
    });
    assert_eq!(collect(model.submit(lazy).unwrap()).0, free);

    let forced = Chat {
        tools: vec![tool.clone()],
        tool_choice: ToolChoice::Required,
        ..ask("Say hello to Ada.")
    };
    let prepared = chat::prepare(&forced, &template(&model)).unwrap();
    let mut parser = prepared.parser;
    let text = collect(model.submit(request(&model, &forced, 60)).unwrap()).0;
    let mut pieces = parser.push(&text);
    pieces.extend(parser.finish());
    let call = pieces
        .iter()
        .find_map(|p| match p {
            chat::Piece::Call(call) => Some(call.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no call in {text:?}"));
    assert_eq!(call.name, "get_weather");
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
}

#[test]
fn log_probabilities_describe_the_distribution_the_token_came_from() {
    let model = load(SMOLLM2, 1);
    let mut generate = request(&model, &ask("Count to five."), 12);
    generate.logprobs = Some(5);
    generate.prompt_logprobs = true;
    let prompt_len = generate.prompt.len();
    let (_, generated, prompt) = collect(model.submit(generate).unwrap());
    assert_eq!(generated.len(), 12);
    for token in &generated {
        assert_eq!(token.top.len(), 5);
        assert!(token.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        // Greedy: the chosen token is the most likely one.
        assert!(
            (token.token.logprob - token.top[0].logprob).abs() < 1e-4,
            "{token:?}"
        );
        let mass: f32 = token.top.iter().map(|t| t.logprob.exp()).sum();
        assert!(mass <= 1.0 + 1e-3 && token.token.logprob <= 0.0);
    }
    assert_eq!(prompt.len(), prompt_len);
    assert!(prompt[0].token.logprob.is_nan());
    assert!(prompt[1..]
        .iter()
        .all(|t| t.token.logprob <= 0.0 && t.top.len() == 5));
}

#[test]
fn embeddings_are_unit_vectors_the_same_batched_or_alone() {
    let model = load(MINILM, 1);
    let info = model.info().clone();
    assert!(info.embedding && info.n_embd == 384);
    let texts = [
        "The cat sat on the mat.",
        "A dog barked.",
        "Quantum tunnelling, explained simply!",
    ];
    let inputs: Vec<Vec<Token>> = texts.iter().map(|t| model.tokenize(t).unwrap()).collect();
    let together = model.embed(inputs.clone()).unwrap();
    for (input, batched) in inputs.into_iter().zip(&together) {
        let alone = model.embed(vec![input]).unwrap().remove(0);
        let dot: f32 = alone.iter().zip(batched).map(|(a, b)| a * b).sum();
        assert!(dot > 0.9999, "cosine {dot}");
        let norm: f32 = alone.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    let dot: f32 = together[0]
        .iter()
        .zip(&together[1])
        .map(|(a, b)| a * b)
        .sum();
    assert!(dot < 0.99, "different texts embed differently");
    assert!(matches!(
        model.submit(GenerateRequest::new(vec![Token(101)])),
        Err(EngineError::Unsupported(_))
    ));
    let too_long = vec![Token(1000); info.n_ctx as usize + 1];
    assert!(matches!(
        model.embed(vec![too_long]),
        Err(EngineError::PromptTooLong { .. })
    ));
}
