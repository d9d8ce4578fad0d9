//! Greedy answers to the bench tasks as token ids, for replaying drafting
//! policies offline (`bench/speculative_replay.py`): one JSON object a line,
//! `{"task", "prompt", "output"}`, the prompt rendered with the model's chat
//! template as `shelf bench` renders it, the answer decoded plainly and
//! tokenized again.
//!
//! Usage: cargo run --release -p shelf-engine-llama --example dump_tokens --
//!        MODEL TOKENS TASK... (names of files under bench/tasks, without .txt)

#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: fail loudly.

use shelf_engine::template::{ChatMessage, ChatTemplate};
use shelf_engine::{Event, GenerateRequest, LoadConfig, LoadedModel, SamplingParams, Token};
use shelf_engine_llama::{LlamaEngine, LlamaModelHandle};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: dump_tokens MODEL TOKENS TASK...";
    let tokens: u32 = args.get(2).expect(usage).parse().expect(usage);
    let config = LoadConfig {
        threads: Some(2),
        ctx: Some(4096),
        ..LoadConfig::default()
    };
    let model = LlamaEngine
        .load(std::path::Path::new(&args[1]), &config)
        .unwrap();
    let info = model.info();
    let template = ChatTemplate::of_model(info);
    for task in &args[3..] {
        let text = std::fs::read_to_string(format!("bench/tasks/{task}.txt")).unwrap();
        // Prompts are separated as `shelf bench` separates them.
        for prompt in text
            .split("\n---\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let rendered = template
                .render(&[ChatMessage::new("user", prompt)], true)
                .unwrap();
            let prompt = model.tokenize(&rendered).unwrap();
            let answer = answer(&model, prompt.clone(), tokens);
            let ids = |t: &[Token]| t.iter().map(|t| t.0).collect::<Vec<_>>();
            let line =
                serde_json::json!({"task": task, "prompt": ids(&prompt), "output": ids(&answer)});
            println!("{line}");
        }
    }
}

/// The greedy answer's tokens (its text tokenized again, less any BOS).
fn answer(model: &LlamaModelHandle, prompt: Vec<Token>, tokens: u32) -> Vec<Token> {
    let mut request = GenerateRequest::new(prompt);
    request.sampling = SamplingParams::greedy();
    request.max_tokens = Some(tokens);
    request.speculative.max_draft = Some(0);
    let mut generation = model.submit(request).unwrap();
    let mut text = String::new();
    loop {
        match generation.blocking_next() {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(_)) => break,
            other => panic!("unexpected event {other:?}"),
        }
    }
    let bos = model.tokenize("").unwrap();
    let mut ids = model.tokenize(&text).unwrap();
    if !bos.is_empty() && ids.first() == bos.first() {
        ids.remove(0);
    }
    ids
}
