//! `shelf fit` and `shelf cost`: the planner's answers, for a named box or
//! this one.

use anyhow::{bail, Context};
use serde::Serialize;
use shelf_planner::{
    acceptance_needed, api_prices, catalog_model, cost_per_mtok, estimate, estimate_speculative,
    estimate_together, hardware_catalog, load_seconds, model_catalog, seed_claims, ApiPrice,
    CostInputs, Estimate, FitOptions, Hardware, KvType, ModelSpec, Speculation,
    SpeculativeEstimate, API_PRICES_DATE, COMFORTABLE_FRACTION, DEFAULT_ACCEPTANCE,
};

use crate::cli::{CostArgs, FitArgs, Globals};
use crate::probe;
use crate::store_cmds::human_bytes;

/// One row of `shelf fit --json`: the fields scripts rely on, and the parts.
#[derive(Debug, Serialize)]
struct FitRow {
    model: String,
    quant: String,
    hardware: String,
    memory_bytes: u64,
    weights_bytes: u64,
    kv_cache_bytes: u64,
    compute_bytes: u64,
    overhead_bytes: u64,
    usable_bytes: u64,
    verdict: shelf_planner::Verdict,
    gpu_layers: Option<u32>,
    decode_tps: f64,
    prefill_tps: f64,
    bound_tps: f64,
    /// With `--draft`.
    #[serde(skip_serializing_if = "Option::is_none")]
    speculative: Option<DraftRow>,
    /// On this box: seconds to load the weights from the store's disk, at
    /// the read probe's speed.
    #[serde(skip_serializing_if = "Option::is_none")]
    load_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_read_gbs: Option<f64>,
}

/// `shelf fit --draft` in JSON.
#[derive(Debug, Serialize)]
struct DraftRow {
    draft: String,
    /// Both models together.
    memory_bytes: u64,
    verdict: shelf_planner::Verdict,
    #[serde(flatten)]
    estimate: SpeculativeEstimate,
}

impl FitRow {
    fn new(spec: &ModelSpec, hardware: &Hardware, estimate: &Estimate) -> Self {
        Self {
            model: spec.name.clone(),
            quant: spec.quant.clone(),
            hardware: hardware.name.clone(),
            memory_bytes: estimate.memory.total,
            weights_bytes: estimate.memory.weights,
            kv_cache_bytes: estimate.memory.kv_cache,
            compute_bytes: estimate.memory.compute,
            overhead_bytes: estimate.memory.overhead,
            usable_bytes: estimate.usable_bytes,
            verdict: estimate.verdict,
            gpu_layers: estimate.gpu_layers,
            decode_tps: round1(estimate.decode_tps),
            prefill_tps: round1(estimate.prefill_tps),
            bound_tps: round1(estimate.bound_tps),
            speculative: None,
            load_seconds: None,
            disk_read_gbs: None,
        }
    }

    /// With the load time at `read_gbs`, when the disk was probed.
    fn with_load(mut self, spec: &ModelSpec, read_gbs: Option<f64>) -> Self {
        let round3 = |value: f64| (value * 1000.0).round() / 1000.0;
        self.load_seconds = read_gbs.map(|gbs| round3(load_seconds(spec, gbs)));
        self.disk_read_gbs = read_gbs.map(round3);
        self
    }
}

