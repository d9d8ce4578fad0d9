//! `shelf bench --parallel N`: aggregate throughput with N sequences
//! decoded together, reported as llama-batched-bench reports it.
//!
//! N requests of `pp` random prompt tokens and `tg` generated tokens go in
//! at once. Prefill time runs until every request has its first token;
//! decode time from then until the last token.

use std::time::Instant;

use serde::Serialize;
use shelf_engine::{Event, GenerateRequest, LoadedModel, SamplingParams};
use shelf_engine_llama::LlamaModelHandle;

use crate::cli::BenchArgs;

#[derive(Debug, Serialize)]
struct Row {
    pp: u32,
    tg: u32,
    parallel: u32,
    n_kv: u32,
    t_pp: f64,
    speed_pp: f64,
    t_tg: f64,
    speed_tg: f64,
    t: f64,
    speed: f64,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    model: &'a str,
    threads: u32,
    backend: &'static str,
    results: Vec<Row>,
}

pub async fn bench(model: &LlamaModelHandle, label: &str, args: &BenchArgs) -> anyhow::Result<()> {
    once(model, args, 0).await?; // warm-up
    let mut results = Vec::new();
    for rep in 0..args.reps {
        results.push(once(model, args, u64::from(rep) + 1).await?);
    }
    let report = Report {
        model: label,
        threads: model.info().threads,
        backend: shelf_engine_llama::backend_description(),
        results,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("| PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &report.results {
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.2} | {:.3} | {:.2} | {:.3} | {:.2} |",
            r.pp, r.tg, r.parallel, r.n_kv, r.t_pp, r.speed_pp, r.t_tg, r.speed_tg, r.t, r.speed
        );
    }
    Ok(())
}

/// One round: every request at once; when each got its first token and ended.
async fn once(model: &LlamaModelHandle, args: &BenchArgs, round: u64) -> anyhow::Result<Row> {
    let n = args.parallel;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let seed = 0x9e37_79b9_7f4a_7c15u64 ^ (round << 32 | u64::from(i));
        let mut request: GenerateRequest = super::random_prompt(model.info(), args.pp.max(1), seed);
        request.sampling = SamplingParams::greedy();
        request.max_tokens = Some(args.tg + 1);
        request.ignore_eos = true;
        request.cache_prompt = false;
        let mut generation = model.submit(request)?;
        tasks.push(tokio::spawn(async move {
            let mut first = None;
            loop {
                match generation.next().await {
                    Some(Event::Text(_)) => {
                        first.get_or_insert_with(Instant::now);
                    }
                    Some(Event::Logprob(_) | Event::PromptLogprobs(_)) => {}
                    Some(Event::Done(_)) => {
                        let end = Instant::now();
                        return Ok((first.unwrap_or(end), end));
                    }
                    Some(Event::Failed(error)) => return Err(anyhow::Error::from(error)),
                    None => anyhow::bail!("the model stopped unexpectedly"),
                }
            }
        }));
    }
    let mut first_all = started;
    let mut end_all = started;
    for task in tasks {
        let (first, end) = task.await??;
        first_all = first_all.max(first);
        end_all = end_all.max(end);
    }
    let t_pp = (first_all - started).as_secs_f64();
    let t_tg = (end_all - first_all).as_secs_f64();
    let t = (end_all - started).as_secs_f64();
    let per = |tokens: u32, secs: f64| f64::from(tokens) / secs.max(1e-9);
    Ok(Row {
        pp: args.pp,
        tg: args.tg,
        parallel: n,
        n_kv: n * (args.pp + args.tg),
        t_pp,
        speed_pp: per(n * args.pp, t_pp),
        t_tg,
        speed_tg: per(n * args.tg, t_tg),
        t,
        speed: per(n * (args.pp + args.tg), t),
    })
}
