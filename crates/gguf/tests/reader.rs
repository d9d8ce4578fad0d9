//! The reader against hand-built files: good ones parse, hostile ones fail cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use shelf_gguf::{Gguf, GgufError, Value};

/// Builds a GGUF v3 file byte by byte.
struct Builder {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<u8>,
    n_tensors: u64,
    data: u64,
}

impl Builder {
    fn new() -> Self {
        Self {
            kv: vec![],
            n_kv: 0,
            tensors: vec![],
            n_tensors: 0,
            data: 0,
        }
    }
    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }
    fn kv_str(mut self, key: &str, value: &str) -> Self {
        Self::string(&mut self.kv, key);
        self.kv.extend(8u32.to_le_bytes());
        Self::string(&mut self.kv, value);
        self.n_kv += 1;
        self
    }
    fn kv_u32(mut self, key: &str, value: u32) -> Self {
        Self::string(&mut self.kv, key);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend(value.to_le_bytes());
        self.n_kv += 1;
        self
    }
    /// An F32 tensor of `n` elements, placed after the previous one.
    fn tensor(mut self, name: &str, n: u64) -> Self {
        Self::string(&mut self.tensors, name);
        self.tensors.extend(1u32.to_le_bytes());
        self.tensors.extend(n.to_le_bytes());
        self.tensors.extend(0u32.to_le_bytes());
        self.tensors.extend(self.data.to_le_bytes());
        self.data += (n * 4).div_ceil(32) * 32;
        self.n_tensors += 1;
        self
    }
    fn build(self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(self.kv);
        out.extend(self.tensors);
        out.resize(out.len().div_ceil(32) * 32, 0);
        out.resize(out.len() + self.data as usize, 0);
        out
    }
}

fn sample() -> Vec<u8> {
    Builder::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.context_length", 2048)
        .tensor("a", 64)
        .tensor("b", 8)
        .build()
}

fn error_of(bytes: &[u8]) -> String {
    match Gguf::parse_bytes(bytes) {
        Ok(g) => panic!("expected an error, parsed {g:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_well_formed_file_parses() {
    let g = Gguf::parse_bytes(&sample()).unwrap();
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.get("llama.context_length"), Some(&Value::U32(2048)));
    assert_eq!(g.tensors.len(), 2);
    assert_eq!(g.parameter_count(), 72);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    for len in 0..bytes.len() {
        let result = Gguf::parse_bytes(&bytes[..len]);
        assert!(
            result.is_err(),
            "a file cut to {len} of {} bytes parsed",
            bytes.len()
        );
    }
}

#[test]
fn not_gguf() {
    assert!(error_of(b"PK\x03\x04 this is a zip").contains("not a GGUF file"));
    assert!(error_of(b"").contains("not a GGUF file"));
}

#[test]
fn bad_version() {
    let mut bytes = sample();
    bytes[4..8].copy_from_slice(&99u32.to_le_bytes());
    assert!(error_of(&bytes).contains("unsupported GGUF version 99"));
}

#[test]
fn huge_counts_fail_before_allocating() {
    let mut bytes = sample();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(error_of(&bytes).contains("metadata count"));
    let mut bytes = sample();
    bytes[8..16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(error_of(&bytes).contains("tensor count"));
}

#[test]
fn huge_string_fails_before_allocating() {
    let mut bytes = sample();
    // The first key's length field starts right after the header.
    bytes[24..32].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    assert!(error_of(&bytes).contains("truncated"));
}

#[test]
fn wrong_metadata_type() {
    let mut bytes = sample();
    let type_at = 24 + 8 + "general.architecture".len();
    bytes[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
    assert!(error_of(&bytes).contains("unknown metadata type 77"));
}

#[test]
fn open_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("half.gguf");
    let bytes = sample();
    std::fs::write(&path, &bytes[..bytes.len() - 16]).unwrap();
    let err = Gguf::open(&path).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("half.gguf"), "{err}");
}
