//! Model facts of the real test models, against what llama.cpp prints for them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use shelf_gguf::Gguf;
use shelf_testmodels::{path, GEMMA3, QWEN_05B, SMOLLM2};

#[test]
fn shapes_of_the_test_models() {
    // (model, arch, layers, embd, heads, kv heads, head dim, vocab, ctx, swa layers)
    let cases = [
        (SMOLLM2, "llama", 30, 576, 9, 3, 64, 49152, 8192, 0),
        (GEMMA3, "gemma3", 18, 640, 4, 1, 256, 262144, 32768, 15),
        (QWEN_05B, "qwen2", 24, 896, 14, 2, 64, 151936, 32768, 0),
    ];
    for (model, arch, layers, embd, heads, kv, head_dim, vocab, ctx, swa) in cases {
        let facts = Gguf::open(&path(model)).unwrap().facts();
        assert_eq!(facts.architecture, arch, "{model}");
        assert_eq!(
            (facts.layers, facts.embedding, facts.heads, facts.kv_heads),
            (layers, embd, heads, kv),
            "{model}"
        );
        assert_eq!(
            (facts.head_dim_k, facts.head_dim_v),
            (head_dim, head_dim),
            "{model}"
        );
        assert_eq!((facts.vocab, facts.context_length), (vocab, ctx), "{model}");
        assert_eq!(facts.sliding_window_layers, swa, "{model}");
        assert_eq!(facts.experts, 0);
        let by_type: u64 = facts.bytes_by_type.iter().map(|(_, b)| b).sum();
        assert_eq!(by_type, facts.tensor_bytes);
        assert!(
            facts.token_embedding_bytes > 0 && facts.token_embedding_bytes < facts.tensor_bytes
        );
    }
}
