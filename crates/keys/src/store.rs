//! The key database: schema, writes from the CLI, and the server's cached
//! view that reloads when another process changes the file.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};
use subtle::ConstantTimeEq;

use crate::{hash, new_secret, valid_name, Check, KeyError, KeyInfo, NewKey, Refusal, Scope};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
  id           INTEGER PRIMARY KEY,
  name         TEXT    NOT NULL,
  hash         BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
  scopes       TEXT    NOT NULL,
  models       TEXT    NOT NULL DEFAULT '',
  rpm          INTEGER,
  tpm          INTEGER,
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER,
  last_used_at INTEGER,
  revoked_at   INTEGER
) STRICT;
-- A name is reused only after its key is revoked; revoked rows stay, so
-- revoking the last key never quietly reopens the server.
CREATE UNIQUE INDEX IF NOT EXISTS keys_live_name ON keys(name) WHERE revoked_at IS NULL;
";

/// Open (creating if needed) the database with a private folder and file.
fn open(path: &Path, busy: Duration) -> Result<Connection, KeyError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            restrict(dir, 0o700)?;
        }
    }
    let fresh = !path.exists();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    if fresh {
        restrict(path, 0o600)?;
    }
    conn.busy_timeout(busy)?;
    // WAL: the server's reads never wait on the CLI's writes.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(KeyError::Schema(version));
    }
    conn.execute_batch(SCHEMA)?;
    if version < SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(conn)
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

fn read_all(conn: &Connection) -> Result<Vec<(KeyInfo, [u8; 32])>, KeyError> {
    let mut statement = conn.prepare(
        "SELECT id, name, hash, scopes, models, rpm, tpm, created_at, expires_at, last_used_at, revoked_at
         FROM keys ORDER BY id",
    )?;
    let rows = statement.query_map([], |row| {
        let hash: Vec<u8> = row.get(2)?;
        let scopes: String = row.get(3)?;
        let models: String = row.get(4)?;
        let info = KeyInfo {
            id: row.get(0)?,
            name: row.get(1)?,
            scopes: scopes.split(',').filter_map(Scope::parse).collect(),
            models: models
                .split('\n')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect(),
            rpm: row.get(5)?,
            tpm: row.get(6)?,
            created_at: row.get(7)?,
            expires_at: row.get(8)?,
            last_used_at: row.get(9)?,
            revoked_at: row.get(10)?,
        };
        Ok((info, hash))
    })?;
    let mut keys = Vec::new();
    for row in rows {
        let (info, stored) = row?;
        // The CHECK constraint makes every stored hash 32 bytes.
        let mut hash = [0u8; 32];
        if stored.len() == 32 {
            hash.copy_from_slice(&stored);
            keys.push((info, hash));
        }
    }
    Ok(keys)
}

/// The database as the `shelf keys` commands use it.
#[derive(Debug)]
pub struct KeyStore {
    conn: Connection,
}

