//! Replays greedy answers through the drafting policy shelf runs
//! ([`Tuner`] over prompt lookup, as the decode loop drives it for a
//! request generating alone), charging each step what a decode of that
//! many rows was measured to cost. Prints, per task, the speed-up over
//! plain decode and where the time went, so a policy change can be judged
//! on many days' step costs in a second instead of one noisy bench run.
//!
//! Answers: one JSON object a line with `task`, `prompt` and `output`
//! token ids (`cargo run --release -p shelf-engine-llama --example
//! dump_tokens`). Costs: `rows ms` lines (`--example rows_bench`).
//!
//! Usage: cargo run --release -p shelf-engine --example tuner_replay --
//!        ANSWERS.jsonl ROWS.txt [MAX_DRAFT] [--trace] [--streams N]
//!
//! `--streams N` replays each task's answers N at a time, as requests
//! generating together (each slot's draft priced beside earlier slots'
//! drafts, as `shelf-engine-llama`'s `propose` does), against plain decode
//! of the same answers together.
//!
//! `--trace` prints each answer's steps: `.` a plain one, ` kept/drafted`
//! and `l` or `s` for a long or short lookup match.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: fail loudly.

use std::collections::BTreeMap;

use shelf_engine::speculate::{
    ngram_draft, ngram_extend, Costs, Edits, Lookup, Offer, Prices, Source, Tuner,
};
use shelf_engine::Token;

/// As the engine looks up (`shelf-engine-llama`'s `spec::lookup`).
const SHORTEST: usize = 2;
/// Qwen2.5's end-of-generation tokens (`<|endoftext|>`, `<|im_end|>`), as
/// llama.cpp reads them from the answers' model: the answers hold none.
const END: [Token; 2] = [Token(151643), Token(151645)];
const LONGEST: usize = 16;
/// The sizes the engine times at load.
const CALIBRATED: [usize; 6] = [1, 2, 4, 8, 16, 32];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tuner_replay ANSWERS.jsonl ROWS.txt [MAX_DRAFT] [--trace]";
    let answers = std::fs::read_to_string(args.get(1).expect(usage)).unwrap();
    let rows = std::fs::read_to_string(args.get(2).expect(usage)).unwrap();
    let trace = args.iter().any(|a| a == "--trace");
    let max = args
        .get(3)
        .filter(|a| !a.starts_with("--"))
        .map_or(32, |m| m.parse().expect(usage));
    let streams: usize = args
        .iter()
        .position(|a| a == "--streams")
        .map_or(1, |i| args.get(i + 1).expect(usage).parse().expect(usage));
    let table: BTreeMap<usize, f64> = rows
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .collect();
    let cost = |rows: usize| step_ms(&table, rows);
    let mut costs = Costs::new(1.0);
    for rows in CALIBRATED {
        costs.target.record(rows, cost(rows) / 1000.0);
    }
    if streams > 1 {
        return together(&answers, streams, max, &mut costs, &cost);
    }
    let mut tasks: BTreeMap<String, Tally> = BTreeMap::new();
    for line in answers.lines().filter(|l| !l.trim().is_empty()) {
        let answer: serde_json::Value = serde_json::from_str(line).unwrap();
        let task = answer["task"].as_str().unwrap().to_string();
        let tally = tasks.entry(task).or_default();
        replay(
            &ids(&answer, "prompt"),
            &ids(&answer, "output"),
            max,
            &mut costs,
            &cost,
            tally,
            trace,
        );
    }
    for (task, tally) in &tasks {
        tally.print(task, cost(1));
    }
}

/// Measured, or read along the line through the measured sizes around it
/// (past the largest, the line through the two largest).
fn step_ms(table: &BTreeMap<usize, f64>, rows: usize) -> f64 {
    if let Some(&ms) = table.get(&rows) {
        return ms;
    }
    let (below, above) = match table.range(rows..).next() {
        Some(above) => (table.range(..rows).next_back().unwrap(), above),
        None => {
            let mut largest = table.iter().rev();
            let above = largest.next().unwrap();
            (largest.next().expect("two sizes measured"), above)
        }
    };
    let along = (rows as f64 - *below.0 as f64) / (above.0 - below.0) as f64;
    below.1 + along * (above.1 - below.1)
}