/// A bandwidth for people: whole GB/s as the catalog gives them, a
/// measured one to a tenth.
fn gbs(value: f64) -> String {
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

pub fn fit(globals: &Globals, args: FitArgs) -> anyhow::Result<()> {
    if args.list_hardware {
        return list_hardware(args.json);
    }
    if args.list_models {
        return list_models(args.json);
    }
    let hardware = resolve_hardware(globals, args.hardware.as_deref())?;
    let kv_type = KvType::parse(&args.kv_type)
        .with_context(|| format!("--kv-type '{}': use f16, q8_0 or q4_0", args.kv_type))?;
    let options = FitOptions {
        // The global --ctx: context per sequence, as `serve` would use it.
        ctx: globals.ctx.map_or(4096, u64::from),
        parallel: args.parallel,
        kv_type,
        prompt: u64::from(args.prompt),
    };
    // Loading is from this box's store: only this box's disk is probed.
    let disk = match args.hardware {
        None => disk_probe(globals, args.model.as_deref()),
        Some(_) => None,
    };
    let read_gbs = disk.as_ref().map(|(gbs, _)| *gbs);
    match &args.model {
        Some(model) => {
            let spec = model_spec(globals, model)?;
            let estimate = estimate(&spec, &hardware, &options);
            let draft = match &args.draft {
                Some(draft) => Some(draft_row(
                    globals, &args, draft, &spec, &hardware, &options,
                )?),
                None => None,
            };
            if args.json {
                let mut row = FitRow::new(&spec, &hardware, &estimate).with_load(&spec, read_gbs);
                row.speculative = draft;
                println!("{}", serde_json::to_string_pretty(&row)?);
            } else {
                print_one(&spec, &hardware, &options, &estimate);
                if let Some((gbs, file)) = &disk {
                    print_load(&spec, *gbs, file);
                }
                if let Some(draft) = &draft {
                    print_draft(draft);
                }
            }
        }
        None => print_table(&hardware, &options, read_gbs, args.json)?,
    }
    Ok(())
}

/// The store's disk read speed, probed on the model's own file when it is
/// a path, else on the largest file the stores hold; `None` for an empty
/// or unreadable store (the rest of `fit` does not need one).
fn disk_probe(globals: &Globals, model: Option<&str>) -> Option<(f64, std::path::PathBuf)> {
    let layers = globals.layers().ok()?;
    let stores: Vec<std::path::PathBuf> = layers.stores().map(|s| s.root().to_path_buf()).collect();
    let file = model
        .filter(|m| crate::catalog::looks_like_path(m))
        .map(std::path::Path::new);
    probe::disk_read_gbs(&stores, file)
}

fn print_load(spec: &ModelSpec, gbs: f64, file: &std::path::Path) {
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    println!(
        "  load      about {:.0} s from the store ({gbs:.2} GB/s, read probe of {})",
        load_seconds(spec, gbs).max(1.0),
        name.escape_debug()
    );
}

/// A catalog model (`FAMILY-SIZE:QUANT`), a GGUF path, or a store name.
pub fn model_spec(globals: &Globals, model: &str) -> anyhow::Result<ModelSpec> {
    if let Some((name, quant)) = model.rsplit_once(':') {
        if let Some(entry) = catalog_model(name) {
            return ModelSpec::from_catalog(&entry, quant).with_context(|| {
                let known: Vec<&str> = shelf_planner::QUANTS.iter().map(|(q, _)| *q).collect();
                format!(
                    "unknown quant '{quant}'; the planner knows {}",
                    known.join(", ")
                )
            });
        }
    }
    if let Some(entry) = catalog_model(model) {
        bail!("say which quant: {}:{}", entry.name, entry.default_quant);
    }
    let layers = globals.layers()?;
    let files = match crate::catalog::looks_like_path(model) {
        true => vec![std::path::PathBuf::from(model)],
        false => {
            let name = shelf_store::ModelName::parse(model)?;
            layers
                .get(&name)?
                .with_context(|| {
                    format!("'{model}' is not a catalog model (`shelf fit --list-models`), a file, or in the store")
                })?
                .files
        }
    };
    spec_from_files(model, &files)
}

/// The planner's view of a model from its GGUF file(s): later parts of a
/// split model add their tensors to the first part's facts.
pub fn spec_from_files(model: &str, files: &[std::path::PathBuf]) -> anyhow::Result<ModelSpec> {
    let mut facts = None::<shelf_gguf::ModelFacts>;
    let mut quant = None;
    for file in files {
        let gguf = shelf_gguf::Gguf::open(file)?;
        let part = gguf.facts();
        quant = quant.or_else(|| gguf.quantization());
        facts = Some(match facts {
            None => part,
            Some(mut first) => {
                first.parameters += part.parameters;
                first.tensor_bytes += part.tensor_bytes;
                first.expert_bytes += part.expert_bytes;
                first.token_embedding_bytes += part.token_embedding_bytes;
                first.cpu_repack_bytes += part.cpu_repack_bytes;
                first.cpu_slow_bytes += part.cpu_slow_bytes;
                first.tied_embeddings &= part.tied_embeddings;
                first
            }
        });
    }
    let facts = facts.context("the model has no GGUF file")?;
    Ok(ModelSpec::from_facts(
        model,
        &quant.unwrap_or_else(|| "?".into()),
        &facts,
    ))
}

fn print_one(spec: &ModelSpec, hardware: &Hardware, options: &FitOptions, estimate: &Estimate) {
    let m = &estimate.memory;
    println!(
        "{} {} on {} ({})",
        spec.name, spec.quant, hardware.name, hardware.description
    );
    println!(
        "  memory    {} = weights {} + KV cache {} (ctx {} x {}, {:?}) + compute {} + overhead {}",
        human_bytes(m.total),
        human_bytes(m.weights),
        human_bytes(m.kv_cache),
        options.ctx,
        options.parallel,
        options.kv_type,
        human_bytes(m.compute),
        human_bytes(m.overhead)
    );
    println!(
        "  verdict   {} ({:.0}% of {} usable; comfortable up to {:.0}%, tight up to 100%)",
        verdict_word(estimate.verdict),
        m.total as f64 / estimate.usable_bytes.max(1) as f64 * 100.0,
        human_bytes(estimate.usable_bytes),
        COMFORTABLE_FRACTION * 100.0
    );
    if let Some(layers) = estimate.gpu_layers {
        println!(
            "  GPU       {layers} of {} layers fit in GPU memory; the rest would run on the CPU",
            spec.layers
        );
    }
    println!(
        "  decode    {:.1} tokens/s predicted; {:.1} tokens/s is the memory-bandwidth bound ({} GB/s / {} per token)",
        estimate.decode_tps,
        estimate.bound_tps,
        gbs(hardware.bandwidth_gbs),
        human_bytes(spec.bytes_per_token)
    );
    println!("  prefill   {:.0} tokens/s predicted", estimate.prefill_tps);
}

/// The target with `draft` beside it: both in memory, drafting for it.
fn draft_row(
    globals: &Globals,
    args: &FitArgs,
    draft: &str,
    target: &ModelSpec,
    hardware: &Hardware,
    options: &FitOptions,
) -> anyhow::Result<DraftRow> {
    let draft_spec = model_spec(globals, draft)?;
    let speculation = Speculation {
        draft_tokens: args.draft_tokens,
        acceptance: args.acceptance.unwrap_or(DEFAULT_ACCEPTANCE),
    };
    let (memory, verdict) =
        estimate_together(&[target.clone(), draft_spec.clone()], hardware, options);
    let estimate = estimate_speculative(
        &estimate(target, hardware, options),
        &estimate(&draft_spec, hardware, options),
        speculation,
    );
    Ok(DraftRow {
        draft: format!("{}:{}", draft_spec.name, draft_spec.quant),
        memory_bytes: memory.total,
        verdict,
        estimate,
    })
}

fn print_draft(row: &DraftRow) {
    let e = &row.estimate;
    println!(
        "  with draft {}: together {} ({}); draft decodes at {:.0} tokens/s",
        row.draft,
        human_bytes(row.memory_bytes),
        verdict_word(row.verdict),
        e.draft_tps
    );
    println!(
        "  speculative {:.1} tokens/s predicted ({:.2}x), drafting {} tokens a step at acceptance {:.2}: {:.2} tokens per target pass",
        e.decode_tps, e.speedup, e.draft_tokens, e.acceptance, e.tokens_per_step
    );
}

fn verdict_word(verdict: shelf_planner::Verdict) -> &'static str {
    match verdict {
        shelf_planner::Verdict::Comfortable => "comfortable",
        shelf_planner::Verdict::Tight => "tight",
        shelf_planner::Verdict::No => "does not fit",
    }
}

