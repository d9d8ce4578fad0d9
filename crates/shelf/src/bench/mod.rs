//! `shelf bench`: prefill and decode speed through shelf's own generation
//! path (request, sampler chain, detokenizer, event channel), reported the
//! way llama-bench reports them so the two can be compared line for line.

use serde::Serialize;
use shelf_engine::{Completion, Event, GenerateRequest, LoadedModel, SamplingParams, Token};
use shelf_engine_llama::{backend_description, LlamaModelHandle};

use crate::cli::{BenchArgs, Globals};

mod grammar;
mod parallel;
mod speculative;
use crate::{catalog, run, store_cmds::human_bytes};

#[derive(Debug, Serialize)]
struct TestResult {
    test: String,
    n_prompt: u32,
    n_gen: u32,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ts: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    size_bytes: u64,
    n_params: u64,
    backend: &'static str,
    threads: u32,
    gpu_layers: u32,
    /// For synthetic weights: what the planner predicted for this box.
    #[serde(skip_serializing_if = "Option::is_none")]
    predicted: Option<crate::synthetic::Prediction>,
    results: Vec<TestResult>,
}

pub async fn bench(globals: &Globals, args: BenchArgs) -> anyhow::Result<()> {
    let synthetic = match &args.synthetic {
        Some(spec) => Some(crate::synthetic::SyntheticFile::write(
            globals, spec, args.keep,
        )?),
        None => None,
    };
    let (path, label) = match (&synthetic, &args.model) {
        (Some(file), _) => (file.path.clone(), file.label.clone()),
        (None, Some(model)) => (catalog::resolve(&globals.layers()?, model)?, model.clone()),
        (None, None) => anyhow::bail!("name a model, or --synthetic ARCH-SIZE:QUANT"),
    };
    // Like llama-bench, the context holds exactly what the tests need.
    let ctx = globals.ctx.unwrap_or(args.pp.max(1) + args.tg + 8);
    if args.parallel > 1 {
        let none = shelf_engine::SpeculativeConfig::default();
        let model = run::load_with(path, globals, Some(ctx), args.parallel, &none).await?;
        return parallel::bench(&model, &label, &args).await;
    }
    if args.draft.is_some() || args.speculate.speculate.is_some() {
        let layers = globals.layers()?;
        let draft = match &args.draft {
            Some(draft) => Some(catalog::resolve(&layers, draft)?),
            None => None,
        };
        let config = args.speculate.config(draft);
        // Room for the longest built-in prompt and the answer.
        let ctx = globals.ctx.unwrap_or(args.tg + 1024);
        let model = run::load_with(path, globals, Some(ctx), 1, &config).await?;
        return speculative::bench(&model, &label, args.draft.clone(), &args).await;
    }
    if let Some(schema) = &args.json_schema {
        let model = run::load(path, globals, Some(ctx + 256)).await?;
        return grammar::bench(&model, schema, args.tg, args.reps).await;
    }
    let model = run::load(path, globals, Some(ctx)).await?;
    let info = model.info().clone();
    let mut results = Vec::new();
    if args.pp > 0 {
        let samples = repeat(
            &model,
            args.reps,
            || prefill_request(&info, args.pp),
            |c| c.timings.prefill_tps(c.usage.prompt_tokens),
        )
        .await?;
        results.push(summarize(format!("pp{}", args.pp), args.pp, 0, samples));
    }
    if args.tg > 0 {
        let samples = repeat(
            &model,
            args.reps,
            || decode_request(args.tg),
            |c| c.timings.decode_tps(),
        )
        .await?;
        results.push(summarize(format!("tg{}", args.tg), 0, args.tg, samples));
    }
    let predicted = synthetic
        .as_ref()
        .map(|file| file.prediction(globals, ctx, args.pp));
    let report = Report {
        model: label,
        predicted,
        size_bytes: info.size_bytes,
        n_params: info.n_params,
        backend: backend_description(),
        threads: info.threads,
        gpu_layers: info.gpu_layers,
        results,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// One warm-up run, then `reps` measured runs.
async fn repeat(
    model: &LlamaModelHandle,
    reps: u32,
    request: impl Fn() -> GenerateRequest,
    rate: impl Fn(&Completion) -> f64,
) -> anyhow::Result<Vec<f64>> {
    generate(model, request()).await?;
    let mut samples = Vec::with_capacity(reps as usize);
    for _ in 0..reps {
        samples.push(rate(&generate(model, request()).await?));
    }
    Ok(samples)
}

async fn generate(
    model: &LlamaModelHandle,
    request: GenerateRequest,
) -> anyhow::Result<Completion> {
    let mut generation = model.submit(request)?;
    loop {
        match generation.next().await {
            Some(Event::Text(_) | Event::Logprob(_) | Event::PromptLogprobs(_)) => {}
            Some(Event::Done(completion)) => return Ok(completion),
            Some(Event::Failed(error)) => return Err(error.into()),
            None => anyhow::bail!("the model stopped unexpectedly"),
        }
    }
}

/// `n` pseudo-random tokens, as llama-bench uses, so no tokenizer cost is measured.
fn prefill_request(info: &shelf_engine::ModelInfo, n: u32) -> GenerateRequest {
    random_prompt(info, n, 0x2545_f491_4f6c_dd1d)
}

fn random_prompt(info: &shelf_engine::ModelInfo, n: u32, seed: u64) -> GenerateRequest {
    let mut state = seed;
    let vocab = u64::from(info.n_vocab.max(2));
    let prompt = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Token((state % vocab) as i32)
        })
        .collect();
    let mut request = GenerateRequest::new(prompt);
    request.sampling = SamplingParams::greedy();
    request.max_tokens = Some(1);
    // Every repetition computes the whole prompt.
    request.cache_prompt = false;
    request
}

