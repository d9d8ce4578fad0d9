//! The llama.cpp engine against real small models.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::path::Path;
use std::time::{Duration, Instant};

use shelf_engine::template::{ChatMessage, ChatTemplate};
use shelf_engine::{
    Completion, EngineError, Event, FinishReason, GenerateRequest, Generation, LoadConfig,
    LoadedModel, SamplingParams,
};
use shelf_engine_llama::{LlamaEngine, LlamaModelHandle};
use shelf_testmodels::{path, GEMMA3, QWEN_05B, SMOLLM2};

fn load(name: &str, ctx: u32) -> LlamaModelHandle {
    let config = LoadConfig {
        threads: Some(2),
        ctx: Some(ctx),
        ..LoadConfig::default()
    };
    LlamaEngine.load(&path(name), &config).unwrap()
}

fn chat_prompt(model: &LlamaModelHandle, user: &str) -> GenerateRequest {
    let info = model.info();
    let template = ChatTemplate::new(
        info.chat_template.as_deref(),
        &info.bos_token,
        &info.eos_token,
    )
    .unwrap();
    let text = template
        .render(&[ChatMessage::new("user", user)], true)
        .unwrap();
    let mut request = GenerateRequest::new(model.tokenize(&text).unwrap());
    request.sampling = SamplingParams::greedy();
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

#[test]
fn greedy_chat_is_deterministic_and_accounted() {
    let model = load(SMOLLM2, 1024);
    let mut request = chat_prompt(&model, "What is the capital of France?");
    request.max_tokens = Some(24);
    let (first, completion) = collect(model.submit(request.clone()).unwrap());
    let (second, _) = collect(model.submit(request.clone()).unwrap());
    assert!(!first.trim().is_empty());
    assert_eq!(first, second, "greedy output must repeat exactly");
    assert_eq!(
        completion.usage.prompt_tokens as usize,
        request.prompt.len()
    );
    assert!(completion.usage.completion_tokens <= 24);
    assert!(completion.timings.prefill_ms > 0.0);
}

#[test]
fn max_tokens_ends_with_length() {
    let model = load(SMOLLM2, 512);
    let mut request = chat_prompt(&model, "Write a long story about a dragon.");
    request.max_tokens = Some(5);
    let (_, completion) = collect(model.submit(request).unwrap());
    assert_eq!(completion.finish_reason, FinishReason::Length);
    assert_eq!(completion.usage.completion_tokens, 5);
    assert_eq!(completion.timings.decoded_tokens, 4);
}

#[test]
fn stop_strings_cut_the_output() {
    let model = load(SMOLLM2, 512);
    let mut request = chat_prompt(&model, "Count from 1 to 10, separated by commas.");
    request.max_tokens = Some(40);
    let (full, _) = collect(model.submit(request.clone()).unwrap());
    assert!(full.contains('4'), "{full}");
    request.stop = vec!["4".into()];
    let (cut, completion) = collect(model.submit(request).unwrap());
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    assert!(!cut.contains('4'), "{cut}");
    assert!(
        full.starts_with(&cut),
        "{cut:?} is not a prefix of {full:?}"
    );
}

#[test]
fn seeded_sampling_repeats() {
    let model = load(SMOLLM2, 512);
    let mut request = chat_prompt(&model, "Tell me a joke.");
    request.max_tokens = Some(16);
    request.sampling = SamplingParams {
        temperature: 1.0,
        seed: Some(42),
        repeat_penalty: 1.1,
        ..SamplingParams::default()
    };
    let (a, _) = collect(model.submit(request.clone()).unwrap());
    let (b, _) = collect(model.submit(request).unwrap());
    assert_eq!(a, b);
}

#[test]
fn prompt_longer_than_context_is_a_typed_error() {
    let model = load(SMOLLM2, 64);
    let request = chat_prompt(&model, &"word ".repeat(200));
    match model.submit(request) {
        Err(EngineError::PromptTooLong {
            n_ctx: 64,
            prompt_tokens,
        }) => assert!(prompt_tokens > 64),
        other => panic!("expected PromptTooLong, got {other:?}"),
    }
    // The model still works afterwards.
    let mut ok = chat_prompt(&model, "Hi");
    ok.max_tokens = Some(2);
    collect(model.submit(ok).unwrap());
}

#[test]
fn dropping_the_generation_frees_the_model_within_a_token() {
    let model = load(SMOLLM2, 1024);
    let mut long = chat_prompt(&model, "Write a very long essay about the sea.");
    long.ignore_eos = true;
    long.max_tokens = Some(800);
    let mut generation = model.submit(long).unwrap();
    assert!(matches!(generation.blocking_next(), Some(Event::Text(_))));
    drop(generation);
    let mut next = chat_prompt(&model, "Hi");
    next.max_tokens = Some(1);
    let started = Instant::now();
    collect(model.submit(next).unwrap());
    // 800 tokens would take seconds; a freed model answers in well under one.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn base_model_without_template_uses_the_fallback() {
    let model = load(GEMMA3, 512);
    assert!(model.info().chat_template.is_none());
    assert_eq!(model.info().architecture, "gemma3");
    let mut request = GenerateRequest::new(model.tokenize("The capital of France is").unwrap());
    request.sampling = SamplingParams::greedy();
    request.max_tokens = Some(8);
    request.ignore_eos = true;
    let (text, completion) = collect(model.submit(request).unwrap());
    assert!(!text.trim().is_empty(), "{text:?}");
    assert_eq!(completion.usage.completion_tokens, 8);
}

#[test]
fn qwen_chat_template_renders_and_answers() {
    let model = load(QWEN_05B, 1024);
    assert_eq!(model.info().architecture, "qwen2");
    assert!(model.info().chat_template.is_some());
    let mut request = chat_prompt(&model, "Write a Python function that adds two numbers.");
    request.max_tokens = Some(40);
    let (text, _) = collect(model.submit(request).unwrap());
    assert!(text.contains("def "), "{text}");
}

fn load_error(path: &Path) -> String {
    match LlamaEngine.load(path, &LoadConfig::default()) {
        Err(e @ EngineError::Load { .. }) => e.to_string(),
        Err(other) => panic!("expected a load error, got {other:?}"),
        Ok(_) => panic!("{} loaded", path.display()),
    }
}

#[test]
fn corrupt_files_are_load_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "this is not a model").unwrap();
    let message = load_error(&text);
    assert!(
        message.contains("notes.gguf") && message.contains("not a GGUF"),
        "{message}"
    );

    let truncated = dir.path().join("half.gguf");
    let bytes = std::fs::read(path(SMOLLM2)).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let message = load_error(&truncated);
    assert!(
        message.contains("half.gguf") && message.contains("truncated"),
        "{message}"
    );

    let message = load_error(&dir.path().join("missing.gguf"));
    assert!(message.contains("missing.gguf"), "{message}");
}