/// Every catalog model at Q4_K_M and Q8_0 on one box, then models together and claims.
/// Every catalog model at Q4_K_M and Q8_0 on `hardware`.
fn catalog_rows(hardware: &Hardware, options: &FitOptions, read_gbs: Option<f64>) -> Vec<FitRow> {
    let mut rows = Vec::new();
    for model in model_catalog() {
        for quant in ["Q4_K_M", "Q8_0"] {
            if let Some(spec) = ModelSpec::from_catalog(&model, quant) {
                let estimate = estimate(&spec, hardware, options);
                rows.push(FitRow::new(&spec, hardware, &estimate).with_load(&spec, read_gbs));
            }
        }
    }
    rows
}

/// `catalog_rows` for this box with `serve`'s context, as JSON for
/// `/api/fit`.
pub fn this_box_json(threads: Option<u32>, ctx: Option<u32>) -> serde_json::Value {
    let hardware = probe::this_box(threads);
    let options = FitOptions {
        ctx: ctx.map_or(4096, u64::from),
        parallel: 1,
        kv_type: KvType::F16,
        ..FitOptions::default()
    };
    serde_json::json!({
        "hardware": hardware.name,
        "usable_bytes": hardware.usable_bytes,
        "rows": catalog_rows(&hardware, &options, None),
    })
}

