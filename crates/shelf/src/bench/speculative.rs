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
    acceptance: f64,
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
    let template = ChatTemplate::new(
        info.chat_template.as_deref(),
        &info.bos_token,
        &info.eos_token,
    )
    .unwrap_or_else(|_| ChatTemplate::fallback(&info.bos_token, &info.eos_token));
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
/// alternating, after one warm-up of each.
async fn measure(
    model: &LlamaModelHandle,
    template: &ChatTemplate,
    task: &Task,
    args: &BenchArgs,
) -> anyhow::Result<TaskResult> {
    let mut plain = Vec::new();
    let mut speculative = Vec::new();
    let (mut identical, mut answers) = (0, 0);
    for prompt in &task.prompts {
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
        for _ in 0..args.reps {
            let (plain_text, plain_done) = answer(model, request(false)).await?;
            let (text, done) = answer(model, request(true)).await?;
            identical += usize::from(plain_text == text);
            if plain_text != text && std::env::var_os("SHELF_BENCH_DUMP").is_some() {
                eprintln!("=== PLAIN\n{plain_text}\n=== SPEC\n{text}\n===");
            }
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
    Ok(TaskResult {
        task: task.name.clone(),
        prompts: task.prompts.len(),
        plain_tps,
        speculative_tps,
        speedup: speculative_tps / plain_tps.max(1e-9),
        drafted,
        accepted,
        acceptance: accepted as f64 / drafted.max(1) as f64,
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
        .map(|name| match builtin(name) {
            Some(prompts) => Ok(Task {
                name: name.clone(),
                prompts: prompts.iter().map(|p| p.to_string()).collect(),
            }),
            None => {
                let text = std::fs::read_to_string(name).with_context(|| {
                    format!("--task {name} is neither rewrite, code, prose nor a readable file")
                })?;
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
            }
        })
        .collect()
}

fn builtin(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "rewrite" => Some(REWRITE),
        "code" => Some(CODE),
        "prose" => Some(PROSE),
        _ => None,
    }
}

/// Edits to given code: most of the answer repeats the prompt.
const REWRITE: &[&str] = &[
    r#"Add type hints to this Python function and change nothing else. Reply with the whole function in one code block.

```python
def merge_intervals(intervals):
    """Merge overlapping intervals.

    Each interval is a pair (start, end) with start <= end. The result is
    sorted by start, and no two intervals in it overlap or touch.
    """
    if not intervals:
        return []
    ordered = sorted(intervals, key=lambda pair: pair[0])
    merged = [list(ordered[0])]
    for start, end in ordered[1:]:
        last = merged[-1]
        if start <= last[1]:
            # Overlaps the previous interval: extend it.
            last[1] = max(last[1], end)
        else:
            merged.append([start, end])
    return [tuple(pair) for pair in merged]
```"#,
    r#"In this Rust function, rename the variable `total` to `sum` everywhere and keep everything else exactly as it is. Reply with the whole function.

```rust
/// The mean and the largest value of `values`, or `None` when empty.
pub fn summarize(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut total = 0.0;
    let mut largest = f64::MIN;
    for &value in values {
        total += value;
        if value > largest {
            largest = value;
        }
    }
    let mean = total / values.len() as f64;
    Some((mean, largest))
}
```"#,
    r#"Change this JavaScript function so that it also ignores empty lines, and keep the rest of the code unchanged. Reply with the complete function.

```javascript
// Count how often each word appears in the text, ignoring case.
function wordCounts(text) {
  const counts = new Map();
  for (const line of text.split("\n")) {
    for (const raw of line.split(/\s+/)) {
      const word = raw.toLowerCase().replace(/[^a-z0-9']/g, "");
      if (word.length === 0) {
        continue;
      }
      counts.set(word, (counts.get(word) || 0) + 1);
    }
  }
  return counts;
}
```"#,
];

/// New code: little to copy.
const CODE: &[&str] = &[
    "Write a Python function that parses a CSV file into a list of dictionaries, one per row, using the header row for the keys.",
    "Write a Rust function that returns the n-th Fibonacci number using an iterative loop, with a doc comment and a unit test.",
];

/// Prose: nothing to copy.
const PROSE: &[&str] = &[
    "Explain in a few paragraphs why the sky is blue.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
];
