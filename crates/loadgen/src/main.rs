//! `shelf-loadgen`: the client side of the serving benchmarks under
//! `bench/`. It speaks OpenAI's streamed chat completions, so the same
//! binary drives shelf and llama-server alike, and it timestamps every
//! content chunk without doing other work on the way, so the client costs
//! both servers the same.
//!
//! Scenarios (each prints one JSON object):
//! - `throughput`: N streams at once, each `--max-tokens` long; aggregate
//!   tokens per second over the wall time.
//! - `fairness`: N streams decoding, then one long prompt arrives; the
//!   longest gap any stream sees between two tokens while it is admitted.
//! - `multiturn`: a chat with a long history, then its next turn; time to
//!   first token of each, the cached tokens reported, and whether the next
//!   turn's answer is the same with the cache off.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    Throughput(ThroughputArgs),
    Fairness(FairnessArgs),
    Multiturn(MultiturnArgs),
}

#[derive(Args, Clone)]
struct Target {
    /// The server's base URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: String,
    /// The model name to send
    #[arg(long)]
    model: String,
}

#[derive(Args)]
struct ThroughputArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 8)]
    streams: usize,
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
}

#[derive(Args)]
struct FairnessArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// About how many tokens the arriving prompt has
    #[arg(long, default_value_t = 2000)]
    prompt_tokens: usize,
    /// Tokens each decoding stream generates: enough to outlast the prompt
    #[arg(long, default_value_t = 800)]
    stream_tokens: u32,
}

#[derive(Args)]
struct MultiturnArgs {
    #[command(flatten)]
    target: Target,
    /// About how many tokens of history the second turn carries
    #[arg(long, default_value_t = 1500)]
    history_tokens: usize,
}

/// What one streamed request saw.
#[derive(Debug, Default)]
struct Stream {
    sent: Option<Instant>,
    /// Arrival of each chunk that carried text.
    tokens: Vec<Instant>,
    text: String,
    usage: Option<Value>,
    /// llama-server's own timing block, when it sends one.
    timings: Option<Value>,
}

impl Stream {
    fn ttft(&self) -> Option<Duration> {
        Some(*self.tokens.first()? - self.sent?)
    }

    /// The longest wait between consecutive tokens that ended after `from`.
    fn max_gap_since(&self, from: Instant) -> Duration {
        self.tokens
            .windows(2)
            .filter(|w| w[1] > from)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    fn completion_tokens(&self) -> u64 {
        self.usage
            .as_ref()
            .and_then(|u| u["completion_tokens"].as_u64())
            .unwrap_or(self.tokens.len() as u64)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Throughput(args) => throughput(args).await?,
        Scenario::Fairness(args) => fairness(args).await?,
        Scenario::Multiturn(args) => multiturn(args).await?,
    };
    println!("{result}");
    Ok(())
}

async fn throughput(args: ThroughputArgs) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let runs: Vec<_> = (0..args.streams)
        .map(|i| {
            let body = request(
                &args.target,
                &format!(
                    "Story {i}: tell me a long story about a lighthouse keeper named {}.",
                    name(i)
                ),
                args.max_tokens,
                json!({}),
            );
            let client = client.clone();
            let url = args.target.url.clone();
            tokio::spawn(async move { stream(&client, &url, body, None).await })
        })
        .collect();
    let mut streams = Vec::new();
    for run in runs {
        streams.push(run.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    let tokens: u64 = streams.iter().map(Stream::completion_tokens).sum();
    // The steady part: from the moment every stream has its first token to the last token.
    let all_started = streams
        .iter()
        .filter_map(|s| s.tokens.first())
        .max()
        .copied();
    let last = streams
        .iter()
        .filter_map(|s| s.tokens.last())
        .max()
        .copied();
    let decode_tps = match (all_started, last) {
        (Some(from), Some(to)) if to > from => {
            let after: usize = streams
                .iter()
                .map(|s| s.tokens.iter().filter(|&&t| t > from).count())
                .sum();
            after as f64 / (to - from).as_secs_f64()
        }
        _ => 0.0,
    };
    let ttfts: Vec<f64> = streams.iter().filter_map(|s| s.ttft()).map(ms).collect();
    Ok(json!({
        "streams": args.streams,
        "tokens": tokens,
        "wall_s": wall,
        "aggregate_tps": tokens as f64 / wall,
        "decode_tps": decode_tps,
        "ttft_ms_max": ttfts.iter().copied().fold(0.0, f64::max),
        "max_gap_ms": streams.iter().map(|s| ms(s.max_gap_since(started))).fold(0.0, f64::max),
    }))
}

async fn fairness(args: FairnessArgs) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let runs: Vec<_> = (0..args.streams)
        .map(|i| {
            let body = request(
                &args.target,
                &format!("Story {i}: tell me a long story about {}.", name(i)),
                args.stream_tokens,
                json!({}),
            );
            let client = client.clone();
            let url = args.target.url.clone();
            let seen = seen_tx.clone();
            tokio::spawn(async move { stream(&client, &url, body, Some((seen, 10))).await })
        })
        .collect();
    // Every stream is decoding before the long prompt arrives.
    for _ in 0..args.streams {
        seen_rx
            .recv()
            .await
            .context("a stream ended before decoding")?;
    }
    let arrived = Instant::now();
    let long = request(&args.target, &document(args.prompt_tokens), 4, json!({}));
    let long = stream(&client, &args.target.url, long, None).await?;
    let admitted = Instant::now();
    let mut streams = Vec::new();
    for run in runs {
        streams.push(run.await??);
    }
    let gap_during = streams
        .iter()
        .map(|s| {
            let tokens: Vec<Instant> = s
                .tokens
                .iter()
                .copied()
                .filter(|&t| t <= admitted + Duration::from_millis(500))
                .collect();
            Stream {
                tokens,
                ..Stream::default()
            }
            .max_gap_since(arrived)
        })
        .max()
        .unwrap_or_default();
    let gap_before = streams
        .iter()
        .map(|s| {
            let tokens: Vec<Instant> = s.tokens.iter().copied().filter(|&t| t < arrived).collect();
            let first = tokens.first().copied().unwrap_or(arrived);
            Stream {
                tokens,
                ..Stream::default()
            }
            .max_gap_since(first)
        })
        .max()
        .unwrap_or_default();
    let short_streams = streams
        .iter()
        .filter(|s| s.tokens.last().is_none_or(|&t| t < admitted))
        .count();
    if short_streams > 0 {
        bail!("{short_streams} streams ended before the long prompt was admitted; the measurement is void");
    }
    Ok(json!({
        "streams": args.streams,
        "long_prompt_tokens": long.usage.as_ref().and_then(|u| u["prompt_tokens"].as_u64()),
        "long_ttft_ms": long.ttft().map(ms),
        "max_gap_ms": ms(gap_during),
        "max_gap_before_ms": ms(gap_before),
    }))
}

async fn multiturn(args: MultiturnArgs) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let t = &args.target;
    let mut messages = vec![
        json!({"role": "system", "content": "You answer questions about the report below briefly."}),
        json!({"role": "user", "content": format!("{}\n\nWhich city comes first in the report?", document(args.history_tokens))}),
    ];
    let first = stream(&client, &t.url, chat(t, &messages, json!({})), None).await?;
    messages.push(json!({"role": "assistant", "content": first.text}));
    messages.push(json!({"role": "user", "content": "And which city comes last?"}));
    let second = stream(&client, &t.url, chat(t, &messages, json!({})), None).await?;
    let fresh = stream(
        &client,
        &t.url,
        chat(t, &messages, json!({"cache_prompt": false})),
        None,
    )
    .await?;
    let cached = second
        .usage
        .as_ref()
        .and_then(|u| u["prompt_tokens_details"]["cached_tokens"].as_u64())
        .or_else(|| second.timings.as_ref().and_then(|t| t["cache_n"].as_u64()));
    let (Some(ttft1), Some(ttft2)) = (first.ttft(), second.ttft()) else {
        bail!("a turn produced no text");
    };
    Ok(json!({
        "history_tokens": second.usage.as_ref().and_then(|u| u["prompt_tokens"].as_u64()),
        "ttft1_ms": ms(ttft1),
        "ttft2_ms": ms(ttft2),
        "ratio": ttft2.as_secs_f64() / ttft1.as_secs_f64(),
        "cached_tokens": cached,
        "same_answer_without_cache": second.text == fresh.text,
    }))
}

