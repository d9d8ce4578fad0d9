//! Pulls against the loopback mock registry, with faults injected. The
//! files are small generated GGUFs; `crates/shelf/tests/pull.rs` pulls a real
//! model and runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shelf_pull::{pull, PullError, PullOptions, Quiet};
use shelf_store::{ModelName, Store};
use shelf_testregistry::{Faults, MockRegistry};

/// A valid GGUF of about `size` bytes: one long string of metadata.
fn gguf(size: usize, seed: u8) -> Bytes {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    let key = b"general.description";
    bytes.extend((key.len() as u64).to_le_bytes());
    bytes.extend(key);
    bytes.extend(8u32.to_le_bytes());
    let text: Vec<u8> = (0..size)
        .map(|i| b'a' + ((i * 7 + seed as usize) % 26) as u8)
        .collect();
    bytes.extend((text.len() as u64).to_le_bytes());
    bytes.extend(text);
    Bytes::from(bytes)
}

fn options(registry: &MockRegistry) -> PullOptions {
    PullOptions {
        hf_endpoint: registry.url(),
        insecure: true,
        chunk_size: 1 << 20,
        connections: 4,
        stall_timeout: Duration::from_secs(10),
        ..PullOptions::default()
    }
}

fn name(text: &str) -> ModelName {
    ModelName::parse(text).unwrap()
}

async fn run(
    store: &Store,
    model: &str,
    options: &PullOptions,
) -> Result<shelf_store::ModelEntry, PullError> {
    pull(store, &name(model), options, Arc::new(Quiet)).await
}

/// An empty store in a temp directory (kept alive by the returned guard).
fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    (dir, store)
}

/// A registry with one GGUF in `acme/Tiny` as `tiny-Q4_0.gguf`, serving with `faults`.
fn one_hf_file(size: usize, seed: u8, faults: Faults) -> (MockRegistry, Bytes) {
    let registry = MockRegistry::start();
    let file = gguf(size, seed);
    registry.add_hf_file("acme/Tiny", "tiny-Q4_0.gguf", file.clone());
    registry.set_faults(faults);
    (registry, file)
}

fn dir_is_empty(path: &Path) -> bool {
    std::fs::read_dir(path).map_or(true, |mut d| d.next().is_none())
}

fn nothing_landed(store: &Store) -> bool {
    let (entries, _) = store.list().unwrap();
    entries.is_empty() && dir_is_empty(&store.root().join("blobs"))
}

#[tokio::test]
async fn hugging_face_quant_is_chosen_verified_and_stored() {
    let registry = MockRegistry::start();
    let wanted = gguf(5 << 20, 1);
    registry.add_hf_file("acme/Tiny-GGUF", "tiny-Q4_K_M.gguf", wanted.clone());
    registry.add_hf_file("acme/Tiny-GGUF", "tiny-Q8_0.gguf", gguf(1000, 2));
    registry.add_hf_file("acme/Tiny-GGUF", "README.md", Bytes::from_static(b"# hi"));
    let (_dir, store) = temp_store();

    let entry = run(&store, "hf.co/acme/Tiny-GGUF:q4_k_m", &options(&registry))
        .await
        .unwrap();
    assert_eq!(entry.name.to_string(), "hf.co/acme/Tiny-GGUF:Q4_K_M");
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), wanted);
    assert_eq!(
        registry.bytes_served(),
        wanted.len() as u64,
        "each byte once"
    );
    let ranged = registry
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /cdn/"))
        .count();
    assert!(
        ranged >= 5,
        "a 5 MiB file in 1 MiB ranges: {ranged} requests"
    );

    // Pulling again downloads nothing.
    registry.reset_counters();
    run(&store, "hf.co/acme/Tiny-GGUF:Q4_K_M", &options(&registry))
        .await
        .unwrap();
    assert_eq!(registry.bytes_served(), 0);
}

