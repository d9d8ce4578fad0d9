//! The model host: entries for loaded (and loading) models, their slot
//! queues, admission against the budget, eviction and keep-alive.
//!
//! All bookkeeping lives in one `Models` value behind one mutex, held only
//! for short, non-blocking updates: loads, unloads, catalog calls and timers
//! run in their own tasks and take the lock to record what they did. A
//! model's slots are a FIFO semaphore; requests waiting on it are counted
//! so the queue stays bounded and the model counts as busy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use shelf_engine::template::ChatTemplate;
use shelf_engine::{EngineError, LoadedModel};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
// The runtime's clock, so tests can pause and advance it.
use tokio::time::Instant;

use crate::catalog::bounded;
use crate::{
    Catalog, HostConfig, HostError, KeepAlive, LoadPlan, Loader, ModelCost, ModelCounts,
    ModelStatus, Resident, Resolution, Sizer,
};

/// A runner that dies while requests wait is restarted this many times for them.
const CRASH_RETRIES: usize = 2;

/// Owns the set of resident models.
pub struct ModelHost {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Arc<dyn Catalog>,
    loader: Arc<Loader>,
    sizer: Arc<Sizer>,
    config: HostConfig,
    models: Mutex<Models>,
    /// Woken whenever memory may have become available: a model went idle,
    /// an unload finished, an entry went away.
    capacity: Notify,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Models {
    entries: HashMap<String, Entry>,
    /// Bytes of models being unloaded: still held until they are gone.
    freeing: u64,
    /// Models being unloaded: their processes still exist.
    freeing_models: usize,
    counts: HashMap<String, ModelCounts>,
}

/// One loaded or loading model.
struct Entry {
    /// Tells an entry apart from a later one under the same name.
    id: u64,
    /// `None` while loading.
    resident: Option<Arc<Resident>>,
    bytes: u64,
    slots: u32,
    /// Whether its bytes are counted against the budget (after admission).
    admitted: bool,
    permits: Arc<Semaphore>,
    /// Why the entry ended, for requests still waiting on its permits.
    failure: Arc<Mutex<Option<HostError>>>,
    queued: usize,
    busy: usize,
    last_used: Instant,
    /// Bumped whenever the model goes idle, so a stale keep-alive timer
    /// does nothing.
    idle_epoch: u64,
    unloads_at: Option<Instant>,
    pinned: bool,
    /// The pending keep-alive unload, if any: one per entry at a time.
    timer: Option<tokio::task::AbortHandle>,
    /// The last request's own keep-alive (Ollama's `keep_alive`), which
    /// replaces the server's for this model from then on.
    keep_alive: Option<KeepAlive>,
    /// Dropped with the entry: stops its crash watcher.
    _gone: Option<oneshot::Sender<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

impl Entry {
    fn idle(&self) -> bool {
        self.busy == 0 && self.queued == 0 && self.resident.is_some()
    }

    fn evictable(&self) -> bool {
        self.idle() && !self.pinned
    }
}

/// A slot of a loaded model, held while a request uses it.
pub struct Lease {
    resident: Arc<Resident>,
    waited: Duration,
    _release: Release,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    pub fn resident(&self) -> &Arc<Resident> {
        &self.resident
    }

    /// From now on, keep the model this long after its last request (a
    /// request's own `keep_alive`, as Ollama's API sets it).
    pub fn keep_alive(&self, keep_alive: KeepAlive) {
        let release = &self._release;
        let mut models = release.inner.lock();
        if let Some(entry) = models.entry_with(&release.name, release.id) {
            entry.keep_alive = Some(keep_alive);
        }
    }

