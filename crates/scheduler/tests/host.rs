//! The model host with fake models and paused time: queues, the budget,
//! eviction, keep-alive, pinning and crashes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shelf_engine::fake::{FakeControl, FakeModel, Gate};
use shelf_engine::{EngineError, LoadedModel};
use shelf_scheduler::{
    Catalog, CatalogError, HostConfig, HostError, KeepAlive, Lease, LoadPlan, Loader, ModelCost,
    ModelHost, Resolution, Sizer,
};

/// A catalog of names, each with its cost; `broken` fails to load.
struct Fakes {
    costs: HashMap<&'static str, ModelCost>,
    loads: Mutex<Vec<LoadPlan>>,
    controls: Mutex<HashMap<String, Vec<FakeControl>>>,
    /// Unloads wait for this gate (open unless a test closes it).
    unload_gate: Gate,
}

impl Catalog for Fakes {
    fn resolve(&self, name: &str) -> Result<Resolution, CatalogError> {
        Ok(if self.costs.contains_key(name) {
            Resolution::Ready(PathBuf::from(format!("/models/{name}.gguf")))
        } else {
            Resolution::Missing
        })
    }
    fn list(&self) -> Result<Vec<String>, CatalogError> {
        Ok(self.costs.keys().map(|s| s.to_string()).collect())
    }
}

