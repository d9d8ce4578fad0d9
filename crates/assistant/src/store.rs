//! The assistant's database: watched folders, each file's record (size,
//! modification time, hash, extracted text or why it was skipped, digest),
//! and an FTS5 index over paths, text and digests kept in step by triggers;
//! the tables of `vectors` and `conversations` too.
//! Knows nothing of how text is extracted or what a model is.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::AssistantError;

const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS watches (
  name     TEXT    PRIMARY KEY,
  root     TEXT    NOT NULL UNIQUE,
  model    TEXT,
  added_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS files (
  id          INTEGER PRIMARY KEY,
  watch       TEXT    NOT NULL REFERENCES watches(name) ON DELETE CASCADE,
  path        TEXT    NOT NULL,
  size        INTEGER NOT NULL,
  mtime_ns    INTEGER NOT NULL,
  hash        TEXT,
  skipped     TEXT,
  text        TEXT,
  digest      TEXT,
  digest_hash TEXT,
  UNIQUE (watch, path)
) STRICT;
CREATE VIRTUAL TABLE IF NOT EXISTS files_fts USING fts5(
  path, text, digest, content = 'files', content_rowid = 'id', tokenize = 'porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS files_fts_insert AFTER INSERT ON files BEGIN
  INSERT INTO files_fts(rowid, path, text, digest) VALUES (new.id, new.path, new.text, new.digest);
END;
CREATE TRIGGER IF NOT EXISTS files_fts_delete AFTER DELETE ON files BEGIN
  INSERT INTO files_fts(files_fts, rowid, path, text, digest)
    VALUES ('delete', old.id, old.path, old.text, old.digest);
END;
CREATE TRIGGER IF NOT EXISTS files_fts_update AFTER UPDATE ON files BEGIN
  INSERT INTO files_fts(files_fts, rowid, path, text, digest)
    VALUES ('delete', old.id, old.path, old.text, old.digest);
  INSERT INTO files_fts(rowid, path, text, digest) VALUES (new.id, new.path, new.text, new.digest);
END;
CREATE TABLE IF NOT EXISTS vectors (
  file       INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
  part       INTEGER NOT NULL,
  first_line INTEGER NOT NULL,
  last_line  INTEGER NOT NULL,
  model      TEXT    NOT NULL,
  hash       TEXT    NOT NULL,
  vector     BLOB    NOT NULL,
  PRIMARY KEY (file, part)
) STRICT;
CREATE TABLE IF NOT EXISTS conversations (
  id          INTEGER PRIMARY KEY,
  owner       INTEGER,
  title       TEXT    NOT NULL,
  model       TEXT,
  system      TEXT,
  temperature REAL,
  head        TEXT,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS conversations_owner ON conversations (owner, updated_at);
CREATE INDEX IF NOT EXISTS conversations_head ON conversations (head);
CREATE TABLE IF NOT EXISTS messages (
  id           INTEGER PRIMARY KEY,
  conversation INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  role         TEXT    NOT NULL,
  content      TEXT    NOT NULL,
  extra        TEXT,
  created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation, id);
CREATE VIRTUAL TABLE IF NOT EXISTS conversations_fts USING fts5(
  title, body, tokenize = 'porter unicode61'
);
";

/// A watched folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub name: String,
    /// Absolute and canonical: symlinks resolved when it was added.
    pub root: PathBuf,
    /// The model that writes its digests and answers for it, if not the default.
    pub model: Option<String>,
}

/// What the store knows of a file when deciding whether to read it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime_ns: i64,
}

/// A file's new record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Relative to the watch's root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub content: Content,
}

/// What came of reading a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Its text (pages of a PDF separated by form feeds) and the hash of its bytes.
    Text { text: String, hash: String },
    /// Not indexed, and why.
    Skipped(String),
}

/// Per-folder counts for `watch status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStatus {
    pub seen: u64,
    pub indexed: u64,
    pub digested: u64,
    /// Indexed files with vectors of their current text.
    pub embedded: u64,
    /// Indexed files whose digest is missing or older than their text.
    pub queued: u64,
    /// Skipped files with their reasons.
    pub skipped: Vec<(String, String)>,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub watch: String,
    pub path: String,
    /// A short excerpt around the matched words.
    pub snippet: String,
    /// bm25: lower is better.
    pub score: f64,
}

