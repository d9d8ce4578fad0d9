//! The planner against the founding brief's 64 GB Mac, and its memory and
//! decode rules (published speeds are in `published.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use shelf_planner::{
    catalog_model, estimate, estimate_together, seed_claims, FitOptions, Hardware, ModelSpec,
    Verdict,
};

fn spec(name: &str, quant: &str) -> ModelSpec {
    ModelSpec::from_catalog(&catalog_model(name).unwrap(), quant).unwrap()
}

#[test]
fn the_seed_box() {
    let hw = Hardware::named("m4-max-64").unwrap();
    let options = FitOptions::default();
    let verdict = |model: &str, quant: &str| estimate(&spec(model, quant), &hw, &options).verdict;
    assert!(verdict("llama-3.3-70b", "Q4_K_M").fits());
    assert!(verdict("qwen-2.5-32b", "Q8_0").fits());
    assert_eq!(verdict("deepseek-v3-671b", "Q4_K_M"), Verdict::No);
    let small = [
        spec("llama-3.1-8b", "Q4_K_M"),
        spec("qwen-2.5-7b", "Q4_K_M"),
        spec("mistral-nemo-12b", "Q4_K_M"),
    ];
    let (memory, together) = estimate_together(&small, &hw, &options);
    assert!(together.fits(), "{memory:?}");

    // 70B Q4_K_M is about 42.5 GB: 546 GB/s gives about 12.8 t/s at most.
    let llama = estimate(&spec("llama-3.3-70b", "Q4_K_M"), &hw, &options);
    assert!(
        (41e9..44e9).contains(&(llama.memory.weights as f64)),
        "{llama:?}"
    );
    assert!(
        (12.0..14.0).contains(&llama.bound_tps),
        "{}",
        llama.bound_tps
    );
    for claim in seed_claims() {
        let (model, quant) = claim.model.split_once(':').unwrap();
        let bound = estimate(
            &spec(model, quant),
            &Hardware::named(claim.hardware).unwrap(),
            &options,
        )
        .bound_tps;
        assert!(
            claim.claimed_low_tps > bound,
            "{} claim is not above {bound}",
            claim.model
        );
    }
}

#[test]
fn kv_cache_grows_with_context_and_parallelism_and_shrinks_with_quantized_types() {
    let hw = Hardware::named("m4-max-128").unwrap();
    let model = spec("llama-3.1-8b", "Q4_K_M");
    let kv = |ctx, parallel, kv_type| {
        let options = FitOptions {
            ctx,
            parallel,
            kv_type,
            ..FitOptions::default()
        };
        estimate(&model, &hw, &options).memory.kv_cache
    };
    use shelf_planner::KvType::*;
    // 32 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes = 128 KiB per token.
    assert_eq!(kv(8192, 1, F16), 8192 * 131072);
    assert_eq!(kv(8192, 4, F16), 4 * kv(8192, 1, F16));
    assert!(kv(8192, 1, Q8_0) * 2 > kv(8192, 1, F16) && kv(8192, 1, Q4_0) < kv(8192, 1, Q8_0));
}

#[test]
fn a_model_too_big_for_a_card_reports_the_layers_that_fit() {
    let hw = Hardware::named("rtx-4090").unwrap();
    let estimate = estimate(
        &spec("llama-3.3-70b", "Q4_K_M"),
        &hw,
        &FitOptions::default(),
    );
    assert_eq!(estimate.verdict, Verdict::No);
    let layers = estimate.gpu_layers.unwrap();
    assert!((30..55).contains(&layers), "{layers}");
}

#[test]
fn moe_decode_reads_only_active_experts() {
    let hw = Hardware::named("m4-max-64").unwrap();
    let options = FitOptions::default();
    let moe = estimate(&spec("qwen3-30b-a3b", "Q4_K_M"), &hw, &options);
    let dense = estimate(&spec("qwen-2.5-32b", "Q4_K_M"), &hw, &options);
    assert!(moe.verdict.fits());
    assert!(
        moe.bound_tps > 5.0 * dense.bound_tps,
        "{} vs {}",
        moe.bound_tps,
        dense.bound_tps
    );
}
