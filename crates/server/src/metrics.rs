//! `GET /metrics`: what the server did, in Prometheus's text format.
//!
//! Counters and histograms are recorded as requests happen; the per-model
//! gauges (queues, slots, memory) and the host's lifetime counts (runner
//! starts, crashes, unloads) are read from the host when scraped, so they
//! can never drift from it. Labels are model names and route templates,
//! never request text.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use shelf_engine::Usage;
use shelf_scheduler::ModelHost;

/// Latency buckets in seconds, from a fast GPU token to a long queue.
const SECONDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    prompt_tokens: IntCounterVec,
    cached_tokens: IntCounterVec,
    generated_tokens: IntCounterVec,
    drafted_tokens: IntCounterVec,
    accepted_tokens: IntCounterVec,
    acceptance: GaugeVec,
    time_to_first_token: HistogramVec,
    time_per_output_token: HistogramVec,
    queue_wait: HistogramVec,
    // Read from the host at each scrape.
    queue_depth: IntGaugeVec,
    slots_busy: IntGaugeVec,
    slots_total: IntGaugeVec,
    model_bytes: GaugeVec,
    models_loaded: IntGaugeVec,
    memory: GaugeVec,
    runner_starts: IntCounterVec,
    runner_crashes: IntCounterVec,
    model_unloads: IntCounterVec,
    load_failures: IntCounterVec,
    auth_failures: IntCounterVec,
    audit_dropped: IntCounterVec,
    /// One scrape at a time brings the host's counts over.
    scraping: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let model = &["model"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
            register(&registry, Box::new(metric.clone()));
            metric
        };
        let histogram = |name: &str, help: &str| {
            let metric = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(SECONDS.to_vec()),
                model,
            )
            .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
            register(&registry, Box::new(metric.clone()));
            metric
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
            register(&registry, Box::new(metric.clone()));
            metric
        };
        let float_gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = GaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
            register(&registry, Box::new(metric.clone()));
            metric
        };
        Self {
            requests: counter(
                "shelf_http_requests_total",
                "HTTP requests answered, by route and status code",
                &["route", "status"],
            ),
            prompt_tokens: counter(
                "shelf_prompt_tokens_total",
                "Prompt tokens of finished generations",
                model,
            ),
            cached_tokens: counter(
                "shelf_prompt_cached_tokens_total",
                "Prompt tokens reused from the prefix cache instead of computed",
                model,
            ),
            generated_tokens: counter("shelf_generated_tokens_total", "Tokens generated", model),
            drafted_tokens: counter(
                "shelf_speculative_drafted_tokens_total",
                "Tokens speculative decoding drafted (draft model or n-gram lookup) and the model verified",
                model,
            ),
            accepted_tokens: counter(
                "shelf_speculative_accepted_tokens_total",
                "Drafted tokens the model kept",
                model,
            ),
            acceptance: float_gauge(
                "shelf_speculative_acceptance_ratio",
                "Drafted tokens kept over drafted tokens, since the server started",
                model,
            ),
            time_to_first_token: histogram(
                "shelf_time_to_first_token_seconds",
                "From a request's arrival to its first generated text, queueing included",
            ),
            time_per_output_token: histogram(
                "shelf_time_per_output_token_seconds",
                "Decode time per generated token after the first",
            ),
            queue_wait: histogram(
                "shelf_queue_wait_seconds",
                "Time a request waited for a slot (and for its model to load)",
            ),
            queue_depth: gauge("shelf_queue_depth", "Requests waiting for a slot", model),
            slots_busy: gauge("shelf_slots_busy", "Slots running a request", model),
            slots_total: gauge("shelf_slots_total", "Slots of each loaded model", model),
            model_bytes: float_gauge(
                "shelf_model_memory_bytes",
                "Memory each loaded or loading model was admitted with",
                model,
            ),
            models_loaded: gauge(
                "shelf_models_loaded",
                "Models loaded (state=ready) or loading",
                &["state"],
            ),
            memory: float_gauge(
                "shelf_memory_bytes",
                "The memory budget and the bytes held against it",
                &["kind"],
            ),
            runner_starts: counter(
                "shelf_runner_starts_total",
                "Runner processes started and loaded, by model",
                model,
            ),
            runner_crashes: counter(
                "shelf_runner_crashes_total",
                "Runner processes that died, by model",
                model,
            ),
            model_unloads: counter(
                "shelf_model_unloads_total",
                "Models unloaded for room or after their keep-alive",
                model,
            ),
            load_failures: counter(
                "shelf_model_load_failures_total",
                "Loads that failed",
                model,
            ),
            auth_failures: counter(
                "shelf_auth_failures_total",
                "Requests refused for their API key, by reason (missing, invalid, expired, revoked)",
                &["reason"],
            ),
            audit_dropped: counter(
                "shelf_audit_dropped_total",
                "Audit lines dropped because the writer fell behind",
                &[],
            ),
            registry,
            scraping: Mutex::new(()),
        }
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    pub fn audit_dropped(&self) {
        self.audit_dropped.with_label_values::<&str>(&[]).inc();
    }

    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
    }

    pub fn queue_wait(&self, model: &str, waited: Duration) {
        self.queue_wait
            .with_label_values(&[model])
            .observe(waited.as_secs_f64());
    }

    pub fn first_token(&self, model: &str, after: Duration) {
        self.time_to_first_token
            .with_label_values(&[model])
            .observe(after.as_secs_f64());
    }

    /// A generation finished: its tokens, and its decode speed.
    pub fn finished(&self, model: &str, usage: &Usage, decode: Option<Duration>) {
        let labels = &[model];
        self.prompt_tokens
            .with_label_values(labels)
            .inc_by(u64::from(usage.prompt_tokens));
        self.cached_tokens
            .with_label_values(labels)
            .inc_by(u64::from(usage.cached_tokens));
        self.generated_tokens
            .with_label_values(labels)
            .inc_by(u64::from(usage.completion_tokens));
        if usage.drafted_tokens > 0 {
            let drafted = self.drafted_tokens.with_label_values(labels);
            let accepted = self.accepted_tokens.with_label_values(labels);
            drafted.inc_by(u64::from(usage.drafted_tokens));
            accepted.inc_by(u64::from(usage.accepted_tokens));
            self.acceptance
                .with_label_values(labels)
                .set(accepted.get() as f64 / drafted.get().max(1) as f64);
        }
        if let (Some(decode), true) = (decode, usage.completion_tokens > 1) {
            let per_token = decode.as_secs_f64() / f64::from(usage.completion_tokens - 1);
            self.time_per_output_token
                .with_label_values(labels)
                .observe(per_token);
        }
    }

    /// Everything, in Prometheus's text format.
    pub fn render(&self, host: &ModelHost) -> String {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(PoisonError::into_inner);
        self.read_host(host);
        let mut text = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::error!(%error, "could not encode the metrics");
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn read_host(&self, host: &ModelHost) {
        for gauge in [&self.queue_depth, &self.slots_busy, &self.slots_total] {
            gauge.reset();
        }
        self.model_bytes.reset();
        let mut ready = 0;
        let mut loading = 0;
        for model in host.status() {
            let labels = &[model.name.as_str()];
            self.queue_depth
                .with_label_values(labels)
                .set(i64::from(model.queued));
            self.slots_busy
                .with_label_values(labels)
                .set(i64::from(model.busy));
            self.slots_total
                .with_label_values(labels)
                .set(i64::from(model.slots));
            self.model_bytes
                .with_label_values(labels)
                .set(model.bytes as f64);
            match model.loading {
                true => loading += 1,
                false => ready += 1,
            }
        }
        self.models_loaded.with_label_values(&["ready"]).set(ready);
        self.models_loaded
            .with_label_values(&["loading"])
            .set(loading);
        let (budget, used) = host.memory();
        self.memory
            .with_label_values(&["budget"])
            .set(budget as f64);
        self.memory.with_label_values(&["used"]).set(used as f64);
        // The host's counts only grow: bring each counter up to them.
        for (name, counts) in host.counts() {
            let labels = &[name.as_str()];
            let catch_up = |counter: &IntCounterVec, n: u64| {
                let counter = counter.with_label_values(labels);
                counter.inc_by(n.saturating_sub(counter.get()));
            };
            catch_up(&self.runner_starts, counts.loads);
            catch_up(&self.runner_crashes, counts.crashes);
            catch_up(&self.model_unloads, counts.unloads);
            catch_up(&self.load_failures, counts.load_failures);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register(registry: &Registry, metric: Box<dyn prometheus::core::Collector>) {
    if let Err(error) = registry.register(metric) {
        tracing::error!(%error, "could not register a metric");
    }
}
