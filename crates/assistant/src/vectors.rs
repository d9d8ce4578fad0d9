//! Embeddings of the indexed files, when an embedding model is configured:
//! each file's text in parts of whole lines, one vector a part, kept with
//! the model's name and the hash of the text it was made from; nearest-part
//! search, and full-text and vector results fused by rank. Knows nothing of
//! how a vector is made.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use crate::store::{Hit, Store};
use crate::AssistantError;

/// Characters of text in one part: about 250 tokens, the window of small
/// sentence-embedding models such as all-MiniLM-L6-v2.
pub const PART_CHARS: usize = 1_000;

/// Reciprocal rank fusion's constant: a hit's share is `1 / (K + rank)`.
const FUSION_K: f64 = 60.0;

/// A part of a document: whole lines, counted from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub first_line: usize,
    pub last_line: usize,
    pub text: String,
}

/// A vector made from a query or a part, and the model that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub model: String,
    pub vector: Vec<f32>,
}

/// `text` in parts of at most about `most` characters, cut at line ends
/// (a longer line is a part of its own; the embedder truncates it).
pub fn parts(text: &str, most: usize) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut current: Option<Part> = None;
    for (i, line) in text.split('\n').enumerate() {
        let number = i + 1;
        match &mut current {
            Some(part) if part.text.len() + line.len() < most => {
                part.text.push('\n');
                part.text.push_str(line);
                part.last_line = number;
            }
            _ => {
                parts.extend(current.take());
                current = Some(Part {
                    first_line: number,
                    last_line: number,
                    text: line.to_owned(),
                });
            }
        }
    }
    parts.extend(current);
    parts.retain(|p| !blank(&p.text));
    parts
}

/// ASCII white space: what the store's `trim` of unembedded texts removes
/// too, so a text the query offers always has a part.
const BLANK: [char; 6] = [' ', '\t', '\n', '\u{b}', '\u{c}', '\r'];

fn blank(text: &str) -> bool {
    text.trim_matches(BLANK).is_empty()
}

/// A file lacking current vectors from a model: its text's parts, and the
/// hash they must be stored against.
#[derive(Debug, Clone)]
pub struct Unembedded {
    pub watch: String,
    pub path: String,
    pub hash: String,
    pub parts: Vec<Part>,
}

impl Store {
    /// The next file with no current vectors from `model`, cut into parts;
    /// `None` when every file is current.
    pub fn next_unembedded(&self, model: &str) -> Result<Option<Unembedded>, AssistantError> {
        for (watch, path) in self.unembedded(model, 8)? {
            // A file may go between the two reads; the next one is tried.
            if let Some(document) = self.document(&watch, &path)? {
                return Ok(Some(Unembedded {
                    parts: parts(&document.text, PART_CHARS),
                    hash: document.hash,
                    watch,
                    path,
                }));
            }
        }
        Ok(None)
    }

