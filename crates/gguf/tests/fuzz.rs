//! Property-based fuzzing of the reader: random bytes, and valid files with
//! random corruption, must give a value or an error, never a panic. Runs as
//! part of the normal test suite, so every CI run is a fuzz smoke run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use proptest::prelude::*;
use shelf_gguf::Gguf;

/// A small valid GGUF v3: a few kinds of metadata and two F32 tensors.
fn valid_file() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(2u64.to_le_bytes());
    out.extend(4u64.to_le_bytes());
    string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    string(&mut out, "llama");
    string(&mut out, "llama.block_count");
    out.extend(4u32.to_le_bytes());
    out.extend(2u32.to_le_bytes());
    string(&mut out, "llama.attention.head_count_kv");
    out.extend(9u32.to_le_bytes());
    out.extend(4u32.to_le_bytes());
    out.extend(2u64.to_le_bytes());
    out.extend(4u32.to_le_bytes());
    out.extend(4u32.to_le_bytes());
    string(&mut out, "tokenizer.ggml.tokens");
    out.extend(9u32.to_le_bytes());
    out.extend(8u32.to_le_bytes());
    out.extend(2u64.to_le_bytes());
    string(&mut out, "a");
    string(&mut out, "b");
    for (name, offset) in [
        ("token_embd.weight", 0u64),
        ("blk.0.ffn_up_exps.weight", 32),
    ] {
        string(&mut out, name);
        out.extend(1u32.to_le_bytes());
        out.extend(8u64.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(offset.to_le_bytes());
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.extend([0u8; 64]);
    out
}

fn parse_all_the_way(bytes: &[u8]) {
    if let Ok(gguf) = Gguf::parse_bytes(bytes) {
        let facts = gguf.facts();
        assert!(facts.tensor_bytes <= bytes.len() as u64);
        let _ = gguf.quantization();
    }
}

#[test]
fn the_valid_file_parses() {
    let gguf = Gguf::parse_bytes(&valid_file()).unwrap();
    let facts = gguf.facts();
    assert_eq!((facts.layers, facts.kv_heads, facts.vocab), (2, 4, 2));
    assert_eq!((facts.token_embedding_bytes, facts.expert_bytes), (32, 32));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_all_the_way(&bytes);
    }

    #[test]
    fn random_bytes_after_the_magic_never_panic(rest in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
        bytes.extend(rest);
        parse_all_the_way(&bytes);
    }

    #[test]
    fn corrupted_valid_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_file();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        parse_all_the_way(&bytes);
        parse_all_the_way(&bytes[..cut.index(bytes.len())]);
    }

    #[test]
    fn huge_counts_and_lengths_are_refused(field in 0usize..4, value in any::<u64>()) {
        // Overwrite a count or length with an arbitrary 64-bit value.
        let offsets = [8usize, 16, 24, 24 + 8 + 20 + 4];
        let mut bytes = valid_file();
        bytes[offsets[field]..offsets[field] + 8].copy_from_slice(&value.to_le_bytes());
        parse_all_the_way(&bytes);
    }
}
