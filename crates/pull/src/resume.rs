//! The resume file beside a partial download: how many bytes of each range
//! are in the partial file.
//!
//! Each range's counter is rewritten in place (an 8-byte `pwrite`) right
//! after the bytes it counts are written, so the page cache holds an exact
//! account even when the process is killed with `kill -9`. A power cut may
//! lose that ordering; the sha256 check at the end catches what it breaks.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"SHELFRS1";
const HEADER: u64 = 32;

/// What a resume file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Saved {
    pub size: u64,
    pub chunk: u64,
    pub done: Vec<u64>,
}

/// An open resume file.
pub(crate) struct ResumeFile {
    file: File,
}

impl ResumeFile {
    /// Read a resume file; `None` if it is missing or not one.
    pub fn read(path: &Path) -> Option<Saved> {
        let bytes = fs::read(path).ok()?;
        let word = |i: usize| -> Option<u64> {
            let slice = bytes.get(i * 8..i * 8 + 8)?;
            Some(u64::from_le_bytes(slice.try_into().ok()?))
        };
        if bytes.get(..8)? != MAGIC {
            return None;
        }
        let (size, chunk, ranges) = (word(1)?, word(2)?, word(3)?);
        let ranges = usize::try_from(ranges).ok()?;
        if bytes.len() as u64 != HEADER + 8 * ranges as u64 {
            return None;
        }
        let done = (0..ranges)
            .map(|i| word(4 + i))
            .collect::<Option<Vec<u64>>>()?;
        Some(Saved { size, chunk, done })
    }

    /// Write a fresh resume file holding `saved`.
    pub fn create(path: &Path, saved: &Saved) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut bytes = MAGIC.to_vec();
        for word in [saved.size, saved.chunk, saved.done.len() as u64] {
            bytes.extend(word.to_le_bytes());
        }
        for done in &saved.done {
            bytes.extend(done.to_le_bytes());
        }
        file.write_all_at(&bytes, 0)?;
        Ok(Self { file })
    }

    /// Record that range `index` now has `done` bytes on disk.
    pub fn record(&self, index: usize, done: u64) -> io::Result<()> {
        self.file
            .write_all_at(&done.to_le_bytes(), HEADER + 8 * index as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_in_place_updates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.resume");
        let saved = Saved {
            size: 100,
            chunk: 40,
            done: vec![40, 7, 0],
        };
        let file = ResumeFile::create(&path, &saved).unwrap();
        assert_eq!(ResumeFile::read(&path), Some(saved.clone()));
        file.record(2, 19).unwrap();
        let read = ResumeFile::read(&path).unwrap();
        assert_eq!(read.done, [40, 7, 19]);
        std::fs::write(&path, b"SHELFRS1 short").unwrap();
        assert_eq!(ResumeFile::read(&path), None);
    }
}
