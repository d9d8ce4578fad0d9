//! `shelf bench MODEL --speculate ngram` / `--draft DRAFT`: decode speed
//! with speculative decoding against plain decode of the same model, in one
//! process, alternating, on real tasks (chat prompts rendered with the
//! model's template), with the acceptance rate and whether the greedy
//! answers came out identical.

use anyhow::Context;
use serde::Serialize;
use shelf_engine::template::{ChatMessage, ChatTemplate};
use shelf_engine::{Completion, Event, GenerateRequest, LoadedModel, SamplingParams};
use shelf_engine_llama::LlamaModelHandle;

use crate::cli::BenchArgs;

/// A named set of prompts.
struct Task {
    name: String,
    prompts: Vec<String>,
}

/// One task's figures.
#[derive(Debug, Serialize)]
struct TaskResult {
    task: String,
    prompts: usize,
    plain_tps: f64,
    speculative_tps: f64,
    speedup: f64,
    drafted: u64,
    accepted: u64,
    /// Accepted over drafted tokens.
    acceptance: f64,
    /// With a fixed draft length: the per-token rate α the planner's
    /// `--acceptance` means, whose geometric sum over the draft gives the
    /// tokens kept per step.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    /// Answers whose text equalled plain decode's, of all answers compared.
    identical: usize,
    answers: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    draft: Option<String>,
    ngram: bool,
    draft_max: u32,
    adaptive: bool,
    exact: bool,
    threads: u32,
    tokens: u32,
    reps: u32,
    tasks: Vec<TaskResult>,
}