    /// The models whose vectors the store holds, most parts first.
    pub fn vector_models(&self) -> Result<Vec<String>, AssistantError> {
        let conn = self.db();
        let mut statement =
            conn.prepare("SELECT model FROM vectors GROUP BY model ORDER BY count(*) DESC, model")?;
        let rows = statement.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Files (watch, path) with text but no current vectors from `model`,
    /// oldest change first.
    pub fn unembedded(
        &self,
        model: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, AssistantError> {
        let conn = self.db();
        let mut statement = conn.prepare(
            "SELECT f.watch, f.path FROM files f
             WHERE f.text IS NOT NULL AND trim(f.text, char(32, 9, 10, 11, 12, 13)) != ''
               AND NOT EXISTS (SELECT 1 FROM vectors v
                               WHERE v.file = f.id AND v.model = ?1 AND v.hash = f.hash)
             ORDER BY f.mtime_ns LIMIT ?2",
        )?;
        let rows =
            statement.query_map(params![model, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replace a file's vectors with those of its parts, made by `model`
    /// from the text whose hash is `hash`. `false` (nothing stored) when the
    /// file is gone or its text changed meanwhile.
    pub fn set_vectors(
        &self,
        watch: &str,
        path: &str,
        hash: &str,
        model: &str,
        parts: &[(Part, Vec<f32>)],
    ) -> Result<bool, AssistantError> {
        let mut conn = self.db();
        let tx = conn.transaction()?;
        let file: Option<i64> = tx
            .query_row(
                "SELECT id FROM files WHERE watch = ?1 AND path = ?2 AND hash = ?3",
                params![watch, path, hash],
                |r| r.get(0),
            )
            .optional()?;
        let Some(file) = file else {
            return Ok(false);
        };
        tx.execute("DELETE FROM vectors WHERE file = ?1", [file])?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO vectors (file, part, first_line, last_line, model, hash, vector)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (i, (part, vector)) in parts.iter().enumerate() {
                insert.execute(params![
                    file,
                    i as i64,
                    part.first_line as i64,
                    part.last_line as i64,
                    model,
                    hash,
                    to_bytes(&normalized(vector))
                ])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// Files whose best part is nearest `query` (cosine), best first, each
    /// with that part's first lines as its snippet.
    pub fn nearest(
        &self,
        query: &Embedding,
        watch: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Hit>, AssistantError> {
        let query_vector = normalized(&query.vector);
        let mut best: HashMap<i64, (f64, usize, usize)> = HashMap::new();
        {
            let conn = self.db();
            let mut statement = conn.prepare(
                "SELECT v.file, v.first_line, v.last_line, v.vector
                 FROM vectors v JOIN files f ON f.id = v.file
                 WHERE v.model = ?1 AND v.hash = f.hash AND (?2 IS NULL OR f.watch = ?2)",
            )?;
            let mut rows = statement.query(params![query.model, watch])?;
            while let Some(row) = rows.next()? {
                let bytes: Vec<u8> = row.get(3)?;
                let Some(similarity) = dot(&query_vector, &bytes) else {
                    continue;
                };
                let file: i64 = row.get(0)?;
                let first: i64 = row.get(1)?;
                let last: i64 = row.get(2)?;
                let entry = best
                    .entry(file)
                    .or_insert((f64::MIN, first as usize, last as usize));
                if similarity > entry.0 {
                    *entry = (similarity, first as usize, last as usize);
                }
            }
        }
        let mut ranked: Vec<(i64, (f64, usize, usize))> = best.into_iter().collect();
        ranked.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        ranked.truncate(limit);
        let conn = self.db();
        let mut hits = Vec::with_capacity(ranked.len());
        for (file, (similarity, first, last)) in ranked {
            let (watch, path, text): (String, String, String) = conn.query_row(
                "SELECT watch, path, text FROM files WHERE id = ?1",
                [file],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            hits.push(Hit {
                watch,
                path,
                snippet: lines(&text, first, last),
                score: -similarity,
            });
        }
        Ok(hits)
    }

    /// Full-text search, fused with nearest-vector search when `query` has
    /// an embedding: each file scores `1/(60 + rank)` in each list it is in,
    /// so one found by both ranks first and one found only by meaning (no
    /// shared words) still comes up.
    pub fn search_with(
        &self,
        text: &str,
        embedding: Option<&Embedding>,
        watch: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Hit>, AssistantError> {
        let Some(embedding) = embedding else {
            return self.search(text, watch, limit);
        };
        let words = self.search(text, watch, limit * 2)?;
        let near = self.nearest(embedding, watch, limit * 2)?;
        let mut fused: Vec<(f64, Hit)> = Vec::new();
        for list in [words, near] {
            for (rank, hit) in list.into_iter().enumerate() {
                let share = 1.0 / (FUSION_K + rank as f64 + 1.0);
                match fused
                    .iter_mut()
                    .find(|(_, h)| h.watch == hit.watch && h.path == hit.path)
                {
                    Some((score, _)) => *score += share,
                    None => fused.push((share, hit)),
                }
            }
        }
        fused.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(fused
            .into_iter()
            .take(limit)
            .map(|(score, hit)| Hit {
                score: -score,
                ..hit
            })
            .collect())
    }

    /// Indexed files of a watch with current vectors (from any model).
    pub fn embedded(&self, watch: &str) -> Result<u64, AssistantError> {
        let count: i64 = self.db().query_row(
            "SELECT count(*) FROM files f WHERE f.watch = ?1
               AND EXISTS (SELECT 1 FROM vectors v WHERE v.file = f.id AND v.hash = f.hash)",
            [watch],
            |r| r.get(0),
        )?;
        Ok(count as u64)
    }
}

/// Lines `first..=last` of `text`, at most 200 characters, on one line.
fn lines(text: &str, first: usize, last: usize) -> String {
    let joined: Vec<&str> = text
        .split('\n')
        .skip(first.saturating_sub(1))
        .take(last + 1 - first.max(1))
        .collect();
    let flat = joined.join(" ").replace('\x0c', " ");
    flat.chars().take(200).collect()
}

fn normalized(vector: &[f32]) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return vector.to_vec();
    }
    vector.iter().map(|x| x / norm).collect()
}

fn to_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The dot product of `query` with a stored vector; `None` when their
/// widths differ.
fn dot(query: &[f32], stored: &[u8]) -> Option<f64> {
    if stored.len() != query.len() * 4 {
        return None;
    }
    Some(
        stored
            .chunks_exact(4)
            .zip(query)
            .map(|(b, q)| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * q))
            .sum(),
    )
}

#[cfg(test)]
mod tests;