/// A streamed, greedy chat request with one user message.
fn request(t: &Target, content: &str, max_tokens: u32, extra: Value) -> Value {
    let mut body = chat(t, &[json!({"role": "user", "content": content})], extra);
    body["max_tokens"] = json!(max_tokens);
    body["ignore_eos"] = json!(true);
    body
}

fn chat(t: &Target, messages: &[Value], extra: Value) -> Value {
    let mut body = json!({
        "model": t.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0,
        "max_tokens": 24,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

/// Send one request and read its stream to the end. With `notify`, say so
/// once `n` tokens have arrived.
async fn stream(
    client: &reqwest::Client,
    url: &str,
    body: Value,
    notify: Option<(tokio::sync::mpsc::UnboundedSender<()>, usize)>,
) -> anyhow::Result<Stream> {
    let mut run = Stream {
        sent: Some(Instant::now()),
        ..Stream::default()
    };
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "{}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let mut bytes = response.bytes_stream();
    let mut pending = Vec::new();
    while let Some(chunk) = bytes.next().await {
        let now = Instant::now();
        pending.extend_from_slice(&chunk?);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let line = String::from_utf8_lossy(&event);
            let Some(data) = line.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return Ok(run);
            }
            let value: Value = serde_json::from_str(data)?;
            if value.get("error").is_some() {
                bail!("the server sent an error: {data}");
            }
            if let Some(text) = value["choices"][0]["delta"]["content"].as_str() {
                if !text.is_empty() {
                    run.tokens.push(now);
                    run.text.push_str(text);
                    if let Some((tx, n)) = &notify {
                        if run.tokens.len() == *n {
                            let _ = tx.send(());
                        }
                    }
                }
            }
            if !value["usage"].is_null() {
                run.usage = Some(value["usage"].clone());
            }
            if !value["timings"].is_null() {
                run.timings = Some(value["timings"].clone());
            }
        }
    }
    Ok(run)
}

/// A report of about `tokens` tokens: numbered lines of distinct facts.
fn document(tokens: usize) -> String {
    const CITIES: [&str; 12] = [
        "Lisbon", "Oslo", "Quito", "Hanoi", "Accra", "Lima", "Perth", "Cork", "Turin", "Kyoto",
        "Dakar", "Riga",
    ];
    // About 24 tokens a line.
    (0..tokens.div_ceil(24))
        .map(|i| {
            format!(
                "{}. {} reported {} ferries and {} bridges in year {}.",
                i + 1,
                CITIES[i % CITIES.len()],
                3 + i * 7 % 41,
                2 + i * 5 % 23,
                1900 + i
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn name(i: usize) -> &'static str {
    const NAMES: [&str; 8] = ["Ada", "Bram", "Cleo", "Dov", "Edda", "Finn", "Gus", "Hana"];
    NAMES[i % NAMES.len()]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