impl Fakes {
    fn new(costs: &[(&'static str, ModelCost)], unload_gate: Gate) -> Arc<Self> {
        Arc::new(Fakes {
            costs: costs.iter().copied().collect(),
            loads: Mutex::default(),
            controls: Mutex::default(),
            unload_gate,
        })
    }

    fn name_of(path: &Path) -> String {
        path.file_stem().unwrap().to_string_lossy().into_owned()
    }

    fn loads_of(&self, name: &str) -> usize {
        self.loads
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.name == name)
            .count()
    }

    /// The fake behind the latest load of `name`.
    fn control(&self, name: &str) -> FakeControl {
        self.controls.lock().unwrap()[name].last().unwrap().clone()
    }

    fn unloads(&self, name: &str) -> usize {
        self.controls.lock().unwrap()[name]
            .iter()
            .map(|c| c.unloads())
            .sum()
    }
}

struct Setup {
    host: Arc<ModelHost>,
    fakes: Arc<Fakes>,
}

fn setup(models: &[(&'static str, u64)], config: HostConfig) -> Setup {
    let costs: Vec<_> = models
        .iter()
        .map(|&(name, bytes)| {
            let cost = ModelCost {
                fixed: bytes,
                per_slot: 0,
            };
            (name, cost)
        })
        .collect();
    let fakes = Fakes::new(&costs, open_gate());
    setup_with(fakes, config)
}

fn setup_with(fakes: Arc<Fakes>, config: HostConfig) -> Setup {
    let loading = Arc::clone(&fakes);
    let loader: Arc<Loader> = Arc::new(move |plan: &LoadPlan| {
        loading.loads.lock().unwrap().push(plan.clone());
        if plan.name == "broken" {
            return Err(EngineError::Load {
                path: plan.path.clone(),
                reason: "not a GGUF".into(),
            });
        }
        let model = FakeModel::new("ok", 64)
            .with_slots(plan.slots)
            .with_unload_gate(&loading.unload_gate);
        loading
            .controls
            .lock()
            .unwrap()
            .entry(plan.name.clone())
            .or_default()
            .push(model.control());
        Ok(Arc::new(model) as Arc<dyn LoadedModel>)
    });
    let sizing = Arc::clone(&fakes);
    let sizer: Arc<Sizer> =
        Arc::new(move |path: &Path| Ok(sizing.costs[Fakes::name_of(path).as_str()]));
    let host = Arc::new(ModelHost::new(
        Arc::clone(&fakes) as Arc<dyn Catalog>,
        loader,
        sizer,
        config,
    ));
    Setup { host, fakes }
}

fn open_gate() -> Gate {
    let gate = Gate::closed();
    gate.open();
    gate
}

fn config(budget: u64) -> HostConfig {
    HostConfig {
        budget,
        slots: Some(1),
        keep_alive: KeepAlive::Forever,
        max_queue: 8,
        ..HostConfig::default()
    }
}

fn loaded(host: &ModelHost) -> Vec<String> {
    host.status()
        .into_iter()
        .filter(|s| !s.loading)
        .map(|s| s.name)
        .collect()
}

/// Let spawned tasks (loads, unloads, timers at the current instant) run.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Until `cond` holds, letting other tasks (and blocking catalog, sizing
/// and unload calls) run; fails after 10 s of real time.
async fn until(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        for _ in 0..100 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        // Blocking-pool work is on other threads: give them the CPU.
        std::thread::yield_now();
    }
    panic!("condition never held");
}

/// Opens a gate when dropped, so a failing test never leaves an unload
/// blocked (the runtime would wait for it forever).
struct OpenOnDrop(Gate);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

#[tokio::test]
async fn a_model_loads_once_and_serves_every_request() {
    let s = setup(&[("a", 100)], config(1000));
    drop(s.host.acquire("a").await.unwrap());
    let lease = s.host.acquire("a").await.unwrap();
    assert_eq!(lease.resident().name, "a");
    assert!(
        lease.resident().template.is_fallback,
        "the fake has no template"
    );
    assert_eq!(s.fakes.loads_of("a"), 1);
}

#[tokio::test]
async fn unknown_names_are_not_found_and_never_loaded() {
    let s = setup(&[("a", 100)], config(1000));
    assert!(matches!(s.host.acquire("nope").await, Err(HostError::NotFound(n)) if n == "nope"));
    assert!(s.fakes.loads.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_load_is_reported_and_can_be_retried() {
    let s = setup(&[("broken", 100)], config(1000));
    assert!(matches!(
        s.host.acquire("broken").await,
        Err(HostError::Load(_))
    ));
    assert!(matches!(
        s.host.acquire("broken").await,
        Err(HostError::Load(_))
    ));
    assert_eq!(s.fakes.loads_of("broken"), 2, "a failure must not stick");
    assert!(!s.host.is_loading());
    assert_eq!(s.host.memory().1, 0, "a failed load holds no memory");
}

#[tokio::test]
async fn requests_get_a_busy_models_slots_in_arrival_order() {
    let s = setup(&[("a", 100)], config(1000));
    let first = s.host.acquire("a").await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..3 {
        let host = Arc::clone(&s.host);
        let order = Arc::clone(&order);
        waiters.push(tokio::spawn(async move {
            let lease = host.acquire("a").await.unwrap();
            order.lock().unwrap().push(i);
            drop(lease);
        }));
        // Each is queued before the next arrives.
        until(|| s.host.status()[0].queued == i + 1).await;
    }
    drop(first);
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
}

#[tokio::test]
async fn a_full_queue_refuses_with_overloaded() {
    let mut c = config(1000);
    c.max_queue = 2;
    let s = setup(&[("a", 100)], c);
    let _running = s.host.acquire("a").await.unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let host = Arc::clone(&s.host);
            tokio::spawn(async move { host.acquire("a").await.map(drop) })
        })
        .collect();
    until(|| s.host.status()[0].queued == 2).await;
    match s.host.acquire("a").await {
        Err(HostError::Overloaded { model, queued }) => {
            assert_eq!((model.as_str(), queued), ("a", 2))
        }
        other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
    }
    drop(_running);
    for w in waiting {
        w.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_request_that_leaves_the_queue_never_uses_the_model() {
    let s = setup(&[("a", 100)], config(1000));
    let running = s.host.acquire("a").await.unwrap();
    let host = Arc::clone(&s.host);
    let left = tokio::spawn(async move { host.acquire("a").await.map(drop) });
    until(|| s.host.status()[0].queued == 1).await;
    left.abort();
    until(|| s.host.status()[0].queued == 0).await;
    drop(running);
    let status = &s.host.status()[0];
    assert_eq!((status.busy, status.queued), (0, 0));
}

/// The acceptance case: a budget that fits two; a stream runs on A while C
/// is requested: B (idle) is unloaded, never A.
#[tokio::test]
async fn room_comes_from_idle_models_never_busy_ones() {
    let s = setup(&[("a", 100), ("b", 100), ("c", 100)], config(250));
    let a = s.host.acquire("a").await.unwrap();
    drop(s.host.acquire("b").await.unwrap());
    let _c = s.host.acquire("c").await.unwrap();
    settle().await;
    assert_eq!(loaded(&s.host), vec!["a", "c"]);
    assert_eq!(s.fakes.unloads("b"), 1);
    assert_eq!(s.fakes.unloads("a"), 0);
    assert_eq!(a.resident().name, "a");
}

#[tokio::test(start_paused = true)]
async fn the_least_recently_used_idle_model_goes_first() {
    let s = setup(&[("a", 100), ("b", 100), ("c", 100)], config(250));
    drop(s.host.acquire("a").await.unwrap());
    tokio::time::advance(Duration::from_millis(10)).await;
    drop(s.host.acquire("b").await.unwrap());
    tokio::time::advance(Duration::from_millis(10)).await;
    drop(s.host.acquire("a").await.unwrap());
    drop(s.host.acquire("c").await.unwrap());
    settle().await;
    assert_eq!(loaded(&s.host), vec!["a", "c"]);
}

#[tokio::test]
async fn a_load_waits_until_a_busy_model_goes_idle() {
    let s = setup(&[("a", 100), ("b", 100)], config(150));
    let a = s.host.acquire("a").await.unwrap();
    let host = Arc::clone(&s.host);
    let b = tokio::spawn(async move { host.acquire("b").await.map(drop) });
    settle().await;
    assert!(!b.is_finished(), "b must wait: a is busy");
    assert_eq!(s.fakes.loads_of("b"), 0);
    drop(a);
    b.await.unwrap().unwrap();
    assert_eq!(s.fakes.unloads("a"), 1);
}

#[tokio::test]
async fn a_model_over_the_budget_is_refused_with_its_size() {
    let s = setup(&[("huge", 5000)], config(1000));
    match s.host.acquire("huge").await {
        Err(HostError::TooLarge {
            model,
            needed,
            available,
        }) => {
            assert_eq!((model.as_str(), needed, available), ("huge", 5000, 1000));
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|_| ())),
    }
    assert!(s.fakes.loads.lock().unwrap().is_empty());
}

#[tokio::test]
async fn pinned_models_take_their_share_of_the_budget_for_good() {
    let mut c = config(1000);
    c.pinned = vec!["p".into()];
    c.keep_alive = KeepAlive::After(Duration::ZERO);
    let s = setup(&[("p", 600), ("q", 500), ("r", 300)], c);
    s.host.preload("p").await.unwrap();
    settle().await;
    assert_eq!(
        loaded(&s.host),
        vec!["p"],
        "keep-alive 0 spares pinned models"
    );
    assert!(matches!(
        s.host.acquire("q").await,
        Err(HostError::TooLarge { available: 400, .. })
    ));
    drop(s.host.acquire("r").await.unwrap());
    settle().await;
    assert_eq!(loaded(&s.host), vec!["p"], "r unloads at once, p stays");
}

#[tokio::test(start_paused = true)]
async fn idle_models_unload_after_the_keep_alive() {
    let mut c = config(1000);
    c.keep_alive = KeepAlive::After(Duration::from_secs(300));
    let s = setup(&[("a", 100)], c);
    drop(s.host.acquire("a").await.unwrap());
    let status = &s.host.status()[0];
    assert_eq!(status.unloads_in, Some(Duration::from_secs(300)));
    tokio::time::advance(Duration::from_secs(299)).await;
    settle().await;
    assert_eq!(loaded(&s.host), vec!["a"]);
    // A request in the meantime restarts the clock.
    drop(s.host.acquire("a").await.unwrap());
    tokio::time::advance(Duration::from_secs(299)).await;
    settle().await;
    assert_eq!(loaded(&s.host), vec!["a"]);
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    assert!(loaded(&s.host).is_empty());
    assert_eq!(s.fakes.unloads("a"), 1);
    assert_eq!(s.host.memory().1, 0);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_zero_unloads_when_idle_and_forever_never_does() {
    let mut c = config(1000);
    c.keep_alive = KeepAlive::After(Duration::ZERO);
    let s = setup(&[("a", 100)], c);
    let lease = s.host.acquire("a").await.unwrap();
    assert_eq!(loaded(&s.host), vec!["a"], "busy: kept");
    drop(lease);
    settle().await;
    assert!(loaded(&s.host).is_empty());

    let s = setup(&[("a", 100)], config(1000));
    drop(s.host.acquire("a").await.unwrap());
    tokio::time::advance(Duration::from_secs(365 * 86_400)).await;
    settle().await;
    assert_eq!(loaded(&s.host), vec!["a"]);
}

#[tokio::test]
async fn a_crashed_runner_is_dropped_and_the_next_request_starts_another() {
    let s = setup(&[("a", 100)], config(1000));
    drop(s.host.acquire("a").await.unwrap());
    s.fakes.control("a").crash("was killed (signal 9)");
    until(|| s.host.status().is_empty()).await;
    assert_eq!(s.host.counts()[0].1.crashes, 1);
    until(|| s.host.memory().1 == 0).await;
    let lease = s.host.acquire("a").await.unwrap();
    assert_eq!(s.fakes.loads_of("a"), 2);
    assert_eq!(lease.resident().name, "a");
}

#[tokio::test]
async fn requests_queued_when_a_runner_dies_get_a_new_one() {
    let s = setup(&[("a", 100)], config(1000));
    let running = s.host.acquire("a").await.unwrap();
    let host = Arc::clone(&s.host);
    let queued =
        tokio::spawn(async move { host.acquire("a").await.map(|l| l.resident().name.clone()) });
    until(|| s.host.status()[0].queued == 1).await;
    s.fakes.control("a").crash("aborted (signal 6)");
    assert_eq!(queued.await.unwrap().unwrap(), "a");
    assert_eq!(s.fakes.loads_of("a"), 2);
    drop(running);
}

#[tokio::test]
async fn slots_default_to_what_the_budget_allows() {
    let fakes = Fakes::new(
        &[(
            "a",
            ModelCost {
                fixed: 100,
                per_slot: 50,
            },
        )],
        open_gate(),
    );
    let mut c = config(260);
    c.slots = None;
    let s = setup_with(Arc::clone(&fakes), c);
    let leases: Vec<Lease> = {
        let mut leases = Vec::new();
        for _ in 0..3 {
            leases.push(s.host.acquire("a").await.unwrap());
        }
        leases
    };
    let status = &s.host.status()[0];
    assert_eq!((status.slots, status.busy, status.bytes), (3, 3, 250));
    assert_eq!(fakes.loads.lock().unwrap()[0].slots, 3);
    drop(leases);
}

/// Budget for one: a new model does not start loading until the model
/// evicted for it is gone, so the two are never in memory together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_model_waits_until_the_evicted_one_is_gone() {
    let fakes = Fakes::new(
        &[
            (
                "a",
                ModelCost {
                    fixed: 100,
                    per_slot: 0,
                },
            ),
            (
                "b",
                ModelCost {
                    fixed: 100,
                    per_slot: 0,
                },
            ),
        ],
        Gate::closed(),
    );
    let _open = OpenOnDrop(fakes.unload_gate.clone());
    let s = setup_with(Arc::clone(&fakes), config(150));
    drop(s.host.acquire("a").await.unwrap());
    let host = Arc::clone(&s.host);
    let b = tokio::spawn(async move { host.acquire("b").await.map(drop) });
    until(|| s.host.status().iter().all(|m| m.name != "a")).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fakes.loads_of("b"), 0, "b must not load while a is leaving");
    assert_eq!(s.host.memory().1, 100, "a's bytes count until it is gone");
    fakes.unload_gate.open();
    b.await.unwrap().unwrap();
    assert_eq!(fakes.loads_of("b"), 1);
}

/// With one model allowed and it pinned, another can never load: it is
/// refused, not left waiting.
#[tokio::test]
async fn a_model_that_cannot_displace_a_pinned_one_is_refused() {
    let mut c = config(1000);
    c.max_loaded = Some(1);
    c.pinned = vec!["p".into()];
    let s = setup(&[("p", 100), ("q", 100)], c);
    s.host.preload("p").await.unwrap();
    assert!(matches!(
        s.host.acquire("q").await,
        Err(HostError::TooLarge { .. })
    ));
    assert_eq!(s.fakes.loads_of("q"), 0);
}

/// A crashed runner's bytes count until what is left of it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_runner_holds_its_bytes_until_it_is_gone() {
    let fakes = Fakes::new(
        &[(
            "a",
            ModelCost {
                fixed: 100,
                per_slot: 0,
            },
        )],
        Gate::closed(),
    );
    let _open = OpenOnDrop(fakes.unload_gate.clone());
    let s = setup_with(Arc::clone(&fakes), config(1000));
    drop(s.host.acquire("a").await.unwrap());
    fakes.control("a").crash("killed (signal 9)");
    until(|| s.host.status().is_empty()).await;
    assert_eq!(s.host.memory().1, 100);
    fakes.unload_gate.open();
    until(|| s.host.memory().1 == 0).await;
}
