//! Speculative decoding on the real engine: Qwen2.5-Coder 1.5B as the
//! target, Qwen2.5-Coder 0.5B as its draft model, and prompt lookup.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::path::PathBuf;

use shelf_engine::chat::{self, Chat, OutputFormat};
use shelf_engine::template::{ChatMessage, ChatTemplate};
use shelf_engine::{
    Completion, EngineError, Event, GenerateRequest, Generation, LoadConfig, LoadedModel,
    SamplingParams, SpeculativeConfig,
};
use shelf_engine_llama::{LlamaEngine, LlamaModelHandle};
use shelf_testmodels::{path, QWEN_05B, QWEN_15B, SMOLLM2};

/// Twenty varied prompts: code, rewrites that repeat their input, prose,
/// lists, translation, arithmetic.
const PROMPTS: [&str; 20] = [
    "Write a Python function that merges two sorted lists.",
    "Explain the difference between TCP and UDP in three sentences.",
    "Write a haiku about autumn leaves.",
    "Rename the variable x to count in this code and change nothing else:\n\nx = 0\nfor item in items:\n    x += 1\nprint(x)",
    "Write a Rust function that reverses a string.",
    "List five tips for writing clean code.",
    "Translate to French: The weather is nice today and I want to go for a walk.",
    "Write a SQL query that finds the top 3 customers by total order value.",
    "Repeat this sentence exactly three times: The quick brown fox jumps over the lazy dog.",
    "Write a bash script that counts lines in all .txt files in a directory.",
    "What is 17 times 23? Show the steps.",
    "Write a JavaScript function to debounce another function.",
    "Add a docstring to this function:\n\ndef area(w, h):\n    return w * h",
    "Write the numbers from 1 to 20 separated by commas.",
    "Explain recursion to a ten year old.",
    "Write a C function that computes the factorial of n iteratively.",
    "Convert this JSON to YAML: {\"name\": \"shelf\", \"port\": 11435, \"tags\": [\"local\", \"private\"]}",
    "Write a Python class for a bank account with deposit and withdraw.",
    "Fix the bug in this function and return the whole function:\n\ndef mean(xs):\n    return sum(xs) / len(x)",
    "Write a regular expression that matches email addresses and explain it.",
];

/// Short enough that prompt and answer stay inside the window where the
/// CPU verifies exactly (the first 256 positions).
const MAX_TOKENS: u32 = 64;

fn load(speculative: SpeculativeConfig) -> LlamaModelHandle {
    let config = LoadConfig {
        threads: Some(2),
        ctx: Some(1024),
        speculative,
        ..LoadConfig::default()
    };
    LlamaEngine.load(&path(QWEN_15B), &config).unwrap()
}

