//! The model host with a fake engine: loading, errors, eviction.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use shelf_engine::fake::FakeModel;
use shelf_engine::{EngineError, LoadedModel};
use shelf_scheduler::{Catalog, HostConfig, HostError, Loader, ModelHost, Resolution};

struct Names(Vec<&'static str>);

impl Catalog for Names {
    fn resolve(&self, name: &str) -> Result<Resolution, String> {
        Ok(if self.0.contains(&name) {
            Resolution::Ready(PathBuf::from(format!("/models/{name}.gguf")))
        } else {
            Resolution::Missing
        })
    }
    fn list(&self) -> Result<Vec<String>, String> {
        Ok(self.0.iter().map(|s| s.to_string()).collect())
    }
}

fn fake_loader(loads: Arc<AtomicUsize>) -> Arc<Loader> {
    Arc::new(move |path: &Path| {
        loads.fetch_add(1, Ordering::SeqCst);
        if path.ends_with("broken.gguf") {
            return Err(EngineError::Load {
                path: path.into(),
                reason: "not a GGUF".into(),
            });
        }
        Ok(Arc::new(FakeModel::new("ok", 64)) as Arc<dyn LoadedModel>)
    })
}

fn host(names: Vec<&'static str>, max_loaded: usize) -> (ModelHost, Arc<AtomicUsize>) {
    let loads = Arc::new(AtomicUsize::new(0));
    let host = ModelHost::new(
        Arc::new(Names(names)),
        fake_loader(Arc::clone(&loads)),
        HostConfig { max_loaded },
    );
    (host, loads)
}

#[tokio::test]
async fn loads_on_first_use_then_reuses() {
    let (host, loads) = host(vec!["a"], 1);
    let first = host.get("a").await.unwrap();
    let second = host.get("a").await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(first.name, "a");
    assert!(first.template.is_fallback, "the fake has no template");
}

#[tokio::test]
async fn unknown_names_are_not_found_and_never_loaded() {
    let (host, loads) = host(vec!["a"], 1);
    assert!(matches!(host.get("nope").await, Err(HostError::NotFound(n)) if n == "nope"));
    assert_eq!(loads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failed_load_is_reported_and_can_be_retried() {
    let (host, loads) = host(vec!["broken"], 1);
    assert!(matches!(host.get("broken").await, Err(HostError::Load(_))));
    assert!(matches!(host.get("broken").await, Err(HostError::Load(_))));
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "a failure must not stick as 'loading'"
    );
    assert!(!host.is_loading());
}

#[tokio::test]
async fn least_recently_used_is_evicted_at_the_limit() {
    let (host, loads) = host(vec!["a", "b"], 1);
    let a = host.get("a").await.unwrap();
    host.get("b").await.unwrap();
    let a_again = host.get("a").await.unwrap();
    assert!(!Arc::ptr_eq(&a, &a_again), "a was evicted and reloaded");
    assert_eq!(loads.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_a_load_get_loading() {
    let (release, gate) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let loader: Arc<Loader> = Arc::new(move |_: &Path| {
        started_tx.send(()).ok();
        gate.lock().unwrap().recv().ok();
        Ok(Arc::new(FakeModel::new("ok", 64)) as Arc<dyn LoadedModel>)
    });
    let host = Arc::new(ModelHost::new(
        Arc::new(Names(vec!["a"])),
        loader,
        HostConfig::default(),
    ));
    let first = tokio::spawn({
        let host = Arc::clone(&host);
        async move { host.get("a").await.map(|r| r.name.clone()) }
    });
    tokio::task::spawn_blocking(move || started.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(host.is_loading());
    assert!(matches!(host.get("a").await, Err(HostError::Loading(_))));
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), "a");
    assert!(host.get("a").await.is_ok());
}
