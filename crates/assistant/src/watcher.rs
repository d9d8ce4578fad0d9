//! Keeping the store fresh while the server runs: every watch is scanned
//! at start, then notify's events mark watches dirty and each is rescanned
//! once its folder has been quiet for a moment. Watches added or removed
//! by the CLI meanwhile are picked up from the database. Knows nothing of
//! models: `changed` tells the caller which watch moved.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};

use crate::extract::Limits;
use crate::store::{Store, Watch};
use crate::{scan, AssistantError};

/// Quiet time after a change before its folder is rescanned: an editor's
/// save is several events.
const SETTLE: Duration = Duration::from_millis(300);
/// How often the list of watches is read again.
const RELOAD: Duration = Duration::from_secs(2);

/// The running watcher; dropping it stops the thread at its next tick.
#[derive(Debug)]
pub struct Watching {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Start watching every watch in the database at `db`; `changed` is called
/// with a watch's name after each scan that changed its records.
pub fn start(
    db: PathBuf,
    limits: Limits,
    changed: impl Fn(&str) + Send + 'static,
) -> Result<Watching, AssistantError> {
    let store = Store::open(&db)?;
    let (events_tx, events) = mpsc::channel();
    let notifier = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = events_tx.send(event.paths);
        }
    })
    .map_err(|e| AssistantError::Watcher(e.to_string()))?;
    let (stop, stopped) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("shelf-watch".into())
        .spawn(move || {
            let mut state = State {
                store,
                notifier,
                limits,
                roots: HashMap::new(),
                dirty: BTreeSet::new(),
            };
            state.run(&events, &stopped, &changed);
        })?;
    Ok(Watching {
        stop,
        thread: Some(thread),
    })
}

struct State {
    store: Store,
    notifier: notify::RecommendedWatcher,
    limits: Limits,
    /// Watched roots by watch name.
    roots: HashMap<String, PathBuf>,
    dirty: BTreeSet<String>,
}

impl State {
    fn run(
        &mut self,
        events: &mpsc::Receiver<Vec<PathBuf>>,
        stopped: &mpsc::Receiver<()>,
        changed: &impl Fn(&str),
    ) {
        let mut reloaded = Instant::now() - RELOAD;
        loop {
            if !matches!(stopped.try_recv(), Err(mpsc::TryRecvError::Empty)) {
                return;
            }
            if reloaded.elapsed() >= RELOAD {
                self.reload();
                reloaded = Instant::now();
            }
            let wait = if self.dirty.is_empty() {
                RELOAD
            } else {
                SETTLE
            };
            match events.recv_timeout(wait) {
                Ok(paths) => self.mark(&paths),
                // Quiet: rescan what changed.
                Err(RecvTimeoutError::Timeout) => self.rescan(changed),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Follow the database's list of watches: new ones are watched and
    /// scanned, removed ones let go.
    fn reload(&mut self) {
        let Ok(watches) = self.store.watches() else {
            return;
        };
        let current: HashMap<String, PathBuf> =
            watches.into_iter().map(|w| (w.name, w.root)).collect();
        for (name, root) in &self.roots {
            if current.get(name) != Some(root) {
                let _ = self.notifier.unwatch(root);
            }
        }
        for (name, root) in &current {
            if self.roots.get(name) != Some(root) {
                if let Err(e) = self.notifier.watch(root, RecursiveMode::Recursive) {
                    tracing::warn!(watch = %name, error = %e, "cannot watch the folder for changes");
                }
                self.dirty.insert(name.clone());
            }
        }
        self.roots = current;
    }

    fn mark(&mut self, paths: &[PathBuf]) {
        for path in paths {
            if let Some(name) = self.owner(path) {
                self.dirty.insert(name);
            }
        }
    }

    fn owner(&self, path: &Path) -> Option<String> {
        self.roots
            .iter()
            .filter(|(_, root)| path.starts_with(root))
            .max_by_key(|(_, root)| root.as_os_str().len())
            .map(|(name, _)| name.clone())
    }

    fn rescan(&mut self, changed: &impl Fn(&str)) {
        for name in std::mem::take(&mut self.dirty) {
            let Some(root) = self.roots.get(&name) else {
                continue;
            };
            let watch = Watch {
                name: name.clone(),
                root: root.clone(),
                model: None,
            };
            match scan(&self.store, &watch, &self.limits) {
                Ok(scanned) if scanned.read + scanned.forgotten > 0 => {
                    tracing::info!(watch = %name, read = scanned.read, forgotten = scanned.forgotten, "rescanned");
                    changed(&name);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(watch = %name, error = %e, "rescan failed"),
            }
        }
    }
}
