//! `shelf bench --synthetic`: write a GGUF of random weights in a catalog
//! model's shape, bench it, and delete it.

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;
use shelf_gguf::{synthetic_size, write_synthetic, SyntheticQuant, SyntheticSpec};
use shelf_planner::{catalog_model, estimate, CatalogModel, FitOptions, ModelSpec};

use crate::cli::Globals;
use crate::store_cmds::human_bytes;

/// Short names people type, mapped to catalog shapes.
const ALIASES: &[(&str, &str)] = &[
    ("llama-8b", "llama-3.1-8b"),
    ("llama-70b", "llama-3.3-70b"),
    ("qwen2-7b", "qwen-2.5-7b"),
    ("qwen2-14b", "qwen-2.5-14b"),
    ("qwen2-32b", "qwen-2.5-32b"),
    ("qwen2-72b", "qwen-2.5-72b"),
    ("mistral-12b", "mistral-nemo-12b"),
    ("mistral-24b", "mistral-small-24b"),
];

/// A shape small enough for smoke tests: 4 layers, about 45M parameters.
fn tiny_llama() -> CatalogModel {
    CatalogModel {
        name: "llama-tiny",
        architecture: "llama",
        parameters: 45_000_000,
        active_parameters: 45_000_000,
        layers: 4,
        embedding: 512,
        feed_forward: 1536,
        heads: 8,
        kv_heads: 4,
        head_dim: 64,
        kv_widths: None,
        vocab: 32_000,
        context_length: 4096,
        experts: 0,
        experts_used: 0,
        tied_embeddings: false,
        default_quant: "Q4_K_M",
    }
}

/// What the planner predicts for the synthetic model on this box.
#[derive(Debug, Serialize)]
pub struct Prediction {
    pub hardware: String,
    pub decode_tps: f64,
    pub prefill_tps: f64,
    pub bound_tps: f64,
    pub memory_bytes: u64,
}

/// A synthetic GGUF on disk, deleted on drop unless kept.
pub struct SyntheticFile {
    pub path: PathBuf,
    pub label: String,
    model: CatalogModel,
    quant: String,
    keep: bool,
}

impl SyntheticFile {
    pub fn write(globals: &Globals, text: &str, keep: bool) -> anyhow::Result<Self> {
        let (name, quant_name) = text.rsplit_once(':').with_context(|| {
            format!("--synthetic '{text}': write ARCH-SIZE:QUANT, e.g. llama-70b:Q4_K_M")
        })?;
        let quant = SyntheticQuant::parse(quant_name).with_context(|| {
            format!("--synthetic quant '{quant_name}': use F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q5_0 or Q4_0")
        })?;
        let model = resolve_shape(name)?;
        let architecture = match model.architecture {
            "llama" => "llama",
            "qwen2" => "qwen2",
            other => bail!(
                "synthetic weights cover llama, mistral, mixtral and qwen2 shapes, not {other}"
            ),
        };
        let spec = SyntheticSpec {
            architecture: architecture.into(),
            layers: model.layers,
            embedding: model.embedding,
            feed_forward: model.feed_forward,
            heads: model.heads,
            kv_heads: model.kv_heads,
            head_dim: model.head_dim,
            vocab: model.vocab,
            context_length: model.context_length,
            experts: model.experts,
            experts_used: model.experts_used,
            quant,
        };
        let size = synthetic_size(&spec);
        let dir = globals.layers()?.local().tmp_dir()?;
        let free = globals.layers()?.local().available_space()?;
        if size + (1 << 30) > free {
            bail!(
                "a synthetic {name} {quant_name} needs {} in {}, and {} is free",
                human_bytes(size),
                dir.display(),
                human_bytes(free)
            );
        }
        let path = dir.join(format!(
            "synthetic-{}-{}.gguf",
            model.name,
            quant_name.to_ascii_uppercase()
        ));
        eprintln!(
            "writing random weights for {} {} ({}) to {}",
            model.name,
            quant_name,
            human_bytes(size),
            path.display()
        );
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::with_capacity(8 << 20, file);
        let tty = std::io::stderr().is_terminal();
        let mut last_percent = 0;
        let written = write_synthetic(&spec, &mut out, |done| {
            let percent = done * 100 / size.max(1);
            if tty && percent != last_percent {
                eprint!("\r{percent}%");
                last_percent = percent;
            }
        });
        let finished = written.and_then(|_| {
            use std::io::Write;
            out.flush()
        });
        if tty {
            eprintln!();
        }
        let this = Self {
            path,
            label: format!(
                "synthetic {}:{}",
                model.name,
                quant_name.to_ascii_uppercase()
            ),
            model,
            quant: quant_name.to_ascii_uppercase(),
            keep,
        };
        finished.with_context(|| format!("writing {}", this.path.display()))?;
        Ok(this)
    }

    /// The planner's numbers for this model on this box, at the bench's
    /// context and prompt length.
    pub fn prediction(&self, globals: &Globals, ctx: u32, prompt: u32) -> Prediction {
        let hardware = crate::probe::this_box(globals.threads);
        let options = FitOptions {
            ctx: u64::from(ctx),
            prompt: u64::from(prompt.max(1)),
            ..FitOptions::default()
        };
        let spec = match shelf_gguf::Gguf::open(&self.path) {
            Ok(gguf) => ModelSpec::from_facts(self.model.name, &self.quant, &gguf.facts()),
            Err(_) => ModelSpec::from_catalog(&self.model, &self.quant).unwrap_or_else(|| {
                ModelSpec::from_facts(self.model.name, &self.quant, &Default::default())
            }),
        };
        let estimate = estimate(&spec, &hardware, &options);
        Prediction {
            hardware: hardware.name,
            decode_tps: estimate.decode_tps,
            prefill_tps: estimate.prefill_tps,
            bound_tps: estimate.bound_tps,
            memory_bytes: estimate.memory.total,
        }
    }
}

impl Drop for SyntheticFile {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn resolve_shape(name: &str) -> anyhow::Result<CatalogModel> {
    if name.eq_ignore_ascii_case("llama-tiny") {
        return Ok(tiny_llama());
    }
    if name.eq_ignore_ascii_case("mixtral-tiny") {
        return Ok(CatalogModel {
            name: "mixtral-tiny",
            experts: 4,
            experts_used: 2,
            ..tiny_llama()
        });
    }
    let lower = name.to_ascii_lowercase();
    let full = ALIASES
        .iter()
        .find(|(alias, _)| *alias == lower)
        .map_or(lower.as_str(), |(_, full)| full);
    catalog_model(full).with_context(|| {
        let aliases: Vec<&str> = ALIASES.iter().map(|(a, _)| *a).collect();
        format!(
            "unknown shape '{name}': use a catalog model (`shelf fit --list-models`), {}, llama-tiny or mixtral-tiny",
            aliases.join(", ")
        )
    })
}