#[tokio::test]
async fn hugging_face_split_files_come_in_full() {
    let registry = MockRegistry::start();
    let parts = [gguf(3000, 3), gguf(2000, 4), gguf(1000, 5)];
    for (i, part) in parts.iter().enumerate() {
        let file = format!("big-Q8_0-{:05}-of-00003.gguf", i + 1);
        registry.add_hf_file("acme/Big", &format!("Q8_0/{file}"), part.clone());
    }
    let (_dir, store) = temp_store();
    let entry = run(&store, "hf.co/acme/Big:Q8_0", &options(&registry))
        .await
        .unwrap();
    let got: Vec<Vec<u8>> = entry
        .files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(got, parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
}

#[tokio::test]
async fn hugging_face_file_names_and_gated_repositories() {
    let registry = MockRegistry::start();
    let file = gguf(4000, 6);
    registry.add_hf_file("acme/Gated", "model.Q4_1.gguf", file.clone());
    registry.gate("acme/Gated", "secret");
    let (_dir, store) = temp_store();

    let err = run(
        &store,
        "hf.co/acme/Gated/model.Q4_1.gguf",
        &options(&registry),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");
    let wrong = PullOptions {
        hf_token: Some("wrong".into()),
        ..options(&registry)
    };
    let err = run(&store, "hf.co/acme/Gated/model.Q4_1.gguf", &wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused"), "{err}");
    assert!(nothing_landed(&store));

    let right = PullOptions {
        hf_token: Some("secret".into()),
        ..options(&registry)
    };
    let entry = run(&store, "hf.co/acme/Gated/model.Q4_1.gguf", &right)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), file);
}

#[tokio::test]
async fn missing_models_and_quants_are_clear_errors() {
    let registry = MockRegistry::start();
    registry.add_hf_file("acme/Tiny", "tiny-Q4_0.gguf", gguf(100, 7));
    let (_dir, store) = temp_store();
    let opts = options(&registry);
    let cases = [
        ("hf.co/acme/Nope:Q4_0", "not found"),
        ("hf.co/acme/Tiny:Q5_K_M", "tiny-Q4_0.gguf"),
        ("hf.co/acme/Tiny/other.gguf", "not found"),
    ];
    for (model, fragment) in cases {
        let err = run(&store, model, &opts).await.unwrap_err().to_string();
        assert!(err.contains(fragment), "{model}: {err}");
    }
    let host = registry.host();
    let err = run(&store, &format!("{host}/library/nope:1b"), &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found") && err.contains("nope"), "{err}");
    assert!(nothing_landed(&store));
}

#[tokio::test]
async fn ollama_registry_keeps_the_manifest_and_every_layer() {
    let registry = MockRegistry::start();
    let model = gguf(3 << 20, 8);
    let params = Bytes::from_static(br#"{"stop":["<|im_end|>"]}"#);
    registry.add_ollama_model(
        "library/tiny:1b",
        model.clone(),
        &[("application/vnd.ollama.image.params", params)],
    );
    let (_dir, store) = temp_store();
    let host = registry.host();
    let entry = run(
        &store,
        &format!("{host}/library/tiny:1b"),
        &options(&registry),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), model);
    assert_eq!(entry.manifest.layers.len(), 2);
    assert!(entry.manifest.config.is_some());
    for blob in entry.manifest.blobs() {
        let digest = shelf_store::Digest::parse(&blob.digest).unwrap();
        assert!(store.has_blob(&digest), "{}", blob.digest);
    }
    // Without --insecure the same name means https, which this server does not speak.
    let secure = PullOptions {
        insecure: false,
        ..options(&registry)
    };
    let err = run(&store, &format!("{host}/library/tiny:1b"), &secure)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Connection { .. }), "{err}");
}

#[tokio::test]
async fn a_wrong_digest_is_refused_and_nothing_lands() {
    let registry = MockRegistry::start();
    registry.add_hf_file("acme/Tiny", "tiny-Q4_0.gguf", gguf(2 << 20, 9));
    registry.add_ollama_model("library/tiny:1b", gguf(2 << 20, 10), &[]);
    registry.set_faults(Faults {
        corrupt: true,
        ..Faults::default()
    });
    let (_dir, store) = temp_store();
    for model in [
        "hf.co/acme/Tiny:Q4_0".to_string(),
        format!("{}/library/tiny:1b", registry.host()),
    ] {
        let err = run(&store, &model, &options(&registry)).await.unwrap_err();
        assert!(
            matches!(err, PullError::DigestMismatch { .. }),
            "{model}: {err}"
        );
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    }
    assert!(nothing_landed(&store));
    let leftovers: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_dropped_connection_is_resumed_within_the_range() {
    let (registry, file) = one_hf_file(
        4 << 20,
        11,
        Faults {
            drop_after: Some(1_500_000),
            ..Faults::default()
        },
    );
    let (_dir, store) = temp_store();
    let entry = run(&store, "hf.co/acme/Tiny:Q4_0", &options(&registry))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), file);
    assert_eq!(
        registry.bytes_served(),
        file.len() as u64,
        "no byte fetched twice"
    );
}

#[tokio::test]
async fn an_interrupted_pull_resumes_with_only_the_missing_bytes() {
    let registry = MockRegistry::start();
    let file = gguf(6 << 20, 12);
    registry.add_hf_file("acme/Tiny", "tiny-Q4_0.gguf", file.clone());
    let served_before_stall = 2_500_000;
    registry.set_faults(Faults {
        hang_after: Some(served_before_stall),
        ..Faults::default()
    });
    let (_dir, store) = temp_store();
    let impatient = PullOptions {
        stall_timeout: Duration::from_millis(500),
        retries: 0,
        ..options(&registry)
    };
    let err = run(&store, "hf.co/acme/Tiny:Q4_0", &impatient)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Stalled { .. }), "{err}");
    assert!(nothing_landed(&store), "nothing partial is visible");

    registry.set_faults(Faults::default());
    registry.reset_counters();
    let entry = run(&store, "hf.co/acme/Tiny:Q4_0", &options(&registry))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), file);
    assert_eq!(
        registry.bytes_served(),
        file.len() as u64 - served_before_stall
    );
}