/// Always drafting `max_draft` tokens where exactness allows: the
/// strongest test of verification (adaptive drafting only drafts less).
fn fixed(ngram: bool, draft: Option<PathBuf>) -> SpeculativeConfig {
    SpeculativeConfig {
        draft,
        ngram,
        max_draft: 8,
        adaptive: false,
        exact: true,
    }
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

fn chat_request(model: &LlamaModelHandle, user: &str) -> GenerateRequest {
    let text = template(model)
        .render(&[ChatMessage::new("user", user)], true)
        .unwrap();
    let mut request = GenerateRequest::new(model.tokenize(&text).unwrap());
    request.sampling = SamplingParams::greedy();
    request.max_tokens = Some(MAX_TOKENS);
    request
}

fn collect(mut generation: Generation) -> (String, Completion) {
    let mut text = String::new();
    loop {
        match generation.blocking_next() {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(c)) => return (text, c),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// Every prompt's greedy answer, and the tokens drafted and accepted in all.
fn answers(model: &LlamaModelHandle) -> (Vec<String>, u32, u32) {
    let (mut texts, mut drafted, mut accepted) = (Vec::new(), 0, 0);
    for prompt in PROMPTS {
        let (text, done) = collect(model.submit(chat_request(model, prompt)).unwrap());
        assert!(done.usage.accepted_tokens <= done.usage.drafted_tokens);
        drafted += done.usage.drafted_tokens;
        accepted += done.usage.accepted_tokens;
        texts.push(text);
    }
    (texts, drafted, accepted)
}

fn assert_same(plain: &[String], speculated: &[String], how: &str) {
    for (i, (a, b)) in plain.iter().zip(speculated).enumerate() {
        assert_eq!(a, b, "prompt {i} ({how}): {:?}", PROMPTS[i]);
    }
}

/// At temperature 0 speculation must not change a single byte of any
/// answer, whether the draft comes from lookup or from a draft model, and
/// it must really have drafted (and had drafts kept) for that to mean
/// anything.
#[test]
fn greedy_answers_with_speculation_equal_plain_decode() {
    let (plain, drafted, _) = answers(&load(SpeculativeConfig::default()));
    assert_eq!(drafted, 0);

    let (looked_up, drafted, accepted) = answers(&load(fixed(true, None)));
    assert!(drafted > 50 && accepted > 0, "{accepted} of {drafted}");
    assert_same(&plain, &looked_up, "n-gram lookup");

    let (drafted_by_model, drafted, accepted) = answers(&load(fixed(false, Some(path(QWEN_05B)))));
    assert!(
        drafted > 200 && accepted > drafted / 3,
        "{accepted} of {drafted}"
    );
    assert_same(&plain, &drafted_by_model, "0.5B draft model");
}

/// Structured output under speculation: drafted tokens the grammar refuses
/// are never verified, and the answer is plain decode's, valid JSON.
#[test]
fn a_grammar_holds_speculated_answers() {
    let chat = Chat {
        messages: vec![ChatMessage::new(
            "user",
            "Give a JSON object describing a book: title, author, year, and a list of three tags.",
        )],
        format: OutputFormat::JsonObject,
        ..Chat::default()
    };
    let run = |model: &LlamaModelHandle| {
        let prepared = chat::prepare(&chat, &template(model)).unwrap();
        let mut request = GenerateRequest::new(model.tokenize(&prepared.prompt).unwrap());
        request.sampling = SamplingParams::greedy();
        request.max_tokens = Some(96);
        request.grammar = prepared.grammar;
        collect(model.submit(request).unwrap())
    };
    let (plain, _) = run(&load(SpeculativeConfig::default()));
    let both = SpeculativeConfig {
        draft: Some(path(QWEN_05B)),
        ..fixed(true, None)
    };
    let (speculated, done) = run(&load(both));
    assert!(done.usage.drafted_tokens > 0);
    assert_eq!(plain, speculated);
    serde_json::from_str::<serde_json::Value>(&speculated).expect("valid JSON");
}

/// Sampling with speculation runs on the real engine (speculative sampling
/// with both sources) and, drafting a fixed amount and computing the
/// prompt afresh each time, a seed gives the same answer twice.
#[test]
fn sampled_speculation_is_seeded_and_completes() {
    let model = load(SpeculativeConfig {
        draft: Some(path(QWEN_05B)),
        ..fixed(true, None)
    });
    let sampled = |seed| {
        let mut request = chat_request(&model, PROMPTS[0]);
        request.sampling = SamplingParams {
            temperature: 0.7,
            seed: Some(seed),
            repeat_penalty: 1.1,
            ..SamplingParams::default()
        };
        request.cache_prompt = false;
        collect(model.submit(request).unwrap())
    };
    let (first, done) = sampled(7);
    assert_eq!(done.usage.completion_tokens, MAX_TOKENS);
    assert!(done.usage.drafted_tokens > 0 && done.usage.accepted_tokens > 0);
    let (again, _) = sampled(7);
    assert_eq!(first, again);
}

/// A request's prediction (OpenAI's predicted outputs) is drafted from by
/// lookup even when the model was loaded without speculation (the exact
/// envelope is then unmeasured, so the request allows inexact
/// verification), and a request can turn speculation off. Drafting is
/// fixed: whether adaptive drafting pays depends on the machine's batch
/// costs, which this test must not.
#[test]
fn predictions_feed_lookup_and_requests_can_opt_out() {
    let model = load(SpeculativeConfig {
        adaptive: false,
        ..SpeculativeConfig::default()
    });
    let expected = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.";
    let mut request = chat_request(&model, PROMPTS[8]);
    request.prediction = model.tokenize(expected).unwrap();
    request.speculative.exact = Some(false);
    let (_, done) = collect(model.submit(request.clone()).unwrap());
    assert!(done.usage.accepted_tokens > 10, "{:?}", done.usage);
    request.speculative.max_draft = Some(0);
    let (_, done) = collect(model.submit(request).unwrap());
    assert_eq!(done.usage.drafted_tokens, 0);
}

/// A draft model whose vocabulary differs is refused at load, saying so.
#[test]
fn a_draft_with_another_vocabulary_is_refused() {
    let config = LoadConfig {
        threads: Some(2),
        ctx: Some(256),
        speculative: fixed(false, Some(path(SMOLLM2))),
        ..LoadConfig::default()
    };
    match LlamaEngine.load(&path(QWEN_15B), &config) {
        Err(EngineError::Load { reason, .. }) => {
            assert!(reason.contains("cannot draft for this model"), "{reason}");
            assert!(reason.contains("vocabulary"), "{reason}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a draft with another vocabulary was accepted"),
    }
}

/// While another request's prompt is being read, a generating request
/// drafts nothing: the prompt is real work, and drafting backs off for it.
/// Alone, the same request drafts. A step target too short for more keeps
/// prompts at 8 tokens a step while anyone generates, so the long prompt is
/// still being read through the whole short answer; a third request,
/// generating meanwhile, makes the copying request's own long prompt take
/// about 80 steps, long enough for the other prompt to be queued before
/// it ends.
#[test]
fn drafting_waits_while_another_prompt_is_read() {
    let config = LoadConfig {
        threads: Some(2),
        ctx: Some(1280),
        slots: 3,
        step_target: std::time::Duration::from_millis(1),
        speculative: SpeculativeConfig {
            ngram: true,
            adaptive: false,
            exact: false,
            ..SpeculativeConfig::default()
        },
        ..LoadConfig::default()
    };
    let model = LlamaEngine.load(&path(SMOLLM2), &config).unwrap();
    let lines = |n: usize| -> String {
        (0..n)
            .map(|i| format!("Line {i}: the shelf by the window holds box number {i}.\n"))
            .collect()
    };
    let mut copy = chat_request(
        &model,
        &format!("Repeat this text exactly:\n\n{}", lines(35)),
    );
    copy.max_tokens = Some(12);
    let (_, alone) = collect(model.submit(copy.clone()).unwrap());
    assert!(alone.usage.drafted_tokens > 0, "{:?}", alone.usage);

    let mut story = chat_request(&model, "Write a long story about a lighthouse keeper.");
    story.max_tokens = Some(400);
    story.speculative.max_draft = Some(0);
    let mut running = model.submit(story).unwrap();
    assert!(matches!(running.blocking_next(), Some(Event::Text(_))));
    let mut long = chat_request(&model, &format!("Summarise:\n\n{}", lines(70)));
    long.max_tokens = Some(1);
    assert!(copy.prompt.len() > 600, "{}", copy.prompt.len());
    assert!(long.prompt.len() > 800, "{}", long.prompt.len());
    let copying = model.submit(copy).unwrap();
    let reading = model.submit(long).unwrap();
    let (_, beside) = collect(copying);
    assert_eq!(beside.usage.drafted_tokens, 0, "{:?}", beside.usage);
    // Cancelled, so the rest of the long prompt is read at full speed.
    drop(running);
    collect(reading);
}

/// A lookup draft stops before an end of generation it copies (here the
/// end of the prompt's turn): the row before it predicts the end, and no
/// row past it could be kept. An answer repeating the prompt's sentence
/// word for word then keeps every token drafted, the last draft included.
#[test]
fn lookup_drafts_stop_before_the_end_they_copy() {
    // Drafts long enough to reach past the prompt's end into the template.
    let model = load(SpeculativeConfig {
        max_draft: 16,
        ..fixed(true, None)
    });
    let sentence = "The quick brown fox jumps over the lazy dog.";
    let ask = format!("Repeat this sentence exactly and say nothing else: {sentence}");
    let mut request = chat_request(&model, &ask);
    request.speculative.exact = Some(false);
    let (text, done) = collect(model.submit(request).unwrap());
    assert_eq!(text, sentence);
    assert!(done.usage.drafted_tokens > 0, "{:?}", done.usage);
    assert_eq!(
        done.usage.accepted_tokens, done.usage.drafted_tokens,
        "{:?}",
        done.usage
    );
}
