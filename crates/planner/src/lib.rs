//! The capacity planner: pure functions from a model's shape and a box's
//! specifications to memory needed, a verdict, predicted speeds and cost.
//!
//! No IO: callers hand in a parsed GGUF, a catalog entry or a detected box.
//! The scheduler can call [`estimate`] for admission and eviction; the CLI
//! formats its results. The numbers behind each constant are in
//! docs/planner.md.

mod cost;
mod estimate;
mod hardware;
mod models;
mod speculative;

pub use cost::{api_prices, cost_per_mtok, ApiPrice, CostInputs, CostReport, API_PRICES_DATE};
pub use estimate::{
    estimate, estimate_together, load_seconds, Estimate, FitOptions, KvType, Memory, ModelSpec,
    Verdict, COMFORTABLE_FRACTION,
};
pub use seed::{seed_claims, SeedClaim};

mod seed;
pub use hardware::{hardware_catalog, Backend, Hardware};
pub use models::{catalog_model, model_catalog, quant_bits, CatalogModel, QUANTS};
pub use speculative::{
    acceptance_needed, estimate_speculative, expected_tokens, Speculation, SpeculativeEstimate,
    DEFAULT_ACCEPTANCE, MAX_DRAFT_TOKENS,
};