impl KeyStore {
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        Ok(Self {
            conn: open(path, Duration::from_secs(5))?,
        })
    }

    /// Store a new key and return its secret: the only time it exists.
    pub fn create(&self, key: &NewKey, now: i64) -> Result<String, KeyError> {
        if !valid_name(&key.name) {
            return Err(KeyError::BadName);
        }
        let mut scopes = if key.scopes.is_empty() {
            vec![Scope::Chat, Scope::Embed]
        } else {
            key.scopes.clone()
        };
        scopes.sort();
        scopes.dedup();
        let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        let secret = new_secret()?;
        let inserted = self.conn.execute(
            "INSERT INTO keys (name, hash, scopes, models, rpm, tpm, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                key.name,
                hash(&secret).as_slice(),
                scopes.join(","),
                key.models.join("\n"),
                key.rpm,
                key.tpm,
                now,
                key.expires_at
            ],
        );
        match inserted {
            Ok(_) => Ok(secret),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(KeyError::NameTaken(key.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(read_all(&self.conn)?.into_iter().map(|(k, _)| k).collect())
    }

    /// Revoke the live key called `name`; false if there is none.
    pub fn revoke(&self, name: &str, now: i64) -> Result<bool, KeyError> {
        let changed = self.conn.execute(
            "UPDATE keys SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
            params![now, name],
        )?;
        Ok(changed > 0)
    }
}

/// Every stored key with its hash.
type KeySet = Vec<(Arc<KeyInfo>, [u8; 32])>;

struct Cached {
    /// `PRAGMA data_version` when the keys were read: it moves when another
    /// connection commits, and only then.
    version: i64,
    keys: Arc<KeySet>,
}

/// The server's view of the database: keys cached in memory, re-read on the
/// first request after any other process changes the file, so a revocation
/// counts from the next request without a restart.
pub struct Verifier {
    conn: Mutex<Connection>,
    cache: RwLock<Cached>,
    /// Last uses to write, by a thread of its own: a write may wait on the
    /// CLI's lock, and the request path must not.
    uses: Option<SyncSender<(i64, i64)>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

/// How often a key's last use is written back, at most.
const LAST_USE_GRANULARITY: i64 = 1;

impl Verifier {
    /// Open the database, creating it (empty: the server stays open) if
    /// missing, so a key created later is seen without a restart.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let conn = open(path, Duration::from_millis(200))?;
        let cached = Cached {
            version: data_version(&conn)?,
            keys: Arc::new(load(&conn)?),
        };
        let writes = open(path, Duration::from_secs(5))?;
        let (uses, received) = std::sync::mpsc::sync_channel(1024);
        let writer = std::thread::Builder::new()
            .name("key-use".into())
            .spawn(move || write_uses(&writes, &received))?;
        Ok(Self {
            conn: Mutex::new(conn),
            cache: RwLock::new(cached),
            uses: Some(uses),
            writer: Some(writer),
        })
    }

    /// Whether any key exists (revoked ones count: the server stays closed).
    pub fn closed(&self) -> bool {
        !self.current().is_empty()
    }

    /// Who `presented` belongs to. The hash of the presented key is compared
    /// with every stored hash in constant time, matched or not.
    pub fn check(&self, presented: Option<&str>, now: i64) -> Check {
        let keys = self.current();
        if keys.is_empty() {
            return Check::Open;
        }
        let Some(presented) = presented else {
            return Check::Refused(Refusal::Missing);
        };
        let wanted = hash(presented);
        let mut found: Option<&Arc<KeyInfo>> = None;
        for (info, stored) in keys.iter() {
            let equal: bool = stored.ct_eq(&wanted).into();
            if equal {
                found = Some(info);
            }
        }
        let Some(info) = found else {
            return Check::Refused(Refusal::Invalid);
        };
        if info.revoked_at.is_some() {
            return Check::Refused(Refusal::Revoked);
        }
        if info.expires_at.is_some_and(|at| at <= now) {
            return Check::Refused(Refusal::Expired);
        }
        if info
            .last_used_at
            .is_none_or(|at| now - at >= LAST_USE_GRANULARITY)
        {
            self.touch(info.id, now);
        }
        Check::Granted(Arc::clone(info))
    }

    /// The cached keys, re-read first if the file changed.
    fn current(&self) -> Arc<KeySet> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let cached_version = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version;
        match data_version(&conn) {
            Ok(version) if version != cached_version => match load(&conn) {
                Ok(keys) => {
                    let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                    *cache = Cached {
                        version,
                        keys: Arc::new(keys),
                    };
                }
                // Keep serving with the last good set; a busy writer
                // finishes in milliseconds and the next request retries.
                Err(error) => tracing::warn!(%error, "could not re-read the key database"),
            },
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not check the key database"),
        }
        drop(conn);
        Arc::clone(
            &self
                .cache
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .keys,
        )
    }

    /// Note a key's last use, written by the writer thread. Its commit
    /// moves `data_version`, so the next request reloads the keys with it.
    fn touch(&self, id: i64, now: i64) {
        if let Some(uses) = &self.uses {
            let _ = uses.try_send((id, now));
        }
    }
}