#[tokio::test]
async fn a_slow_server_still_delivers() {
    let (registry, file) = one_hf_file(
        150_000,
        13,
        Faults {
            bytes_per_sec: Some(300_000),
            ..Faults::default()
        },
    );
    let (_dir, store) = temp_store();
    let opts = PullOptions {
        stall_timeout: Duration::from_secs(2),
        ..options(&registry)
    };
    let entry = run(&store, "hf.co/acme/Tiny:Q4_0", &opts).await.unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), file);
}

#[tokio::test]
async fn a_server_without_ranges_gets_one_stream() {
    let (registry, file) = one_hf_file(
        3 << 20,
        14,
        Faults {
            ignore_ranges: true,
            ..Faults::default()
        },
    );
    let (_dir, store) = temp_store();
    let entry = run(&store, "hf.co/acme/Tiny:Q4_0", &options(&registry))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), file);
}

#[tokio::test]
async fn a_non_gguf_model_layer_is_refused() {
    let registry = MockRegistry::start();
    registry.add_ollama_model(
        "library/junk:1",
        Bytes::from_static(b"<html>not a model</html>"),
        &[],
    );
    let (_dir, store) = temp_store();
    let err = run(
        &store,
        &format!("{}/library/junk:1", registry.host()),
        &options(&registry),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a usable GGUF"), "{err}");
    assert!(store.list().unwrap().0.is_empty());
}

#[tokio::test]
async fn a_sparse_hub_still_works() {
    let registry = MockRegistry::start();
    let file = gguf(3 << 20, 15);
    registry.add_hf_file("acme/Sparse", "sparse-Q4_0.gguf", file.clone());
    // No tree API, no sizes or digests in the listing, no HEAD: the size comes
    // from a one-byte range request.
    registry.set_faults(Faults {
        no_tree: true,
        no_head: true,
        ..Faults::default()
    });
    let (_dir, store) = temp_store();
    let entry = run(&store, "hf.co/acme/Sparse:Q4_0", &options(&registry))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), file);
}

#[tokio::test]
async fn a_tree_listed_one_level_at_a_time_is_walked() {
    let registry = MockRegistry::start();
    let parts = [gguf(3000, 16), gguf(2000, 17)];
    for (i, part) in parts.iter().enumerate() {
        let file = format!("Q8_0/big-Q8_0-{:05}-of-00002.gguf", i + 1);
        registry.add_hf_file("acme/Nested", &file, part.clone());
    }
    registry.add_hf_file("acme/Nested", "big-Q4_0.gguf", gguf(1000, 18));
    registry.set_faults(Faults {
        flat_tree: true,
        ..Faults::default()
    });
    let (_dir, store) = temp_store();
    let entry = run(&store, "hf.co/acme/Nested:q8_0", &options(&registry))
        .await
        .unwrap();
    assert_eq!(entry.files.len(), 2);
    assert_eq!(std::fs::read(&entry.files[1]).unwrap(), parts[1]);
}

#[tokio::test]
async fn a_registry_that_wants_an_anonymous_token_gets_one() {
    let registry = MockRegistry::start();
    let model = gguf(2 << 20, 19);
    registry.add_ollama_model("team/tiny:1", model.clone(), &[]);
    registry.set_faults(Faults {
        token_auth: true,
        ..Faults::default()
    });
    let (_dir, store) = temp_store();
    let name = format!("{}/team/tiny:1", registry.host());
    let entry = run(&store, &name, &options(&registry)).await.unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), model);
    let requests = registry.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /token")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.contains("/blobs/"))
            .all(|r| r.ends_with("auth=yes")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_missing_config_layer_is_skipped_but_missing_weights_are_not() {
    let registry = MockRegistry::start();
    let model = gguf(1 << 20, 20);
    registry.add_ollama_model("library/tiny:1", model.clone(), &[]);
    registry.remove_blob(&shelf_testregistry::sha256_hex(
        br#"{"model_format":"gguf"}"#,
    ));
    let (_dir, store) = temp_store();
    let host = registry.host();
    let entry = run(
        &store,
        &format!("{host}/library/tiny:1"),
        &options(&registry),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&entry.files[0]).unwrap(), model);

    registry.add_ollama_model("library/gone:1", gguf(1 << 20, 21), &[]);
    registry.remove_blob(&shelf_testregistry::sha256_hex(&gguf(1 << 20, 21)));
    let err = run(
        &store,
        &format!("{host}/library/gone:1"),
        &options(&registry),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PullError::NotFound(_)), "{err}");
}