/// Measure each task, print the table (or JSON), and fail when a task's
/// speed-up is below `--min-speedup`.
pub async fn bench(
    model: &LlamaModelHandle,
    label: &str,
    draft: Option<String>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let tasks = tasks(&args.tasks)?;
    let info = model.info();
    let template = ChatTemplate::of_model(info);
    let mut results = Vec::new();
    for task in &tasks {
        results.push(measure(model, &template, task, args).await?);
    }
    let report = Report {
        model: label.to_string(),
        draft,
        ngram: args.speculate.speculate.is_some(),
        draft_max: args.speculate.draft_max,
        adaptive: !args.speculate.draft_fixed,
        exact: !args.speculate.inexact,
        threads: info.threads,
        tokens: args.tg,
        reps: args.reps,
        tasks: results,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(bar) = args.min_speedup {
        for task in &report.tasks {
            anyhow::ensure!(
                task.speedup >= bar,
                "speculative decoding on {} is {:.3}x plain decode, below the {bar} bar",
                task.task,
                task.speedup
            );
        }
    }
    Ok(())
}

/// Plain and speculative decode of every prompt of `task`, `reps` times,
/// alternating, after one warm-up of each. Which of the two goes first
/// alternates too, from one prompt and rep to the next, so neither always
/// runs on the heels of the other.
async fn measure(
    model: &LlamaModelHandle,
    template: &ChatTemplate,
    task: &Task,
    args: &BenchArgs,
) -> anyhow::Result<TaskResult> {
    let mut plain = Vec::new();
    let mut speculative = Vec::new();
    let (mut identical, mut answers) = (0, 0);
    for (p, prompt) in task.prompts.iter().enumerate() {
        let text = template.render(&[ChatMessage::new("user", prompt.clone())], true)?;
        let tokens = model.tokenize(&text)?;
        let request = |speculate: bool| {
            let mut request = GenerateRequest::new(tokens.clone());
            request.sampling = SamplingParams::greedy();
            request.max_tokens = Some(args.tg);
            if !speculate {
                request.speculative.max_draft = Some(0);
            }
            request
        };
        answer(model, request(false)).await?;
        answer(model, request(true)).await?;
        for rep in 0..args.reps as usize {
            let speculate_first = (p + rep) % 2 == 1;
            let first = answer(model, request(speculate_first)).await?;
            let second = answer(model, request(!speculate_first)).await?;
            let ((plain_text, plain_done), (text, done)) = match speculate_first {
                true => (second, first),
                false => (first, second),
            };
            identical += usize::from(plain_text == text);
            answers += 1;
            plain.push(plain_done);
            speculative.push(done);
        }
    }
    let drafted: u64 = speculative
        .iter()
        .map(|c| u64::from(c.usage.drafted_tokens))
        .sum();
    let accepted: u64 = speculative
        .iter()
        .map(|c| u64::from(c.usage.accepted_tokens))
        .sum();
    let (plain_tps, speculative_tps) = (rate(&plain), rate(&speculative));
    let acceptance = accepted as f64 / drafted.max(1) as f64;
    let k = args.speculate.draft_max as usize;
    Ok(TaskResult {
        task: task.name.clone(),
        prompts: task.prompts.len(),
        plain_tps,
        speculative_tps,
        speedup: speculative_tps / plain_tps.max(1e-9),
        drafted,
        accepted,
        acceptance,
        rate: args
            .speculate
            .draft_fixed
            .then(|| per_token_rate(acceptance * k as f64, k)),
        identical,
        answers,
    })
}

/// Decode tokens per second over all runs (the first token, which comes
/// with the prompt, left out as llama-bench does).
fn rate(runs: &[Completion]) -> f64 {
    let tokens: u32 = runs.iter().map(|c| c.timings.decoded_tokens).sum();
    let ms: f64 = runs.iter().map(|c| c.timings.decode_ms).sum();
    f64::from(tokens) * 1000.0 / ms.max(1e-9)
}

/// The α whose α + α² + … + α^k equals `kept`, the tokens kept per draft
/// of `k` (bisection: the sum grows with α).
fn per_token_rate(kept: f64, k: usize) -> f64 {
    let sum = |a: f64| (1..=k).map(|i| a.powi(i as i32)).sum::<f64>();
    let (mut low, mut high) = (0.0, 1.0);
    for _ in 0..60 {
        let mid = (low + high) / 2.0;
        if sum(mid) < kept {
            low = mid;
        } else {
            high = mid;
        }
    }
    (low + high) / 2.0
}

async fn answer(
    model: &LlamaModelHandle,
    request: GenerateRequest,
) -> anyhow::Result<(String, Completion)> {
    let mut generation = model.submit(request)?;
    let mut text = String::new();
    loop {
        match generation.next().await {
            Some(Event::Text(piece)) => text.push_str(&piece),
            Some(Event::Logprob(_) | Event::PromptLogprobs(_)) => {}
            Some(Event::Done(completion)) => return Ok((text, completion)),
            Some(Event::Failed(error)) => return Err(error.into()),
            None => anyhow::bail!("the model stopped unexpectedly"),
        }
    }
}

fn print_table(report: &Report) {
    let mut how = Vec::new();
    if let Some(draft) = &report.draft {
        how.push(format!("draft {draft}"));
    }
    if report.ngram {
        how.push("n-gram lookup".into());
    }
    println!(
        "{}: {}, up to {} tokens a step, {}, {}; {} threads, {} tokens, {} reps",
        report.model,
        how.join(" + "),
        report.draft_max,
        if report.adaptive { "adaptive" } else { "fixed" },
        if report.exact { "exact" } else { "inexact" },
        report.threads,
        report.tokens,
        report.reps
    );
    println!("| task | plain t/s | speculative t/s | speed-up | drafted | accepted | identical |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for t in &report.tasks {
        println!(
            "| {} | {:.2} | {:.2} | {:.3}x | {} | {} ({:.0}%) | {}/{} |",
            t.task,
            t.plain_tps,
            t.speculative_tps,
            t.speedup,
            t.drafted,
            t.accepted,
            100.0 * t.acceptance,
            t.identical,
            t.answers
        );
    }
}

/// The tasks named by `--task`: built-in sets, or files of prompts
/// separated by lines holding only `---`. None named: all built-in sets.
fn tasks(named: &[String]) -> anyhow::Result<Vec<Task>> {
    let names: Vec<String> = match named.is_empty() {
        true => ["rewrite", "code", "prose"].map(String::from).to_vec(),
        false => named.to_vec(),
    };
    names
        .iter()
        .map(|name| {
            let text = match builtin(name) {
                Some(text) => text.to_string(),
                None => std::fs::read_to_string(name).with_context(|| {
                    format!("--task {name} is neither rewrite, code, prose nor a readable file")
                })?,
            };
            let prompts: Vec<String> = text
                .split("\n---\n")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
            anyhow::ensure!(!prompts.is_empty(), "{name} holds no prompts");
            Ok(Task {
                name: name.clone(),
                prompts,
            })
        })
        .collect()
}

fn builtin(name: &str) -> Option<&'static str> {
    match name {
        "rewrite" => Some(REWRITE),
        "code" => Some(CODE),
        "prose" => Some(PROSE),
        _ => None,
    }
}

// The built-in tasks are bench/tasks' files, so that bench/speculative.sh
// sends other servers the very same prompts.
/// Edits to given code: most of the answer repeats the prompt.
const REWRITE: &str = include_str!("../../../../bench/tasks/rewrite.txt");
/// New code: little to copy.
const CODE: &str = include_str!("../../../../bench/tasks/code.txt");
/// Prose: nothing to copy.
const PROSE: &str = include_str!("../../../../bench/tasks/prose.txt");
