//! `shelf bench --json-schema FILE`: decode speed under a JSON-schema
//! grammar against the same decode unconstrained, alternating in one run.

use shelf_engine::chat::{self, Chat, OutputFormat};
use shelf_engine::schema::SchemaError;
use shelf_engine::template::{ChatMessage, ChatTemplate};
use shelf_engine::{GenerateRequest, LoadedModel, SamplingParams};
use shelf_engine_llama::LlamaModelHandle;

use super::generate;

/// Constrained decode must keep this share of unconstrained speed.
const BAR: f64 = 0.85;

const ASK: &str = "Write a JSON object whose \"items\" list holds 64 products, each with a name and a score from 0 to 10.";

/// Measure, print the two speeds and their ratio; an error when the ratio
/// misses the bar.
pub async fn bench(
    model: &LlamaModelHandle,
    schema_path: &std::path::Path,
    tokens: u32,
    reps: u32,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(schema_path)?;
    let schema: serde_json::Value = serde_json::from_str(&text)?;
    let info = model.info();
    let template = ChatTemplate::new(
        info.chat_template.as_deref(),
        &info.bos_token,
        &info.eos_token,
    )?;
    let chat = Chat {
        messages: vec![ChatMessage::new("user", ASK)],
        format: OutputFormat::JsonSchema(schema),
        ..Chat::default()
    };
    let prepared = chat::prepare(&chat, &template).map_err(|e| anyhow::anyhow!("{e}"))?;
    let prompt = model.tokenize(&prepared.prompt)?;
    let grammar = prepared.grammar.ok_or_else(|| {
        anyhow::anyhow!(
            "{}",
            SchemaError {
                at: String::new(),
                reason: "the schema gave no grammar".into(),
            }
        )
    })?;
    let request = |constrained: bool| {
        let mut request = GenerateRequest::new(prompt.clone());
        request.sampling = SamplingParams::greedy();
        request.max_tokens = Some(tokens + 1);
        request.cache_prompt = false;
        // Unconstrained, the model may end its answer early; the grammar
        // (a long list) does not let it within `tokens`.
        request.ignore_eos = !constrained;
        request.grammar = constrained.then(|| grammar.clone());
        request
    };
    generate(model, request(true)).await?;
    let (mut free, mut held) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        free.push(generate(model, request(false)).await?);
        held.push(generate(model, request(true)).await?);
    }
    let rate = |runs: &[shelf_engine::Completion]| {
        let tokens: u32 = runs.iter().map(|c| c.timings.decoded_tokens).sum();
        let ms: f64 = runs.iter().map(|c| c.timings.decode_ms).sum();
        f64::from(tokens) * 1000.0 / ms.max(1e-9)
    };
    let (free_tps, held_tps) = (rate(&free), rate(&held));
    let held_tokens = held
        .iter()
        .map(|c| c.usage.completion_tokens)
        .min()
        .unwrap_or(0);
    let ratio = held_tps / free_tps;
    println!("| decode | t/s |");
    println!("| --- | ---: |");
    println!("| unconstrained, {tokens} tokens | {free_tps:.2} |");
    println!("| under the schema's grammar (shortest run {held_tokens} tokens) | {held_tps:.2} |");
    println!("ratio {ratio:.3} (bar >= {BAR})");
    anyhow::ensure!(
        ratio >= BAR,
        "grammar-constrained decode is {ratio:.3}x unconstrained, below the {BAR} bar"
    );
    Ok(())
}