    /// How long the request waited for its slot (and for a load).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// Gives a slot's bookkeeping back when a lease ends.
struct Release {
    inner: Arc<Inner>,
    name: String,
    id: u64,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut models = self.inner.lock();
        if let Some(entry) = models.entry_with(&self.name, self.id) {
            entry.busy = entry.busy.saturating_sub(1);
            entry.last_used = Instant::now();
        }
        self.inner.maybe_idle(&mut models, &self.name, self.id);
    }
}

/// A place in a model's queue.
struct Ticket {
    inner: Arc<Inner>,
    name: String,
    id: u64,
    permits: Arc<Semaphore>,
    failure: Arc<Mutex<Option<HostError>>>,
    /// Cleared once the place became a lease or the entry ended.
    holding: bool,
}

impl Drop for Ticket {
    /// A request that leaves the queue (its client went away) no longer counts.
    fn drop(&mut self) {
        if !self.holding {
            return;
        }
        let mut models = self.inner.lock();
        if let Some(entry) = models.entry_with(&self.name, self.id) {
            entry.queued = entry.queued.saturating_sub(1);
        }
        self.inner.maybe_idle(&mut models, &self.name, self.id);
    }
}

impl ModelHost {
    /// A host with nothing loaded.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        loader: Arc<Loader>,
        sizer: Arc<Sizer>,
        config: HostConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                loader,
                sizer,
                config,
                models: Mutex::default(),
                capacity: Notify::new(),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Model names the catalog offers.
    pub async fn list(&self) -> Result<Vec<String>, HostError> {
        let catalog = Arc::clone(&self.inner.catalog);
        bounded(move || catalog.list()).await
    }

    /// The file behind `name`, without loading it.
    pub async fn path(&self, name: &str) -> Result<std::path::PathBuf, HostError> {
        let catalog = Arc::clone(&self.inner.catalog);
        let wanted = name.to_string();
        match bounded(move || catalog.resolve(&wanted)).await? {
            Resolution::Ready(path) => Ok(path),
            Resolution::Missing => Err(HostError::NotFound(name.to_string())),
            Resolution::Preparing(status) => Err(HostError::Preparing(status)),
        }
    }

    /// Whether any model is loading now.
    pub fn is_loading(&self) -> bool {
        self.inner
            .lock()
            .entries
            .values()
            .any(|e| e.resident.is_none())
    }