/// Time and tokens by kind of step.
#[derive(Default)]
struct Tally {
    plain_tokens: usize,
    kinds: BTreeMap<String, (usize, f64, usize)>,
}

impl Tally {
    fn add(&mut self, kind: String, ms: f64, tokens: usize) {
        let entry = self.kinds.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += ms;
        entry.2 += tokens;
    }

    fn print(&self, task: &str, plain_ms: f64) {
        let total: f64 = self.kinds.values().map(|k| k.1).sum();
        let speed = self.plain_tokens as f64 * plain_ms / total;
        println!("{task}: {speed:.3}x");
        for (kind, (steps, ms, tokens)) in &self.kinds {
            let plain = ms / plain_ms;
            let rate = *tokens as f64 / plain;
            println!("  {kind:24} steps {steps:4}  plain steps {plain:7.1}  tokens {tokens:5}  per plain step {rate:.2}");
        }
    }
}

fn replay(
    prompt: &[Token],
    output: &[Token],
    max: usize,
    costs: &mut Costs,
    cost: &dyn Fn(usize) -> f64,
    tally: &mut Tally,
    trace: bool,
) {
    let mut tuner = Tuner::new(costs);
    let mut edits = Edits::default();
    if trace {
        println!();
    }
    let mut at = 1;
    tally.plain_tokens += output.len().saturating_sub(1);
    while at < output.len() {
        let text: Vec<Token> = prompt.iter().chain(&output[..at]).copied().collect();
        let (found, end) = looked_up(&text, max, &mut edits);
        let prices = costs.prices(1, 1);
        let plan = tuner.plan(at as u32, &prices, offer(&found, prompt.len()), false, max);
        let Some(draft) = plan else {
            if trace {
                print!(".");
            }
            tally.add("plain".into(), cost(1), 1);
            costs.target.record(1, cost(1) / 1000.0);
            at += 1;
            continue;
        };
        let tokens = drafted(&text, found.tokens, draft.tokens, end, &prices);
        let kept = kept(&tokens, &output[at..]);
        let rows = tokens.len() + 1;
        let outcome = match kept {
            k if k == tokens.len() => "whole",
            0 => "none",
            _ => "part",
        };
        let source = match draft.source {
            Source::NgramLong => "long",
            _ => "short",
        };
        let size = match rows {
            ..=4 => "<=4",
            5..=17 => "<=17",
            _ => ">17",
        };
        if trace {
            print!(" {kept}/{}{} ", tokens.len(), &source[..1]);
        }
        tally.add(format!("{source} {size} {outcome}"), cost(rows), kept + 1);
        costs.target.record(rows, cost(rows) / 1000.0);
        tuner.record(draft.source, tokens.len(), kept, costs);
        edits.verified(kept);
        at += kept + 1;
    }
}

/// What the engine tells the tuner of lookup's `found`: it copies the
/// request's own text when it starts within the prompt's `given` tokens.
fn offer(found: &Lookup, given: usize) -> Offer {
    Offer {
        tokens: found.tokens.len(),
        matched: found.matched,
        given: found.from < given,
    }
}

/// What lookup proposes, with the request's learnt edits made (set
/// `SHELF_NO_EDITS` to replay without them), cut before an end of
/// generation it copies; and where that end was (as the engine's `plan`
/// does).
fn looked_up(text: &[Token], max: usize, edits: &mut Edits) -> (Lookup, Option<usize>) {
    let mut found = ngram_draft(text, SHORTEST, LONGEST, max);
    if std::env::var_os("SHELF_NO_EDITS").is_none() {
        found.tokens = edits.draft(text, &found, max);
    }
    let end = found.tokens.iter().position(|t| END.contains(t));
    if let Some(end) = end {
        found.tokens.truncate(end);
    }
    (found, end)
}

/// The draft the engine makes of what lookup `found`: cut to the planned
/// length, or continued by weaker lookups up to it.
/// Past an `end` lookup found, rows go unless they make the batch cheaper.
fn drafted(
    text: &[Token],
    mut found: Vec<Token>,
    planned: usize,
    end: Option<usize>,
    prices: &Prices,
) -> Vec<Token> {
    found.truncate(planned);
    ngram_extend(text, &mut found, LONGEST, planned);
    found.truncate(prices.up_to_end(end, found.len()));
    found
}

