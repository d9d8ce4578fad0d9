//! A generation in progress with the slot it runs in: ending it (finished,
//! or dropped when the client goes away) cancels the work and gives the
//! slot back. Its events feed the metrics on the way through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shelf_engine::{Event, Generation};
use shelf_scheduler::Lease;

use crate::audit::Ledger;
use crate::metrics::Metrics;

pub struct Running {
    generation: Generation,
    /// Held until the generation is dropped: the model's slot.
    _lease: Lease,
    model: String,
    arrived: Instant,
    sent_first: bool,
    metrics: Arc<Metrics>,
    /// The request's accounting, taken from the handler's scope: the body
    /// that polls this runs outside it.
    ledger: Option<Arc<Ledger>>,
}

impl Running {
    pub fn new(
        generation: Generation,
        lease: Lease,
        model: &str,
        arrived: Instant,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            generation,
            _lease: lease,
            model: model.to_string(),
            arrived,
            sent_first: false,
            metrics,
            ledger: Ledger::current(),
        }
    }

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<Event> {
        let event = self.generation.next().await;
        match &event {
            Some(Event::Text(_)) => {
                if let Some(ledger) = &self.ledger {
                    ledger.output_piece();
                }
                if !self.sent_first {
                    self.sent_first = true;
                    self.metrics
                        .first_token(&self.model, self.arrived.elapsed());
                }
            }
            Some(Event::Done(completion)) => {
                let decode =
                    Duration::from_secs_f64(completion.timings.decode_ms.max(0.0) / 1000.0);
                self.metrics
                    .finished(&self.model, &completion.usage, Some(decode));
                if let Some(ledger) = &self.ledger {
                    ledger.used(
                        u64::from(completion.usage.prompt_tokens),
                        u64::from(completion.usage.completion_tokens),
                    );
                }
            }
            _ => {}
        }
        event
    }
}
