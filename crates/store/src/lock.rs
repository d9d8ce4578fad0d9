//! Lock files that work across processes and across boxes sharing one store
//! over NFS or SMB, where `flock` cannot be trusted.
//!
//! A lock is a file created with `O_EXCL`. Its holder touches it every
//! [`HEARTBEAT`]; a lock is stale when its holder is a dead process on this
//! host, or when it has not been touched for [`STALE_AFTER`] (a crashed box).
//! Breaking a stale lock renames it aside first, so of two processes that
//! both see it stale, only one removes it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How often a holder touches its lock.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long an untouched lock stays valid.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Who holds a lock; written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Unique per lock taken, so a lock renamed aside can be told apart from a new one.
    pub token: String,
    /// Seconds since the Unix epoch when the lock was taken.
    #[serde(default)]
    pub started: u64,
    /// Free-form: what the holder is doing (a pull lists its digests here).
    #[serde(default)]
    pub note: Vec<String>,
}

impl Holder {
    fn new(note: Vec<String>) -> Self {
        Self {
            host: host_name(),
            pid: std::process::id(),
            token: crate::fsutil::temp_name(&host_name()),
            started: unix_now(),
            note,
        }
    }
}

/// A held lock; removed on drop.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    token: String,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<thread::JoinHandle<()>>,
}

impl LockFile {
    /// Take the lock at `path` if nobody holds it; `Ok(None)` if somebody does.
    pub fn try_acquire(path: &Path, note: Vec<String>) -> io::Result<Option<Self>> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let holder = Holder::new(note);
        let mut file = match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(e),
        };
        let json = serde_json::to_vec(&holder).map_err(io::Error::other)?;
        file.write_all(&json)?;
        file.sync_all()?;
        let (stop, heartbeat) = start_heartbeat(path.to_path_buf());
        Ok(Some(Self {
            path: path.to_path_buf(),
            token: holder.token,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        }))
    }

    /// The lock's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
        // Only remove the file if it is still ours: a lock broken as stale
        // while we stalled may have a new holder by now.
        if read_holder(&self.path).is_some_and(|h| h.token == self.token) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn start_heartbeat(path: PathBuf) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let handle = thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
            if let Ok(file) = File::options().write(true).open(&path) {
                let _ = file.set_modified(SystemTime::now());
            }
        }
    });
    (stop, handle)
}

/// The holder written in a lock file, if it can be read.
pub fn read_holder(path: &Path) -> Option<Holder> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether the lock at `path` exists and is still held by a live holder.
pub fn is_live(path: &Path) -> bool {
    path.exists() && !is_stale(path)
}

/// Whether the lock at `path` exists but its holder is gone.
pub fn is_stale(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    let untouched = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age > STALE_AFTER);
    if untouched {
        return true;
    }
    match read_holder(path) {
        Some(holder) => holder.host == host_name() && !process_alive(holder.pid),
        // Being written right now, or garbage: let the age decide.
        None => false,
    }
}

/// Remove the lock at `path` if it is stale. Returns whether it was removed.
pub fn break_if_stale(path: &Path) -> io::Result<bool> {
    if !is_stale(path) {
        return Ok(false);
    }
    let seen = read_holder(path);
    let aside = path.with_extension(format!("stale-{}", crate::fsutil::temp_name("lock")));
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let moved = read_holder(&aside);
    if moved.is_some() && moved != seen {
        // Someone broke the stale lock and took a fresh one between our check
        // and our rename: put theirs back unless yet another appeared.
        let _ = fs::hard_link(&aside, path);
        let _ = fs::remove_file(&aside);
        return Ok(false);
    }
    fs::remove_file(&aside)?;
    Ok(true)
}

/// Every lock file directly in `dir` with a live holder.
pub fn live_holders(dir: &Path) -> io::Result<Vec<Holder>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut holders = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "lock") && !is_stale(&path) {
            holders.extend(read_holder(&path));
        }
    }
    Ok(holders)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn host_name() -> String {
    #[cfg(unix)]
    {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }
    #[cfg(not(unix))]
    {
        String::from("localhost")
    }
}

fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Some(pid) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        // EPERM means it exists but belongs to someone else.
        match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e != rustix::io::Errno::SRCH,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = LockFile::try_acquire(&path, vec![]).unwrap().unwrap();
        assert!(LockFile::try_acquire(&path, vec![]).unwrap().is_none());
        assert!(is_live(&path));
        assert!(!break_if_stale(&path).unwrap());
        drop(first);
        assert!(!path.exists());
        assert!(LockFile::try_acquire(&path, vec![]).unwrap().is_some());
    }

    #[test]
    fn dead_holder_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let holder = Holder {
            host: host_name(),
            pid: dead_pid,
            token: "t".into(),
            started: 0,
            note: vec![],
        };
        fs::write(&path, serde_json::to_vec(&holder).unwrap()).unwrap();
        assert!(is_stale(&path));
        assert!(live_holders(dir.path()).unwrap().is_empty());
        assert!(break_if_stale(&path).unwrap());
        assert!(LockFile::try_acquire(&path, vec![]).unwrap().is_some());
    }

    #[test]
    fn untouched_lock_from_another_host_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let holder = Holder {
            host: "elsewhere".into(),
            pid: 1,
            token: "t".into(),
            started: 0,
            note: vec![],
        };
        fs::write(&path, serde_json::to_vec(&holder).unwrap()).unwrap();
        assert!(!is_stale(&path), "fresh lock of another host");
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(1);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(is_stale(&path));
    }
}