/// How many drafted tokens the answer goes on with.
fn kept(tokens: &[Token], answer_left: &[Token]) -> usize {
    tokens
        .iter()
        .zip(answer_left)
        .take_while(|(a, b)| a == b)
        .count()
}

type Answer = (Vec<Token>, Vec<Token>);

fn ids(answer: &serde_json::Value, key: &str) -> Vec<Token> {
    answer[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Token(t.as_i64().unwrap() as i32))
        .collect()
}

/// Each task's answers `streams` at a time (answer i with the next ones,
/// round the task), with and without drafting; prints the speed-up.
fn together(
    answers: &str,
    streams: usize,
    max: usize,
    costs: &mut Costs,
    cost: &dyn Fn(usize) -> f64,
) {
    let mut tasks: BTreeMap<String, Vec<Answer>> = BTreeMap::new();
    for line in answers.lines().filter(|l| !l.trim().is_empty()) {
        let answer: serde_json::Value = serde_json::from_str(line).unwrap();
        let task = answer["task"].as_str().unwrap().to_string();
        let entry = tasks.entry(task).or_default();
        entry.push((ids(&answer, "prompt"), ids(&answer, "output")));
    }
    for (task, answers) in &tasks {
        let (mut plain, mut drafting, mut kept_whole, mut long) = (0.0, 0.0, 0, 0);
        for first in 0..answers.len() {
            let group: Vec<&Answer> = (0..streams)
                .map(|k| &answers[(first + k) % answers.len()])
                .collect();
            plain += steps_together(&group, 0, costs, cost).0;
            let (ms, whole, drafts) = steps_together(&group, max, costs, cost);
            drafting += ms;
            kept_whole += whole;
            long += drafts;
        }
        println!(
            "{task}: {:.3}x ({streams} streams; drafts of 8+ kept whole {kept_whole}/{long})",
            plain / drafting
        );
    }
}

/// Time to decode `group`'s answers together, each slot drafting up to
/// `max` tokens (0: plain decode); with drafts of 8 or more tokens kept
/// whole, and made.
fn steps_together(
    group: &[&Answer],
    max: usize,
    costs: &mut Costs,
    cost: &dyn Fn(usize) -> f64,
) -> (f64, usize, usize) {
    let mut tuners: Vec<Tuner> = group.iter().map(|_| Tuner::new(costs)).collect();
    let mut edits: Vec<Edits> = group.iter().map(|_| Edits::default()).collect();
    let mut at = vec![1; group.len()];
    let (mut total, mut whole, mut long) = (0.0, 0, 0);
    loop {
        let active: Vec<usize> = (0..group.len())
            .filter(|&s| at[s] < group[s].1.len())
            .collect();
        if active.is_empty() {
            return (total, whole, long);
        }
        let rows = active.len();
        let mut drafts = Vec::new();
        let mut committed = 0;
        for &s in &active {
            let (prompt, output) = group[s];
            let text: Vec<Token> = prompt.iter().chain(&output[..at[s]]).copied().collect();
            let (found, end) = looked_up(&text, max, &mut edits[s]);
            let prices = costs.prices_beside(rows, committed, rows);
            let plan = match max {
                0 => None,
                _ => tuners[s].plan(
                    at[s] as u32,
                    &prices,
                    offer(&found, prompt.len()),
                    false,
                    max,
                ),
            };
            let Some(draft) = plan else {
                drafts.push((s, None, Vec::new()));
                continue;
            };
            let tokens = drafted(&text, found.tokens, draft.tokens, end, &prices);
            committed += tokens.len();
            drafts.push((s, Some(draft.source), tokens));
        }
        let step = cost(rows + committed);
        total += step;
        costs.target.record(rows + committed, step / 1000.0);
        for (s, source, tokens) in drafts {
            let kept = kept(&tokens, &group[s].1[at[s]..]);
            if let Some(source) = source {
                tuners[s].record(source, tokens.len(), kept, costs);
                edits[s].verified(kept);
                if tokens.len() >= 8 {
                    long += 1;
                    whole += usize::from(kept == tokens.len());
                }
            }
            at[s] += kept + 1;
        }
    }
}