fn print_table(
    hardware: &Hardware,
    options: &FitOptions,
    read_gbs: Option<f64>,
    json: bool,
) -> anyhow::Result<()> {
    let rows = catalog_rows(hardware, options, read_gbs);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} ({}): {} usable, {} GB/s",
        hardware.name,
        hardware.description,
        human_bytes(hardware.usable_bytes),
        gbs(hardware.bandwidth_gbs)
    );
    println!(
        "context {} x {}, KV cache {:?}\n",
        options.ctx, options.parallel, options.kv_type
    );
    if let Some(gbs) = read_gbs {
        println!("the store's disk reads {gbs:.2} GB/s (LOAD: the weights at that speed)\n");
    }
    println!(
        "{:<32} {:<7} {:>9} {:<13} {:>8} {:>8} {:>9} {:>7}",
        "MODEL", "QUANT", "MEMORY", "VERDICT", "DECODE", "BOUND", "PREFILL", "LOAD"
    );
    for row in &rows {
        let verdict = match row.gpu_layers {
            Some(layers) => format!("no ({layers} on GPU)"),
            None => verdict_word(row.verdict).to_string(),
        };
        let load = row
            .load_seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{:.0} s", s.max(1.0)));
        println!(
            "{:<32} {:<7} {:>9} {:<13} {:>6.1}/s {:>6.1}/s {:>7.0}/s {:>7}",
            row.model,
            row.quant,
            human_bytes(row.memory_bytes),
            verdict,
            row.decode_tps,
            row.bound_tps,
            row.prefill_tps,
            load
        );
    }
    let small: Vec<ModelSpec> = ["llama-3.1-8b", "qwen-2.5-7b", "mistral-nemo-12b"]
        .iter()
        .filter_map(|name| catalog_model(name))
        .filter_map(|m| ModelSpec::from_catalog(&m, "Q4_K_M"))
        .collect();
    let (memory, verdict) = estimate_together(&small, hardware, options);
    let names: Vec<&str> = small.iter().map(|s| s.name.as_str()).collect();
    println!(
        "\ntogether: {} at Q4_K_M need {}: {}",
        names.join(" + "),
        human_bytes(memory.total),
        verdict_word(verdict)
    );
    for claim in seed_claims()
        .into_iter()
        .filter(|c| c.hardware == hardware.name)
    {
        let Some(row) = rows
            .iter()
            .find(|r| format!("{}:{}", r.model, r.quant) == claim.model)
        else {
            continue;
        };
        let flag = if claim.claimed_low_tps > row.bound_tps {
            "ABOVE the bandwidth bound"
        } else {
            "within the bound"
        };
        println!(
            "claim: {} on {} at \"{}\" ({}-{} t/s) is {flag} of {:.1} t/s; expect about {:.1} t/s without speculative decoding",
            claim.model, claim.hardware, claim.said, claim.claimed_low_tps, claim.claimed_high_tps, row.bound_tps, row.decode_tps
        );
        if let Some(needed) = claim_with_draft(&claim, hardware, options) {
            println!("  {needed}");
        }
    }
    Ok(())
}

/// What acceptance the claim's draft must reach for the claimed speeds.
fn claim_with_draft(
    claim: &shelf_planner::SeedClaim,
    hardware: &Hardware,
    options: &FitOptions,
) -> Option<String> {
    let spec = |name: &str| {
        let (model, quant) = name.split_once(':')?;
        ModelSpec::from_catalog(&catalog_model(model)?, quant)
    };
    let target = estimate(&spec(claim.model)?, hardware, options);
    let draft = estimate(&spec(claim.draft)?, hardware, options);
    let needed = |tps: f64| match acceptance_needed(&target, &draft, tps) {
        Some((acceptance, k)) => format!("{acceptance:.2} (k={k}) for {tps} t/s"),
        None => format!("more than a perfect draft gives for {tps} t/s"),
    };
    Some(format!(
        "with {} drafting, speculative decoding needs acceptance {} and {}; same-family drafts accept about 0.6-0.75 on chat and 0.75-0.9 on code",
        claim.draft,
        needed(claim.claimed_low_tps),
        needed(claim.claimed_high_tps)
    ))
}

fn list_hardware(json: bool) -> anyhow::Result<()> {
    let catalog = hardware_catalog();
    if json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
        return Ok(());
    }
    println!(
        "{:<16} {:>8} {:>9} {:>8} {:>8} {:>9}  DESCRIPTION",
        "NAME", "MEMORY", "BANDWIDTH", "FP16", "PRICE", "WATTS"
    );
    for h in catalog {
        println!(
            "{:<16} {:>8} {:>5} GB/s {:>5} TF {:>7}$ {:>4}/{:<4} {}",
            h.name,
            human_bytes(h.memory_bytes),
            h.bandwidth_gbs,
            h.fp16_tflops,
            h.price_usd,
            h.watts_load,
            h.watts_idle,
            h.description
        );
    }
    Ok(())
}

