//! What a token costs on the box, next to hosted APIs.

use serde::Serialize;

/// Running assumptions, each a CLI flag with these defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostInputs {
    pub price_usd: f64,
    pub watts_load: f64,
    pub watts_idle: f64,
    pub usd_per_kwh: f64,
    /// Share of the time the box is generating.
    pub utilisation: f64,
    pub lifetime_months: f64,
}

impl CostInputs {
    pub const DEFAULT_USD_PER_KWH: f64 = 0.20;
    pub const DEFAULT_UTILISATION: f64 = 0.25;
    pub const DEFAULT_LIFETIME_MONTHS: f64 = 36.0;
}

/// A hosted API's list price per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiPrice {
    pub name: String,
    pub usd_per_mtok_input: f64,
    pub usd_per_mtok_output: f64,
}

/// The date the built-in prices were read off the providers' pricing pages.
pub const API_PRICES_DATE: &str = "2026-11";

/// Built-in list prices (USD per million tokens, input/output); override with
/// `--api-price`.
pub fn api_prices() -> Vec<ApiPrice> {
    [
        ("gpt-4o", 2.50, 10.00),
        ("gpt-4o-mini", 0.15, 0.60),
        ("claude-sonnet-4.5", 3.00, 15.00),
        ("claude-haiku-4.5", 1.00, 5.00),
        ("gemini-2.5-flash", 0.30, 2.50),
        ("llama-3.3-70b (hosted)", 0.88, 0.88),
        ("deepseek-v3 (api)", 0.27, 1.10),
    ]
    .into_iter()
    .map(|(name, input, output)| ApiPrice {
        name: name.into(),
        usd_per_mtok_input: input,
        usd_per_mtok_output: output,
    })
    .collect()
}

const HOURS_PER_MONTH: f64 = 730.0;

/// The box's cost per million generated tokens, and when it pays for itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub decode_tps: f64,
    pub tokens_per_month: f64,
    pub usd_per_month_power: f64,
    pub usd_per_month_hardware: f64,
    pub usd_per_mtok: f64,
    /// (API, its output price, months until the box has cost less; `None` if never).
    pub break_even_months: Vec<(String, f64, Option<f64>)>,
}

/// Cost of generating at `decode_tps` with `inputs`, against `apis` (output prices).
pub fn cost_per_mtok(decode_tps: f64, inputs: &CostInputs, apis: &[ApiPrice]) -> CostReport {
    let utilisation = inputs.utilisation.clamp(0.0, 1.0);
    let watts = utilisation * inputs.watts_load + (1.0 - utilisation) * inputs.watts_idle;
    let power_month = watts / 1000.0 * HOURS_PER_MONTH * inputs.usd_per_kwh;
    let hardware_month = inputs.price_usd / inputs.lifetime_months.max(1.0);
    let tokens_month = decode_tps * 3600.0 * HOURS_PER_MONTH * utilisation;
    let per_mtok = if tokens_month > 0.0 {
        (power_month + hardware_month) / tokens_month * 1e6
    } else {
        f64::INFINITY
    };
    let break_even_months = apis
        .iter()
        .map(|api| {
            let api_month = tokens_month / 1e6 * api.usd_per_mtok_output;
            let saving = api_month - power_month;
            let months = (saving > 0.0).then(|| inputs.price_usd / saving);
            (api.name.clone(), api.usd_per_mtok_output, months)
        })
        .collect();
    CostReport {
        decode_tps,
        tokens_per_month: tokens_month,
        usd_per_month_power: power_month,
        usd_per_month_hardware: hardware_month,
        usd_per_mtok: per_mtok,
        break_even_months,
    }
}
