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
    load_with(name, ctx, 1, 0)
}

fn load_with(name: &str, ctx: u32, slots: u32, cache_ram_bytes: u64) -> LlamaModelHandle {
    let config = LoadConfig {
        threads: Some(2),
        ctx: Some(ctx),
        slots,
        cache_ram_bytes,
        ..LoadConfig::default()
    };
    LlamaEngine.load(&path(name), &config).unwrap()
}

/// A greedy request for `text` as it stands (no template).
fn raw_prompt(model: &LlamaModelHandle, text: &str, max_tokens: u32) -> GenerateRequest {
    let mut request = GenerateRequest::new(model.tokenize(text).unwrap());
    request.sampling = SamplingParams::greedy();
    request.max_tokens = Some(max_tokens);
    request
}

fn without_cache(mut request: GenerateRequest) -> GenerateRequest {
    request.cache_prompt = false;
    request
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

/// Slots decode in one batch, and each answers exactly as it would alone.
#[test]
fn parallel_slots_answer_as_they_would_alone() {
    let model = load_with(SMOLLM2, 512, 4, 0);
    let questions = [
        "What is the capital of France?",
        "Name three colours.",
        "Write a haiku about rain.",
        "What is 2 + 2?",
    ];
    let requests: Vec<GenerateRequest> = questions
        .iter()
        .map(|q| {
            let mut r = chat_prompt(&model, q);
            r.max_tokens = Some(24);
            r.cache_prompt = false;
            r
        })
        .collect();
    let alone: Vec<String> = requests
        .iter()
        .map(|r| collect(model.submit(r.clone()).unwrap()).0)
        .collect();
    let generations: Vec<Generation> = requests
        .iter()
        .map(|r| model.submit(r.clone()).unwrap())
        .collect();
    let together: Vec<String> = generations.into_iter().map(|g| collect(g).0).collect();
    assert_eq!(together, alone);
}

/// A second chat turn reuses the first turn's KV, reports it as cached, and
/// answers exactly as a run without the cache does.
#[test]
fn the_next_turn_reuses_the_history() {
    let model = load_with(SMOLLM2, 2048, 2, 0);
    let history = format!(
        "<|im_start|>system\n{}<|im_end|>\n<|im_start|>user\nSummarise the rules.<|im_end|>\n<|im_start|>assistant\n",
        "Rule: be kind to every visitor of the library. ".repeat(40)
    );
    let first = raw_prompt(&model, &history, 16);
    let (answer, done) = collect(model.submit(first.clone()).unwrap());
    assert_eq!(done.usage.cached_tokens, 0);
    let turn_two = format!(
        "{history}{answer}<|im_end|>\n<|im_start|>user\nAnd on Sundays?<|im_end|>\n<|im_start|>assistant\n"
    );
    let second = raw_prompt(&model, &turn_two, 16);
    let (cached_answer, done) = collect(model.submit(second.clone()).unwrap());
    assert!(
        done.usage.cached_tokens as usize >= first.prompt.len(),
        "{} cached of a {}-token history",
        done.usage.cached_tokens,
        first.prompt.len()
    );
    let (fresh_answer, fresh) = collect(model.submit(without_cache(second)).unwrap());
    assert_eq!(fresh.usage.cached_tokens, 0);
    assert_eq!(cached_answer, fresh_answer);
}

/// With one slot, a conversation pushed out by another is restored from RAM.
#[test]
fn a_pushed_out_slot_comes_back_from_ram() {
    let model = load_with(SMOLLM2, 2048, 1, 256 << 20);
    let a = raw_prompt(&model, &"The first story is about a cat. ".repeat(60), 4);
    let b = raw_prompt(
        &model,
        &"A second, unrelated text on trains. ".repeat(60),
        4,
    );
    let (a_text, _) = collect(model.submit(a.clone()).unwrap());
    collect(model.submit(b).unwrap());
    let (again, done) = collect(model.submit(a.clone()).unwrap());
    assert_eq!(done.usage.cached_tokens as usize, a.prompt.len() - 1);
    assert_eq!(again, a_text);

    // Without the RAM cache the same sequence recomputes everything.
    let model = load_with(SMOLLM2, 2048, 1, 0);
    collect(model.submit(a.clone()).unwrap());
    collect(
        model
            .submit(raw_prompt(&model, &"Trains. ".repeat(200), 4))
            .unwrap(),
    );
    let (_, done) = collect(model.submit(a).unwrap());
    assert!(done.usage.cached_tokens < 8, "{}", done.usage.cached_tokens);
}

/// With a window-sized cache, Gemma 3's sliding-window layers forget
/// positions older than the window: a prompt that diverges early in a long
/// cached one must not reuse the cache, and answers match a run without it
/// either way.
#[test]
fn a_sliding_window_model_reuses_only_what_its_cache_holds() {
    let config = LoadConfig {
        threads: Some(2),
        ctx: Some(4096),
        small_window_cache: true,
        ..LoadConfig::default()
    };
    let model = LlamaEngine.load(&path(GEMMA3), &config).unwrap();
    let story = "Once upon a time there was a lighthouse keeper who counted ships. ".repeat(130);
    let long = raw_prompt(&model, &story, 6);
    // Past the window plus a micro-batch, the cache has dropped the start.
    assert!(long.prompt.len() > 1600, "{}", long.prompt.len());
    collect(model.submit(long.clone()).unwrap());

    // Diverges after ~100 tokens, far behind the 512-token window.
    let early = raw_prompt(&model, &format!("{} But then", &story[..400]), 8);
    let (text, done) = collect(model.submit(early.clone()).unwrap());
    assert_eq!(
        done.usage.cached_tokens, 0,
        "the window's positions are gone"
    );
    assert_eq!(text, collect(model.submit(without_cache(early)).unwrap()).0);

    // Extends the cached prompt: everything it holds is reused.
    collect(model.submit(long.clone()).unwrap());
    let later = raw_prompt(&model, &format!("{story} The end came when"), 8);
    let (text, done) = collect(model.submit(later.clone()).unwrap());
    assert!(done.usage.cached_tokens as usize >= long.prompt.len() - 1);
    assert_eq!(text, collect(model.submit(without_cache(later)).unwrap()).0);
}

/// A long prompt admitted while other slots generate is decoded in chunks
/// between their tokens; every answer is still what it would be alone.
#[test]
fn a_long_prompt_joins_running_streams_without_changing_them() {
    let model = load_with(SMOLLM2, 2048, 3, 0);
    let mut short = chat_prompt(&model, "List the planets of the solar system.");
    short.max_tokens = Some(40);
    short.cache_prompt = false;
    let mut long = chat_prompt(
        &model,
        &format!("{}\nWhich city is the first one on this list?", cities()),
    );
    long.max_tokens = Some(12);
    long.cache_prompt = false;
    assert!(long.prompt.len() > 600, "{}", long.prompt.len());
    let short_alone = collect(model.submit(short.clone()).unwrap()).0;
    let long_alone = collect(model.submit(long.clone()).unwrap()).0;
    let mut running = model.submit(short.clone()).unwrap();
    let mut so_far = String::new();
    match running.blocking_next() {
        Some(Event::Text(t)) => so_far.push_str(&t),
        other => panic!("unexpected {other:?}"),
    }
    let joined = model.submit(long).unwrap();
    let (rest, _) = collect(running);
    assert_eq!(so_far + &rest, short_alone);
    assert_eq!(collect(joined).0, long_alone);
}

/// A list of distinct lines, long enough to take several prompt chunks.
fn cities() -> String {
    let names = [
        "Lisbon", "Oslo", "Quito", "Hanoi", "Accra", "Lima", "Perth", "Cork", "Turin", "Kyoto",
        "Dakar", "Riga", "Bergen", "Porto", "Leeds", "Basel", "Malmo", "Split", "Ghent", "Pune",
    ];
    (0..120)
        .map(|i| {
            let name = names[i % names.len()];
            format!(
                "{}. {name} has {} bridges and {} parks.",
                i + 1,
                3 + i * 7 % 31,
                2 + i * 5 % 17
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Background work yields to requests: once a request holds a slot, a
/// background generation emits nothing until that request is done, then
/// goes on to finish its own answer.
#[test]
fn background_work_waits_while_a_request_holds_a_slot() {
    use shelf_engine::GenerationSink;
    let model = load_with(SMOLLM2, 1024, 2, 0);
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let mut background = raw_prompt(&model, "Once upon a time", 48);
    background.ignore_eos = true;
    background.background = true;
    let (_keep_background, sink) = GenerationSink::tagged(1, events.clone());
    model.submit_to(background, sink).unwrap();
    // The background answer is under way before the request comes.
    loop {
        let (id, event) = received.blocking_recv().unwrap();
        if id == 1 && matches!(event, Event::Text(_)) {
            break;
        }
    }
    let mut request = raw_prompt(&model, "The capital of France is", 16);
    request.ignore_eos = true;
    let (_keep_request, sink) = GenerationSink::tagged(2, events.clone());
    model.submit_to(request, sink).unwrap();
    // Text events by id in the order the decode thread sent them; 11 and 12
    // mark each one's end.
    let mut order = Vec::new();
    while !(order.contains(&11) && order.contains(&12)) {
        match received.blocking_recv().unwrap() {
            (id, Event::Text(_)) => order.push(id),
            (id, Event::Done(done)) => {
                assert_eq!(done.usage.completion_tokens, if id == 1 { 48 } else { 16 });
                order.push(id + 10);
            }
            (_, Event::Failed(error)) => panic!("{error}"),
            _ => {}
        }
    }
    let first = order.iter().position(|&id| id == 2).unwrap();
    let done = order.iter().position(|&id| id == 12).unwrap();
    assert!(
        order[first..done].iter().all(|&id| id != 1),
        "background text while the request ran: {order:?}"
    );
    assert!(
        order[done..].contains(&1),
        "the background answer went on: {order:?}"
    );
}
