//! The speed claims of shelf's founding brief, checked against the
//! bandwidth bound rather than repeated.

use serde::Serialize;

/// A published or quoted speed for a model on a box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedClaim {
    pub hardware: &'static str,
    /// Catalog model with quant, e.g. `llama-3.3-70b:Q4_K_M`.
    pub model: &'static str,
    pub claimed_low_tps: f64,
    pub claimed_high_tps: f64,
    pub said: &'static str,
    /// The same family's small model, to draft for it.
    pub draft: &'static str,
}

/// The brief: a 64 GB Mac (the Mac Studio M4 Max) runs Llama 3.3 70B at 4
/// bits "in the high teens to low 20s of tokens/s", and Qwen 2.5 32B at 8
/// bits in the same breath.
pub fn seed_claims() -> Vec<SeedClaim> {
    let said = "high teens to low 20s of tokens/s";
    vec![
        SeedClaim {
            hardware: "m4-max-64",
            model: "llama-3.3-70b:Q4_K_M",
            claimed_low_tps: 17.0,
            claimed_high_tps: 22.0,
            said,
            draft: "llama-3.2-1b:Q8_0",
        },
        SeedClaim {
            hardware: "m4-max-64",
            model: "qwen-2.5-32b:Q8_0",
            claimed_low_tps: 17.0,
            claimed_high_tps: 22.0,
            said,
            draft: "qwen-2.5-0.5b:Q8_0",
        },
    ]
}