fn list_models(json: bool) -> anyhow::Result<()> {
    let catalog = model_catalog();
    if json {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
        return Ok(());
    }
    println!(
        "{:<32} {:>8} {:>8} {:>6} {:>8}  QUANTS",
        "MODEL", "PARAMS", "ACTIVE", "LAYERS", "CONTEXT"
    );
    let quants: Vec<&str> = shelf_planner::QUANTS.iter().map(|(q, _)| *q).collect();
    for m in catalog {
        println!(
            "{:<32} {:>7.1}B {:>7.1}B {:>6} {:>8}  {}",
            m.name,
            m.parameters as f64 / 1e9,
            m.active_parameters as f64 / 1e9,
            m.layers,
            m.context_length,
            if m.name == "llama-3.3-70b" {
                quants.join(" ")
            } else {
                String::from("(same)")
            }
        );
    }
    Ok(())
}

/// A catalog box by name, or this one, detected.
pub fn resolve_hardware(globals: &Globals, name: Option<&str>) -> anyhow::Result<Hardware> {
    match name {
        Some(name) => Hardware::named(name).with_context(|| {
            format!("unknown hardware '{name}'; `shelf fit --list-hardware` shows the names")
        }),
        None => Ok(probe::this_box(globals.threads)),
    }
}

pub fn cost(globals: &Globals, args: CostArgs) -> anyhow::Result<()> {
    let hardware = resolve_hardware(globals, args.hardware.as_deref())?;
    let inputs = CostInputs {
        price_usd: args.price.unwrap_or(hardware.price_usd),
        watts_load: args.watts_load.unwrap_or(hardware.watts_load),
        watts_idle: args.watts_idle.unwrap_or(hardware.watts_idle),
        usd_per_kwh: args.kwh_price,
        utilisation: args.utilisation,
        lifetime_months: args.lifetime_months,
    };
    if inputs.price_usd <= 0.0 {
        bail!("the box's price is unknown or not positive: pass --price USD (and --watts-load/--watts-idle)");
    }
    let mut apis = api_prices();
    for custom in &args.api_price {
        let (name, price) = custom
            .split_once('=')
            .and_then(|(n, p)| Some((n, p.parse::<f64>().ok()?)))
            .with_context(|| {
                format!("--api-price '{custom}': write NAME=USD_PER_MILLION_OUTPUT_TOKENS")
            })?;
        apis.retain(|a| a.name != name);
        apis.push(ApiPrice {
            name: name.into(),
            usd_per_mtok_input: price,
            usd_per_mtok_output: price,
        });
    }
    let models = if args.models.is_empty() {
        vec![
            "llama-3.3-70b:Q4_K_M".to_string(),
            "qwen-2.5-32b:Q8_0".into(),
            "llama-3.1-8b:Q4_K_M".into(),
        ]
    } else {
        args.models.clone()
    };
    let mut reports = Vec::new();
    for model in &models {
        let spec = model_spec(globals, model)?;
        let tps = match args.tps {
            Some(tps) => tps,
            None => estimate(&spec, &hardware, &FitOptions::default()).decode_tps,
        };
        reports.push((model.clone(), cost_per_mtok(tps, &inputs, &apis)));
    }
    if args.json {
        let rows: Vec<serde_json::Value> = reports
            .iter()
            .map(|(model, report)| serde_json::json!({"model": model, "hardware": hardware.name, "inputs": inputs, "api_prices_date": API_PRICES_DATE, "report": report}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{}: ${:.0}, {} W at load, {} W idle, ${}/kWh, {:.0}% busy, over {} months (API prices as of {API_PRICES_DATE})",
        hardware.name, inputs.price_usd, inputs.watts_load, inputs.watts_idle, inputs.usd_per_kwh, inputs.utilisation * 100.0, inputs.lifetime_months
    );
    for (model, report) in &reports {
        println!(
            "\n{model}: {:.1} t/s, {:.1}M tokens/month, ${:.2}/month power + ${:.2}/month hardware = ${:.2} per million tokens",
            report.decode_tps,
            report.tokens_per_month / 1e6,
            report.usd_per_month_power,
            report.usd_per_month_hardware,
            report.usd_per_mtok
        );
        for (api, price, months) in &report.break_even_months {
            let when = months.map_or_else(
                || "never pays back".to_string(),
                |m| format!("pays back in {m:.1} months"),
            );
            println!("  vs {api:<24} ${price:>6.2}/M output: {when}");
        }
    }
    Ok(())
}