impl Drop for Verifier {
    /// Write the last uses still queued.
    fn drop(&mut self) {
        drop(self.uses.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Write last uses as they come, several in one transaction.
fn write_uses(conn: &Connection, uses: &Receiver<(i64, i64)>) {
    while let Ok(first) = uses.recv() {
        let mut latest = std::collections::HashMap::new();
        for (id, at) in std::iter::once(first).chain(uses.try_iter()) {
            latest.insert(id, at);
        }
        let written = conn.execute_batch("BEGIN").and_then(|()| {
            for (id, at) in &latest {
                conn.execute(
                    "UPDATE keys SET last_used_at = ?1 WHERE id = ?2",
                    params![at, id],
                )?;
            }
            conn.execute_batch("COMMIT")
        });
        if let Err(error) = written {
            let _ = conn.execute_batch("ROLLBACK");
            tracing::debug!(%error, "could not record keys' last use");
        }
    }
}

fn data_version(conn: &Connection) -> Result<i64, KeyError> {
    Ok(conn.pragma_query_value(None, "data_version", |r| r.get(0))?)
}

fn load(conn: &Connection) -> Result<KeySet, KeyError> {
    Ok(read_all(conn)?
        .into_iter()
        .map(|(info, hash)| (Arc::new(info), hash))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> NewKey {
        NewKey {
            name: name.into(),
            scopes: vec![],
            models: vec![],
            rpm: None,
            tpm: None,
            expires_at: None,
        }
    }

    #[test]
    fn an_empty_database_leaves_the_server_open() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = Verifier::open(&dir.path().join("keys.db")).unwrap();
        assert!(matches!(verifier.check(None, 0), Check::Open));
        assert!(matches!(verifier.check(Some("none"), 0), Check::Open));
    }

    #[test]
    fn keys_created_and_revoked_elsewhere_count_from_the_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("keys.db");
        let verifier = Verifier::open(&path).unwrap();
        let store = KeyStore::open(&path).unwrap();
        let secret = store.create(&key("ci"), 100).unwrap();
        let Check::Granted(info) = verifier.check(Some(&secret), 101) else {
            panic!("the new key was refused");
        };
        assert_eq!(info.name, "ci");
        assert_eq!(info.scopes, vec![Scope::Chat, Scope::Embed]);
        assert!(matches!(
            verifier.check(Some("shelf_wrong"), 101),
            Check::Refused(Refusal::Invalid)
        ));
        assert!(matches!(
            verifier.check(None, 101),
            Check::Refused(Refusal::Missing)
        ));
        assert!(store.revoke("ci", 102).unwrap());
        assert!(!store.revoke("ci", 102).unwrap());
        assert!(matches!(
            verifier.check(Some(&secret), 103),
            Check::Refused(Refusal::Revoked)
        ));
        // Revoking the last key does not reopen the server.
        assert!(matches!(
            verifier.check(None, 103),
            Check::Refused(Refusal::Missing)
        ));
    }

    #[test]
    fn expired_keys_are_refused_and_names_are_unique_while_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let store = KeyStore::open(&path).unwrap();
        let mut short = key("short");
        short.expires_at = Some(50);
        let secret = store.create(&short, 10).unwrap();
        assert!(matches!(
            store.create(&key("short"), 11),
            Err(KeyError::NameTaken(_))
        ));
        let verifier = Verifier::open(&path).unwrap();
        assert!(matches!(
            verifier.check(Some(&secret), 49),
            Check::Granted(_)
        ));
        assert!(matches!(
            verifier.check(Some(&secret), 50),
            Check::Refused(Refusal::Expired)
        ));
        store.revoke("short", 60).unwrap();
        store.create(&key("short"), 61).unwrap();
    }

    #[test]
    fn last_use_is_written_back_and_secrets_never_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let store = KeyStore::open(&path).unwrap();
        let secret = store.create(&key("ci"), 10).unwrap();
        let verifier = Verifier::open(&path).unwrap();
        assert!(matches!(
            verifier.check(Some(&secret), 20),
            Check::Granted(_)
        ));
        // Dropping the verifier writes what its thread still holds.
        drop(verifier);
        let listed = store.list().unwrap();
        assert_eq!(listed[0].last_used_at, Some(20));
        drop(store);
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        let body = &secret[crate::SECRET_PREFIX.len()..];
        for window in [body, &body[..12], &body[body.len() - 12..]] {
            assert!(!bytes.windows(window.len()).any(|w| w == window.as_bytes()));
        }
    }
}