/// An indexed file's text and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub watch: String,
    pub path: String,
    pub text: String,
    /// The hash of `text`: a digest written from it is stored with it.
    pub hash: String,
    pub digest: Option<String>,
}

/// The assistant's database: one connection, shared by whoever holds the
/// store (the server's requests, the watcher has its own).
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Open (creating if needed) the database at `path` in a private folder.
    pub fn open(path: &Path) -> Result<Self, AssistantError> {
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
        Self::setup(conn)
    }

    /// A database in memory, for tests.
    pub fn in_memory() -> Result<Self, AssistantError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(conn: Connection) -> Result<Self, AssistantError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: the server's searches never wait on a scan's writes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(AssistantError::Schema(version));
        }
        conn.execute_batch(SCHEMA)?;
        if version < SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// The connection, for one method's statements.
    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn add_watch(&self, watch: &Watch) -> Result<(), AssistantError> {
        if self.watch(&watch.name)?.is_some() {
            return Err(AssistantError::WatchExists(watch.name.clone()));
        }
        let root = watch.root.to_str().ok_or(AssistantError::NotUtf8)?;
        let taken: Option<String> = self
            .db()
            .query_row("SELECT name FROM watches WHERE root = ?1", [root], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(name) = taken {
            return Err(AssistantError::RootWatched(name));
        }
        self.db().execute(
            "INSERT INTO watches (name, root, model, added_at) VALUES (?1, ?2, ?3, unixepoch())",
            params![watch.name, root, watch.model],
        )?;
        Ok(())
    }

    /// Remove a watch and everything derived from its files.
    pub fn remove_watch(&self, name: &str) -> Result<(), AssistantError> {
        let removed = self
            .db()
            .execute("DELETE FROM watches WHERE name = ?1", [name])?;
        if removed == 0 {
            return Err(AssistantError::NoWatch(name.to_owned()));
        }
        Ok(())
    }

    pub fn watches(&self) -> Result<Vec<Watch>, AssistantError> {
        let conn = self.db();
        let mut statement = conn.prepare("SELECT name, root, model FROM watches ORDER BY name")?;
        let rows = statement.query_map([], watch_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn watch(&self, name: &str) -> Result<Option<Watch>, AssistantError> {
        Ok(self
            .db()
            .query_row(
                "SELECT name, root, model FROM watches WHERE name = ?1",
                [name],
                watch_row,
            )
            .optional()?)
    }

    /// Every file recorded under a watch, with what was seen of it.
    pub fn seen(&self, watch: &str) -> Result<Vec<(String, Seen)>, AssistantError> {
        let conn = self.db();
        let mut statement =
            conn.prepare("SELECT path, size, mtime_ns FROM files WHERE watch = ?1")?;
        let rows = statement.query_map([watch], |r| {
            let size: i64 = r.get(1)?;
            Ok((
                r.get(0)?,
                Seen {
                    size: size as u64,
                    mtime_ns: r.get(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Record a file, replacing what was known of it. Its digest is kept
    /// (marked stale by the hash) until a new one is written.
    pub fn put(&self, watch: &str, file: &FileRecord) -> Result<(), AssistantError> {
        let (hash, skipped, text) = match &file.content {
            Content::Text { text, hash } => (Some(hash.as_str()), None, Some(text.as_str())),
            Content::Skipped(reason) => (None, Some(reason.as_str()), None),
        };
        self.db().execute(
            "INSERT INTO files (watch, path, size, mtime_ns, hash, skipped, text)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (watch, path) DO UPDATE SET size = excluded.size,
               mtime_ns = excluded.mtime_ns, hash = excluded.hash,
               skipped = excluded.skipped, text = excluded.text",
            params![
                watch,
                file.path,
                file.size as i64,
                file.mtime_ns,
                hash,
                skipped,
                text
            ],
        )?;
        Ok(())
    }

    /// Forget a file (deleted, or now ignored).
    pub fn forget(&self, watch: &str, path: &str) -> Result<(), AssistantError> {
        self.db().execute(
            "DELETE FROM files WHERE watch = ?1 AND path = ?2",
            params![watch, path],
        )?;
        Ok(())
    }

    /// Store a digest written from the text whose hash is `hash`.
    pub fn set_digest(
        &self,
        watch: &str,
        path: &str,
        digest: &str,
        hash: &str,
    ) -> Result<(), AssistantError> {
        self.db().execute(
            "UPDATE files SET digest = ?3, digest_hash = ?4 WHERE watch = ?1 AND path = ?2",
            params![watch, path, digest, hash],
        )?;
        Ok(())
    }

    /// Indexed files whose digest is missing or stale, oldest change first.
    pub fn undigested(&self, watch: &str) -> Result<Vec<String>, AssistantError> {
        let conn = self.db();
        let mut statement = conn.prepare(
            "SELECT path FROM files WHERE watch = ?1 AND text IS NOT NULL
               AND (digest_hash IS NULL OR digest_hash != hash) ORDER BY mtime_ns",
        )?;
        let rows = statement.query_map([watch], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Indexed files of a watch under the folder `under` (`""` for all),
    /// at most 500, in order.
    pub fn paths(&self, watch: &str, under: &str) -> Result<Vec<String>, AssistantError> {
        let conn = self.db();
        let mut statement = conn.prepare(
            "SELECT path FROM files WHERE watch = ?1 AND text IS NOT NULL
               AND (?2 = '' OR substr(path, 1, length(?2) + 1) = ?2 || '/')
             ORDER BY path LIMIT 500",
        )?;
        let rows = statement.query_map(params![watch, under], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn document(&self, watch: &str, path: &str) -> Result<Option<Document>, AssistantError> {
        Ok(self
            .db()
            .query_row(
                "SELECT watch, path, text, hash, digest FROM files
                 WHERE watch = ?1 AND path = ?2 AND text IS NOT NULL",
                params![watch, path],
                |r| {
                    Ok(Document {
                        watch: r.get(0)?,
                        path: r.get(1)?,
                        text: r.get(2)?,
                        hash: r.get(3)?,
                        digest: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn status(&self, watch: &str) -> Result<WatchStatus, AssistantError> {
        let (seen, indexed, digested): (i64, i64, i64) = self.db().query_row(
            "SELECT count(*), count(text), count(CASE WHEN digest_hash = hash THEN 1 END)
             FROM files WHERE watch = ?1",
            [watch],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let embedded = self.embedded(watch)?;
        let conn = self.db();
        let mut statement = conn.prepare(
            "SELECT path, skipped FROM files WHERE watch = ?1 AND skipped IS NOT NULL ORDER BY path",
        )?;
        let skipped = statement
            .query_map([watch], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(WatchStatus {
            seen: seen as u64,
            indexed: indexed as u64,
            digested: digested as u64,
            embedded,
            queued: (indexed - digested).max(0) as u64,
            skipped,
        })
    }

    /// Files matching `query`'s words (any of them; more matches rank
    /// higher), in path, text or digest, best first.
    pub fn search(
        &self,
        query: &str,
        watch: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Hit>, AssistantError> {
        let Some(matching) = fts_query(query) else {
            return Ok(Vec::new());
        };
        let conn = self.db();
        let mut statement = conn.prepare(
            "SELECT f.watch, f.path, snippet(files_fts, 1, '', '', ' … ', 16), bm25(files_fts, 2.0, 1.0, 1.0)
             FROM files_fts JOIN files f ON f.id = files_fts.rowid
             WHERE files_fts MATCH ?1 AND (?2 IS NULL OR f.watch = ?2)
             ORDER BY bm25(files_fts, 2.0, 1.0, 1.0) LIMIT ?3",
        )?;
        let rows = statement.query_map(params![matching, watch, limit as i64], |r| {
            Ok(Hit {
                watch: r.get(0)?,
                path: r.get(1)?,
                snippet: r.get(2)?,
                score: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn watch_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Watch> {
    let root: String = r.get(1)?;
    Ok(Watch {
        name: r.get(0)?,
        root: PathBuf::from(root),
        model: r.get(2)?,
    })
}

/// An FTS5 query from free text: each word quoted (so nothing in it is
/// syntax), any of them matching. `None` when
/// there are no words.
pub fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| format!("\"{}\"", w.to_lowercase()))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
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

#[cfg(test)]
mod tests;
