//! Conversations kept on the box: the assistant's exchanges and the web
//! chat's, each owned by the API key that made it (or by nobody when keys
//! are off), searchable by full text, exported as Markdown. Knows nothing
//! of HTTP or keys beyond an owner's number.

use std::fmt::Write as _;

use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{fts_query, Store};
use crate::AssistantError;

/// Longest title kept; longer ones are cut at a character boundary.
const TITLE_CHARS: usize = 200;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
    /// What the client keeps beside the text (reasoning, tool calls,
    /// timings), as it sent it.
    pub extra: Option<Value>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: None,
        }
    }
}

/// A conversation's settings: on creation every one, on a change only those
/// given (an empty string clears `model` or `system`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub title: Option<String>,
    pub model: Option<String>,
    pub system: Option<String>,
    pub temperature: Option<f64>,
}

/// A whole conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub id: i64,
    pub title: String,
    pub model: Option<String>,
    pub system: Option<String>,
    pub temperature: Option<f64>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
    pub messages: Vec<Message>,
}

/// A conversation in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub id: i64,
    pub title: String,
    pub model: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub messages: u64,
    /// Around the matched words, when listed by a search.
    pub snippet: Option<String>,
}

impl Store {
    /// A new conversation of `owner`'s; returns its id.
    pub fn create_conversation(
        &self,
        owner: Option<i64>,
        settings: &Settings,
        messages: &[Message],
    ) -> Result<i64, AssistantError> {
        let title = settings
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(short)
            .unwrap_or_else(|| title_from(messages));
        let mut conn = self.db();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO conversations (owner, title, model, system, temperature, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, unixepoch(), unixepoch())",
            params![
                owner,
                title,
                cleared(&settings.model),
                cleared(&settings.system),
                settings.temperature
            ],
        )?;
        let id = tx.last_insert_rowid();
        insert_messages(&tx, id, messages)?;
        refresh(&tx, id)?;
        tx.commit()?;
        Ok(id)
    }

    /// `owner`'s conversation `id`, with its messages.
    pub fn conversation(
        &self,
        owner: Option<i64>,
        id: i64,
    ) -> Result<Option<Conversation>, AssistantError> {
        let conn = self.db();
        let found = conn
            .query_row(
                "SELECT id, title, model, system, temperature, created_at, updated_at
                 FROM conversations WHERE id = ?1 AND owner IS ?2",
                params![id, owner],
                |r| {
                    Ok(Conversation {
                        id: r.get(0)?,
                        title: r.get(1)?,
                        model: r.get(2)?,
                        system: r.get(3)?,
                        temperature: r.get(4)?,
                        created_at: r.get(5)?,
                        updated_at: r.get(6)?,
                        messages: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut conversation) = found else {
            return Ok(None);
        };
        conversation.messages = messages_of(&conn, id)?;
        Ok(Some(conversation))
    }

    /// `owner`'s conversations, the latest first; with a query, only those
    /// whose title or messages match it, best first.
    pub fn conversations(
        &self,
        owner: Option<i64>,
        query: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Summary>, AssistantError> {
        let conn = self.db();
        let summary = |r: &rusqlite::Row<'_>| {
            let messages: i64 = r.get(5)?;
            Ok(Summary {
                id: r.get(0)?,
                title: r.get(1)?,
                model: r.get(2)?,
                created_at: r.get(3)?,
                updated_at: r.get(4)?,
                messages: messages as u64,
                snippet: r.get(6)?,
            })
        };
        const COLUMNS: &str = "c.id, c.title, c.model, c.created_at, c.updated_at,
            (SELECT count(*) FROM messages m WHERE m.conversation = c.id)";
        let rows = match query.map(fts_query) {
            None => {
                let mut statement = conn.prepare(&format!(
                    "SELECT {COLUMNS}, NULL FROM conversations c WHERE c.owner IS ?1
                     ORDER BY c.updated_at DESC, c.id DESC LIMIT ?2"
                ))?;
                let rows = statement.query_map(params![owner, limit as i64], summary)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            Some(None) => Vec::new(),
            Some(Some(matching)) => {
                let mut statement = conn.prepare(&format!(
                    "SELECT {COLUMNS}, snippet(conversations_fts, 1, '', '', ' … ', 16)
                     FROM conversations_fts JOIN conversations c ON c.id = conversations_fts.rowid
                     WHERE conversations_fts MATCH ?1 AND c.owner IS ?2
                     ORDER BY bm25(conversations_fts, 2.0, 1.0) LIMIT ?3"
                ))?;
                let rows = statement.query_map(params![matching, owner, limit as i64], summary)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    /// Change the settings given, and replace the messages when given.
    /// `false`: `owner` has no such conversation.
    pub fn update_conversation(
        &self,
        owner: Option<i64>,
        id: i64,
        settings: &Settings,
        messages: Option<&[Message]>,
    ) -> Result<bool, AssistantError> {
        let mut conn = self.db();
        let tx = conn.transaction()?;
        if !owns(&tx, owner, id)? {
            return Ok(false);
        }
        if let Some(title) = settings.title.as_deref().map(str::trim) {
            let title = if title.is_empty() {
                title_from(&messages_of(&tx, id)?)
            } else {
                short(title)
            };
            tx.execute(
                "UPDATE conversations SET title = ?2 WHERE id = ?1",
                params![id, title],
            )?;
        }
        if settings.model.is_some() {
            tx.execute(
                "UPDATE conversations SET model = ?2 WHERE id = ?1",
                params![id, cleared(&settings.model)],
            )?;
        }
        if settings.system.is_some() {
            tx.execute(
                "UPDATE conversations SET system = ?2 WHERE id = ?1",
                params![id, cleared(&settings.system)],
            )?;
        }
        if let Some(temperature) = settings.temperature {
            tx.execute(
                "UPDATE conversations SET temperature = ?2 WHERE id = ?1",
                params![id, temperature],
            )?;
        }
        if let Some(messages) = messages {
            tx.execute("DELETE FROM messages WHERE conversation = ?1", [id])?;
            insert_messages(&tx, id, messages)?;
        }
        refresh(&tx, id)?;
        tx.commit()?;
        Ok(true)
    }

    /// Add messages at the end. `false`: no such conversation of `owner`'s.
    pub fn append_messages(
        &self,
        owner: Option<i64>,
        id: i64,
        messages: &[Message],
    ) -> Result<bool, AssistantError> {
        let mut conn = self.db();
        let tx = conn.transaction()?;
        if !owns(&tx, owner, id)? {
            return Ok(false);
        }
        insert_messages(&tx, id, messages)?;
        refresh(&tx, id)?;
        tx.commit()?;
        Ok(true)
    }

    /// Delete a conversation, its messages and its index row. `false`: no
    /// such conversation of `owner`'s.
    pub fn delete_conversation(&self, owner: Option<i64>, id: i64) -> Result<bool, AssistantError> {
        let mut conn = self.db();
        let tx = conn.transaction()?;
        if !owns(&tx, owner, id)? {
            return Ok(false);
        }
        tx.execute("DELETE FROM conversations_fts WHERE rowid = ?1", [id])?;
        tx.execute("DELETE FROM conversations WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(true)
    }

    /// The conversation of `owner`'s whose messages so far are exactly
    /// `messages`: a client that sends the whole history each turn (as the
    /// OpenAI and Ollama APIs do) continues it rather than starting another.
    pub fn continued(
        &self,
        owner: Option<i64>,
        messages: &[Message],
    ) -> Result<Option<i64>, AssistantError> {
        Ok(self
            .db()
            .query_row(
                "SELECT id FROM conversations WHERE owner IS ?1 AND head = ?2
                 ORDER BY updated_at DESC LIMIT 1",
                params![owner, head(messages)],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// A conversation as Markdown: its title, then each turn under its role.
pub fn to_markdown(conversation: &Conversation) -> String {
    let mut out = format!("# {}\n\n", conversation.title);
    if let Some(model) = &conversation.model {
        let _ = writeln!(out, "Model: {model}\n");
    }
    if let Some(system) = &conversation.system {
        let _ = writeln!(out, "## System\n\n{system}\n");
    }
    for message in &conversation.messages {
        let mut role = message.role.clone();
        if let Some(first) = role.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        let _ = writeln!(out, "## {role}\n\n{}\n", message.content.trim_end());
    }
    out
}

fn owns(conn: &rusqlite::Connection, owner: Option<i64>, id: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM conversations WHERE id = ?1 AND owner IS ?2",
        params![id, owner],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

fn insert_messages(
    conn: &rusqlite::Connection,
    id: i64,
    messages: &[Message],
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare(
        "INSERT INTO messages (conversation, role, content, extra, created_at)
         VALUES (?1, ?2, ?3, ?4, unixepoch())",
    )?;
    for message in messages {
        let extra = message.extra.as_ref().map(Value::to_string);
        statement.execute(params![id, message.role, message.content, extra])?;
    }
    Ok(())
}

fn messages_of(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<Vec<Message>> {
    let mut statement = conn
        .prepare("SELECT role, content, extra FROM messages WHERE conversation = ?1 ORDER BY id")?;
    let rows = statement.query_map([id], |r| {
        let extra: Option<String> = r.get(2)?;
        Ok(Message {
            role: r.get(0)?,
            content: r.get(1)?,
            extra: extra.and_then(|e| serde_json::from_str(&e).ok()),
        })
    })?;
    rows.collect()
}

/// After any change: the time, the head hash and the search row.
fn refresh(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<()> {
    let messages = messages_of(conn, id)?;
    conn.execute(
        "UPDATE conversations SET updated_at = unixepoch(), head = ?2 WHERE id = ?1",
        params![id, head(&messages)],
    )?;
    let body: String = messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    conn.execute("DELETE FROM conversations_fts WHERE rowid = ?1", [id])?;
    conn.execute(
        "INSERT INTO conversations_fts (rowid, title, body)
         SELECT id, title, ?2 FROM conversations WHERE id = ?1",
        params![id, body],
    )?;
    Ok(())
}

/// A hash of the messages' roles and texts, in order.
fn head(messages: &[Message]) -> String {
    let mut hash = Sha256::new();
    for message in messages {
        for part in [&message.role, &message.content] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
    }
    format!("{:x}", hash.finalize())
}

/// A title from the first user message, or "New conversation".
fn title_from(messages: &[Message]) -> String {
    messages
        .iter()
        .find(|m| m.role == "user")
        .map(|m| m.content.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .map(|t| short(&t))
        .unwrap_or_else(|| "New conversation".to_owned())
}

fn short(title: &str) -> String {
    title.chars().take(TITLE_CHARS).collect()
}

/// `Some("")` means "none".
fn cleared(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