    /// A slot of `name`, loading the model if needed; waits behind earlier
    /// requests for it.
    pub async fn acquire(&self, name: &str) -> Result<Lease, HostError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let ticket = self.enter(name).await?;
            match ticket.wait(started).await {
                Err(HostError::Crashed { .. }) if attempt < CRASH_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    /// Load `name` now and keep it (a pinned model named at start-up).
    pub async fn preload(&self, name: &str) -> Result<(), HostError> {
        self.acquire(name).await.map(drop)
    }

    /// Every model held now, loading or loaded, by name.
    pub fn status(&self) -> Vec<ModelStatus> {
        let models = self.inner.lock();
        let now = Instant::now();
        let mut list: Vec<ModelStatus> = models
            .entries
            .iter()
            .map(|(name, e)| ModelStatus {
                name: name.clone(),
                bytes: e.bytes,
                slots: e.slots,
                context_length: e.resident.as_ref().map(|r| r.model.info().n_ctx),
                busy: e.busy as u32,
                queued: e.queued as u32,
                loading: e.resident.is_none(),
                pinned: e.pinned,
                unloads_in: e
                    .unloads_at
                    .filter(|_| e.idle())
                    .map(|at| at.saturating_duration_since(now)),
                pid: e.resident.as_ref().and_then(|r| r.model.pid()),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Lifetime counts by model name.
    pub fn counts(&self) -> Vec<(String, ModelCounts)> {
        let models = self.inner.lock();
        let mut list: Vec<_> = models.counts.iter().map(|(n, c)| (n.clone(), *c)).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// The budget, and the bytes held now (loaded, loading once admitted,
    /// and being unloaded).
    pub fn memory(&self) -> (u64, u64) {
        let models = self.inner.lock();
        (self.inner.config.budget, models.used())
    }

    /// Unload everything (at shutdown), waiting until it is gone.
    pub async fn unload_all(&self) {
        let residents: Vec<Arc<Resident>> = {
            let mut models = self.inner.lock();
            let names: Vec<String> = models.entries.keys().cloned().collect();
            names
                .iter()
                .filter_map(|name| models.entries.remove(name))
                .filter_map(|entry| {
                    entry.permits.close();
                    entry.resident.clone()
                })
                .collect()
        };
        for resident in residents {
            let model = Arc::clone(&resident.model);
            drop(resident);
            model.unload().await;
        }
    }

    /// Join the queue of `name`, creating its entry (and starting its load)
    /// if it has none.
    async fn enter(&self, name: &str) -> Result<Ticket, HostError> {
        if let Some(ticket) = self.inner.join(name)? {
            return Ok(ticket);
        }
        let catalog = Arc::clone(&self.inner.catalog);
        let wanted = name.to_string();
        let path = match bounded(move || catalog.resolve(&wanted)).await? {
            Resolution::Ready(path) => path,
            Resolution::Missing => return Err(HostError::NotFound(name.to_string())),
            Resolution::Preparing(status) => return Err(HostError::Preparing(status)),
        };
        let sizer = Arc::clone(&self.inner.sizer);
        let sized_path = path.clone();
        let cost = tokio::task::spawn_blocking(move || sizer(&sized_path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|reason| {
                HostError::Load(EngineError::Load {
                    path: path.clone(),
                    reason,
                })
            })?;
        let inner = &self.inner;
        let mut models = inner.lock();
        if let Some(ticket) = inner.join_locked(&mut models, name)? {
            return Ok(ticket);
        }
        let slots = inner.slots_for(&models, name, &cost)?;
        Ok(inner.create(&mut models, name, path, slots, cost.with_slots(slots)))
    }
}

impl Ticket {
    /// Wait for a slot; FIFO behind earlier requests.
    async fn wait(mut self, started: Instant) -> Result<Lease, HostError> {
        let permit = Arc::clone(&self.permits).acquire_owned().await;
        let mut models = self.inner.lock();
        let permit = match permit {
            Ok(permit) => permit,
            Err(_) => {
                self.holding = false;
                let failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
                return Err(failure
                    .clone()
                    .unwrap_or(HostError::Load(EngineError::Unavailable)));
            }
        };
        let Some(entry) = models.entry_with(&self.name, self.id) else {
            // Ended (a crash) between the permit and now: say why, so a
            // crash is retried.
            self.holding = false;
            let failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            return Err(failure
                .clone()
                .unwrap_or(HostError::Load(EngineError::Unavailable)));
        };
        let Some(resident) = entry.resident.clone() else {
            return Err(HostError::Load(EngineError::Unavailable));
        };
        entry.queued = entry.queued.saturating_sub(1);
        entry.busy += 1;
        entry.unloads_at = None;
        self.holding = false;
        drop(models);
        Ok(Lease {
            resident,
            waited: started.elapsed(),
            _release: Release {
                inner: Arc::clone(&self.inner),
                name: self.name.clone(),
                id: self.id,
            },
            _permit: permit,
        })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Models> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(self: &Arc<Self>, name: &str) -> Result<Option<Ticket>, HostError> {
        let mut models = self.lock();
        self.join_locked(&mut models, name)
    }

    /// A place in the queue of an existing entry, if there is one.
    fn join_locked(
        self: &Arc<Self>,
        models: &mut Models,
        name: &str,
    ) -> Result<Option<Ticket>, HostError> {
        let Some(entry) = models.entries.get_mut(name) else {
            return Ok(None);
        };
        let free = entry.permits.available_permits();
        // Requests that will find a free slot at once are not queued ones.
        if entry.queued >= free + self.config.max_queue {
            return Err(HostError::Overloaded {
                model: name.to_string(),
                queued: entry.queued.saturating_sub(free),
            });
        }
        entry.queued += 1;
        entry.unloads_at = None;
        Ok(Some(self.ticket(name, entry)))
    }

    fn ticket(self: &Arc<Self>, name: &str, entry: &Entry) -> Ticket {
        Ticket {
            inner: Arc::clone(self),
            name: name.to_string(),
            id: entry.id,
            permits: Arc::clone(&entry.permits),
            failure: Arc::clone(&entry.failure),
            holding: true,
        }
    }

    /// Slots for a new model: as configured, or as many as fit (up to the
    /// automatic maximum); `TooLarge` if even one never can.
    fn slots_for(&self, models: &Models, name: &str, cost: &ModelCost) -> Result<u32, HostError> {
        let pinned: u64 = models
            .entries
            .iter()
            .filter(|(n, e)| e.pinned && n.as_str() != name)
            .map(|(_, e)| e.bytes)
            .sum();
        let available = self.config.budget.saturating_sub(pinned);
        let fits = |slots: u32| cost.with_slots(slots) <= available;
        let slots = match self.config.slots {
            Some(slots) => slots.max(1),
            None => (1..=HostConfig::AUTO_MAX_SLOTS)
                .rev()
                .find(|&n| fits(n))
                .unwrap_or(1),
        };
        if !fits(slots) {
            return Err(HostError::TooLarge {
                model: name.to_string(),
                needed: cost.with_slots(slots),
                available,
            });
        }
        Ok(slots)
    }

    /// A new entry for `name`, loading in its own task, with the caller
    /// first in its queue.
    fn create(
        self: &Arc<Self>,
        models: &mut Models,
        name: &str,
        path: PathBuf,
        slots: u32,
        bytes: u64,
    ) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            id,
            resident: None,
            bytes,
            slots,
            admitted: false,
            permits: Arc::new(Semaphore::new(0)),
            failure: Arc::default(),
            queued: 1,
            busy: 0,
            last_used: Instant::now(),
            idle_epoch: 0,
            unloads_at: None,
            pinned: self.config.pinned.iter().any(|p| p == name),
            timer: None,
            keep_alive: None,
            _gone: None,
        };
        let ticket = self.ticket(name, &entry);
        models.entries.insert(name.to_string(), entry);
        let plan = LoadPlan {
            name: name.to_string(),
            path,
            slots,
        };
        tokio::spawn(Arc::clone(self).load(plan, id));
        ticket
    }

    /// Wait for room in the budget, then load.
    async fn load(self: Arc<Self>, plan: LoadPlan, id: u64) {
        if !self.admit(&plan.name, id).await {
            return;
        }
        let loader = Arc::clone(&self.loader);
        let load_plan = plan.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || loader(&load_plan))
            .await
            .unwrap_or_else(|e| {
                Err(EngineError::Load {
                    path: plan.path.clone(),
                    reason: format!("the loader panicked: {e}"),
                })
            });
        match result {
            Ok(model) => {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(model = %plan.name, slots = plan.slots, secs, "model loaded");
                self.loaded(&plan.name, id, model);
            }
            Err(error) => {
                tracing::warn!(model = %plan.name, %error, "model failed to load");
                let mut models = self.lock();
                models
                    .counts
                    .entry(plan.name.clone())
                    .or_default()
                    .load_failures += 1;
                self.end(&mut models, &plan.name, id, HostError::Load(error));
            }
        }
    }

    /// Wait until the entry's bytes fit the budget, unloading idle models
    /// as needed. `false` if the entry went away meanwhile (every request
    /// waiting for it left).
    async fn admit(self: &Arc<Self>, name: &str, id: u64) -> bool {
        loop {
            let notified = self.capacity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut models = self.lock();
                let Some(entry) = models.entry_with(name, id) else {
                    return false;
                };
                if entry.queued == 0 && !entry.pinned {
                    let error = HostError::Load(EngineError::Unavailable);
                    self.end(&mut models, name, id, error);
                    return false;
                }
                if let Some(error) = self.never_fits(&models, name) {
                    self.end(&mut models, name, id, error);
                    return false;
                }
                if self.make_room(&mut models, name) {
                    if let Some(entry) = models.entry_with(name, id) {
                        entry.admitted = true;
                    }
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Whether `name` fits now. When it does not but unloading least
    /// recently used idle models would make room, they are unloaded, and it
    /// fits once they are gone (their bytes count until then, so a new
    /// model never loads beside one still leaving).
    fn make_room(self: &Arc<Self>, models: &mut Models, name: &str) -> bool {
        let Some(bytes) = models.entries.get(name).map(|e| e.bytes) else {
            return false;
        };
        let budget = self.config.budget;
        let max_loaded = self.config.max_loaded.unwrap_or(usize::MAX);
        let fits =
            |used: u64, count: usize| used.saturating_add(bytes) <= budget && count < max_loaded;
        let mut used = models.used();
        let mut count = models.count();
        if fits(used, count) {
            return true;
        }
        let mut idle: Vec<(Instant, String, u64)> = models
            .entries
            .iter()
            .filter(|(n, e)| e.evictable() && n.as_str() != name)
            .map(|(n, e)| (e.last_used, n.clone(), e.bytes))
            .collect();
        idle.sort();
        let mut victims = Vec::new();
        for (_, victim, victim_bytes) in idle {
            if fits(used, count) {
                break;
            }
            used -= victim_bytes;
            count -= 1;
            victims.push(victim);
        }
        if fits(used, count) {
            for victim in victims {
                tracing::info!(model = %victim, "unloading to make room for {name}");
                self.unload(models, &victim);
            }
        }
        false
    }

    /// `TooLarge` when `name` could not fit even with every model that can
    /// be unloaded gone: only pinned ones stay.
    fn never_fits(&self, models: &Models, name: &str) -> Option<HostError> {
        let bytes = models.entries.get(name)?.bytes;
        let pinned = models
            .entries
            .iter()
            .filter(|(n, e)| e.pinned && n.as_str() != name);
        let (pinned_bytes, pinned_count) =
            pinned.fold((0u64, 0usize), |(b, c), (_, e)| (b + e.bytes, c + 1));
        let available = self.config.budget.saturating_sub(pinned_bytes);
        let room_for_one = pinned_count < self.config.max_loaded.unwrap_or(usize::MAX);
        (bytes > available || !room_for_one).then(|| HostError::TooLarge {
            model: name.to_string(),
            needed: bytes,
            available,
        })
    }

    /// Record a finished load: open the slots, watch for a crash.
    fn loaded(self: &Arc<Self>, name: &str, id: u64, model: Arc<dyn LoadedModel>) {
        let mut models = self.lock();
        models.counts.entry(name.to_string()).or_default().loads += 1;
        let Some(entry) = models.entry_with(name, id) else {
            // Gone meanwhile (unload_all at shutdown).
            tokio::spawn(model.unload());
            return;
        };
        let template = template_for(name, model.as_ref());
        let (gone, stopped) = oneshot::channel();
        let ended = model.ended();
        entry.resident = Some(Arc::new(Resident {
            name: name.to_string(),
            model,
            template,
        }));
        entry._gone = Some(gone);
        entry.permits.add_permits(entry.slots as usize);
        self.maybe_idle(&mut models, name, id);
        let inner = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            tokio::select! {
                how = ended => inner.crashed(&name, id, how),
                _ = stopped => {}
            }
        });
    }

    fn crashed(self: &Arc<Self>, name: &str, id: u64, how: String) {
        tracing::warn!(model = %name, runner = %how, "the model's runner died; the next request starts a new one");
        let mut models = self.lock();
        let Some(resident) = models.entry_with(name, id).and_then(|e| e.resident.clone()) else {
            return;
        };
        let bytes = models.entries.get(name).map_or(0, |e| e.bytes);
        models.counts.entry(name.to_string()).or_default().crashes += 1;
        let error = HostError::Crashed {
            model: name.to_string(),
            how,
        };
        self.end(&mut models, name, id, error);
        // What is left of the process may still hold memory: make sure it
        // is gone (killed after a grace) before its bytes are free.
        self.retire(&mut models, resident, bytes);
    }

    /// Remove an entry for good, failing whoever still waits on it.
    fn end(&self, models: &mut Models, name: &str, id: u64, error: HostError) {
        if models.entry_with(name, id).is_none() {
            return;
        }
        if let Some(entry) = models.entries.remove(name) {
            *entry.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
            entry.permits.close();
        }
        self.capacity.notify_waiters();
    }

    /// Take an idle model out and unload it in its own task; its bytes stay
    /// counted until it is gone.
    fn unload(self: &Arc<Self>, models: &mut Models, name: &str) {
        let Some(entry) = models.entries.remove(name) else {
            return;
        };
        entry.permits.close();
        models.counts.entry(name.to_string()).or_default().unloads += 1;
        if let Some(resident) = entry.resident.clone() {
            self.retire(models, resident, entry.bytes);
        }
    }

    /// Unload a model in its own task, its bytes counted until it is gone.
    fn retire(self: &Arc<Self>, models: &mut Models, resident: Arc<Resident>, bytes: u64) {
        models.freeing += bytes;
        models.freeing_models += 1;
        let model = Arc::clone(&resident.model);
        drop(resident);
        let inner = Arc::clone(self);
        spawn(async move {
            model.unload().await;
            let mut models = inner.lock();
            models.freeing -= bytes;
            models.freeing_models -= 1;
            drop(models);
            inner.capacity.notify_waiters();
        });
    }

    /// A model whose last request ended: wake loads waiting for room and
    /// start its keep-alive.
    fn maybe_idle(self: &Arc<Self>, models: &mut Models, name: &str, id: u64) {
        let Some(entry) = models.entry_with(name, id) else {
            return;
        };
        let keep_alive = entry.keep_alive.unwrap_or(self.config.keep_alive);
        if !entry.idle() {
            return;
        }
        entry.idle_epoch += 1;
        let epoch = entry.idle_epoch;
        let pinned = entry.pinned;
        self.capacity.notify_waiters();
        let after = match keep_alive {
            KeepAlive::After(after) if !pinned => after,
            _ => return,
        };
        if after.is_zero() {
            self.unload(models, name);
            return;
        }
        let deadline = Instant::now() + after;
        let inner = Arc::clone(self);
        let timer_name = name.to_string();
        let timer = spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let mut models = inner.lock();
            let still_idle = models
                .entry_with(&timer_name, id)
                .is_some_and(|e| e.idle() && e.idle_epoch == epoch);
            if still_idle {
                tracing::info!(model = %timer_name, "unloading after its keep-alive");
                inner.unload(&mut models, &timer_name);
            }
        });
        if let Some(entry) = models.entry_with(name, id) {
            entry.unloads_at = Some(deadline);
            if let Some(old) = std::mem::replace(&mut entry.timer, timer) {
                old.abort();
            }
        }
    }
}

impl Models {
    fn entry_with(&mut self, name: &str, id: u64) -> Option<&mut Entry> {
        self.entries.get_mut(name).filter(|e| e.id == id)
    }

    /// Models held: admitted entries and unloads in progress.
    fn count(&self) -> usize {
        self.entries.values().filter(|e| e.admitted).count() + self.freeing_models
    }

    /// Bytes held: admitted entries and unloads in progress.
    fn used(&self) -> u64 {
        let admitted: u64 = self
            .entries
            .values()
            .filter(|e| e.admitted)
            .map(|e| e.bytes)
            .sum();
        admitted + self.freeing
    }
}

/// Run `task` on the current runtime. A lease can be dropped where there is
/// none (a process shutting down): then there is nothing left to run it for.
fn spawn(
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> Option<tokio::task::AbortHandle> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    Some(runtime.spawn(task).abort_handle())
}

fn template_for(name: &str, model: &dyn LoadedModel) -> ChatTemplate {
    let info = model.info();
    let own = ChatTemplate::new(
        info.chat_template.as_deref(),
        &info.bos_token,
        &info.eos_token,
    );
    let template = match own {
        Ok(template) => template,
        Err(error) => {
            tracing::warn!(model = %name, %error, "the model's chat template does not parse; using ChatML");
            ChatTemplate::fallback(&info.bos_token, &info.eos_token)
        }
    };
    if template.is_fallback {
        tracing::warn!(model = %name, "the model has no chat template; chat prompts use ChatML");
    }
    template
}