/// Decode `n` tokens after a one-token prompt, never stopping early.
fn decode_request(n: u32) -> GenerateRequest {
    let mut request = GenerateRequest::new(vec![Token(1)]);
    request.sampling = SamplingParams::greedy();
    // The first token rides on the prompt's decode; n + 1 tokens give n decodes.
    request.max_tokens = Some(n + 1);
    request.ignore_eos = true;
    request
}

fn summarize(test: String, n_prompt: u32, n_gen: u32, samples: Vec<f64>) -> TestResult {
    let n = samples.len() as f64;
    let avg = samples.iter().sum::<f64>() / n;
    let var = if samples.len() > 1 {
        samples.iter().map(|s| (s - avg).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    TestResult {
        test,
        n_prompt,
        n_gen,
        avg_ts: avg,
        stddev_ts: var.sqrt(),
        samples_ts: samples,
    }
}

fn print_table(report: &Report) {
    println!("| model | size | params | backend | threads | test | t/s |");
    println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
    for r in &report.results {
        println!(
            "| {} | {} | {:.2} M | {} | {} | {} | {:.2} ± {:.2} |",
            report.model,
            human_bytes(report.size_bytes),
            report.n_params as f64 / 1e6,
            report.backend,
            report.threads,
            r.test,
            r.avg_ts,
            r.stddev_ts
        );
    }
    if let Some(p) = &report.predicted {
        let measured = |prefix: &str| {
            report
                .results
                .iter()
                .find(|r| r.test.starts_with(prefix))
                .map(|r| r.avg_ts)
        };
        println!(
            "\nplanner for {}: decode {:.1} t/s{}, prefill {:.0} t/s{}, memory {}",
            p.hardware,
            p.decode_tps,
            ratio(measured("tg"), p.decode_tps),
            p.prefill_tps,
            ratio(measured("pp"), p.prefill_tps),
            human_bytes(p.memory_bytes)
        );
    }
}

/// " (measured/predicted 0.93)", or nothing without a measurement.
fn ratio(measured: Option<f64>, predicted: f64) -> String {
    measured.map_or_else(String::new, |m| {
        format!(" (measured/predicted {:.2})", m / predicted)
    })
}
