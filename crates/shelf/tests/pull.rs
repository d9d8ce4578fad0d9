//! `shelf pull` end to end: the real binary, a real model, a loopback
//! registry speaking the Hugging Face and Ollama protocols, and faults.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{exclusive, shelf};
use shelf_testmodels::{path, SMOLLM2};
use shelf_testregistry::{sha256_hex, split_gguf, Faults, MockRegistry};

/// SmolLM2 answers this with Paris at temperature 0 (the quickstart's prompt).
const PROMPT: &str = "What is the capital of France? Answer in one sentence.";

fn smollm2() -> Bytes {
    Bytes::from(std::fs::read(path(SMOLLM2)).unwrap())
}

/// `shelf ARGS --models-dir DIR` with `HF_ENDPOINT` pointing at the registry.
fn shelf_in(dir: &Path, registry: &MockRegistry, args: &[&str]) -> Output {
    shelf()
        .args(args)
        .arg("--models-dir")
        .arg(dir)
        .env("HF_ENDPOINT", registry.url())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn answer(dir: &Path, registry: &MockRegistry, model: &str) -> String {
    let args = [
        "run",
        model,
        PROMPT,
        "--temperature",
        "0",
        "--max-tokens",
        "12",
    ];
    ok(&shelf_in(dir, registry, &args))
}

#[test]
fn pull_from_hugging_face_by_quant_then_run() {
    let _guard = exclusive();
    let registry = MockRegistry::start();
    let model = smollm2();
    registry.add_hf_file(
        "acme/SmolLM2-135M-Instruct-GGUF",
        "SmolLM2-135M-Instruct-Q4_1.gguf",
        model.clone(),
    );
    registry.add_hf_file(
        "acme/SmolLM2-135M-Instruct-GGUF",
        "SmolLM2-135M-Instruct-Q8_0.gguf",
        Bytes::from_static(b"GGUF"),
    );
    let dir = tempfile::tempdir().unwrap();

    let out = ok(&shelf_in(
        dir.path(),
        &registry,
        &["pull", "hf.co/acme/SmolLM2-135M-Instruct-GGUF:q4_1"],
    ));
    assert!(out.contains(&sha256_hex(&model)), "{out}");
    let listed = ok(&shelf_in(dir.path(), &registry, &["list"]));
    assert!(
        listed.contains("hf.co/acme/SmolLM2-135M-Instruct-GGUF:Q4_1"),
        "{listed}"
    );
    let shown = ok(&shelf_in(
        dir.path(),
        &registry,
        &["show", "hf.co/ACME/smollm2-135m-instruct-gguf:q4_1"],
    ));
    for fact in ["llama", "Q4_1", "8192", "chat template   yes", "apache-2.0"] {
        assert!(shown.contains(fact), "{fact} missing from:\n{shown}");
    }
    let said = answer(
        dir.path(),
        &registry,
        "hf.co/acme/SmolLM2-135M-Instruct-GGUF:Q4_1",
    );
    assert!(said.contains("Paris"), "{said}");
    // The answer from the pulled copy is the answer from the original file.
    let direct = answer(dir.path(), &registry, path(SMOLLM2).to_str().unwrap());
    assert_eq!(said, direct);
}

#[test]
fn pull_from_an_ollama_registry_named_in_the_model_then_run() {
    let _guard = exclusive();
    let registry = MockRegistry::start();
    registry.add_ollama_model("library/smollm2:135m", smollm2(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}/library/smollm2:135m", registry.host());

    let err = failed(&shelf_in(dir.path(), &registry, &["pull", &name]));
    assert!(
        err.contains(&registry.host()),
        "without --insecure it is https: {err}"
    );
    ok(&shelf_in(
        dir.path(),
        &registry,
        &["pull", "--insecure", &name],
    ));
    let said = answer(dir.path(), &registry, &name);
    assert!(said.contains("Paris"), "{said}");
    ok(&shelf_in(dir.path(), &registry, &["cp", &name, "mine"]));
    ok(&shelf_in(dir.path(), &registry, &["rm", &name]));
    assert_eq!(
        answer(dir.path(), &registry, "mine"),
        said,
        "cp shares the blobs"
    );
}

#[test]
fn a_wrong_digest_is_refused_with_a_clear_error() {
    let registry = MockRegistry::start();
    registry.add_ollama_model("library/smollm2:135m", smollm2(), &[]);
    registry.set_faults(Faults {
        corrupt: true,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}/library/smollm2:135m", registry.host());
    let err = failed(&shelf_in(
        dir.path(),
        &registry,
        &["pull", "--insecure", &name],
    ));
    assert!(err.contains("sha256 mismatch"), "{err}");
    let listed = ok(&shelf_in(dir.path(), &registry, &["list"]));
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");
    let blobs = std::fs::read_dir(dir.path().join("blobs")).map_or(0, |d| d.count());
    assert!(blobs <= 1, "at most the tiny config blob landed");
}

/// Bytes the resume file says are on disk: after its 32-byte header, one
/// little-endian u64 per range.
fn saved_bytes(state: &Path) -> u64 {
    let bytes = std::fs::read(state).unwrap_or_default();
    bytes
        .get(32..)
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .sum()
}

#[test]
fn kill_9_mid_pull_then_resume_fetches_only_the_rest() {
    let _guard = exclusive();
    let registry = MockRegistry::start();
    let model = smollm2();
    let hex = sha256_hex(&model);
    registry.add_hf_file("acme/Smol", "smol-Q4_1.gguf", model.clone());
    let cut = 40_000_000;
    registry.set_faults(Faults {
        hang_after: Some(cut),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut child = shelf()
        .args(["pull", "hf.co/acme/Smol:Q4_1", "--models-dir"])
        .arg(dir.path())
        .env("HF_ENDPOINT", registry.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        registry.wait_served(cut, Duration::from_secs(60)),
        "the pull never got going"
    );
    // The pull records each write; wait until it has recorded what it got.
    let state = dir.path().join(format!("tmp/sha256-{hex}.resume"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while saved_bytes(&state) < cut {
        assert!(Instant::now() < deadline, "never recorded {cut} bytes");
        std::thread::yield_now();
    }
    let listed = ok(&shelf_in(dir.path(), &registry, &["list"]));
    assert!(!listed.contains("smol"), "visible mid-pull: {listed}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let listed = ok(&shelf_in(dir.path(), &registry, &["list"]));
    assert!(!listed.contains("smol"), "visible after the kill: {listed}");
    failed(&shelf_in(
        dir.path(),
        &registry,
        &["run", "hf.co/acme/Smol:Q4_1", "hi"],
    ));

    registry.set_faults(Faults::default());
    registry.reset_counters();
    let out = shelf_in(dir.path(), &registry, &["pull", "hf.co/acme/Smol:Q4_1"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    assert_eq!(
        registry.bytes_served(),
        model.len() as u64 - cut,
        "only the rest"
    );
    let blob = std::fs::read(dir.path().join(format!("blobs/sha256-{hex}"))).unwrap();
    assert!(blob == model.as_ref());
    assert!(answer(dir.path(), &registry, "hf.co/acme/Smol:Q4_1").contains("Paris"));
}

#[test]
fn two_processes_pulling_one_model_download_it_once() {
    let _guard = exclusive();
    let registry = MockRegistry::start();
    let model = smollm2();
    registry.add_ollama_model("library/smollm2:135m", model.clone(), &[]);
    // Slow enough that the two pulls overlap.
    registry.set_faults(Faults {
        bytes_per_sec: Some(20_000_000),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}/library/smollm2:135m", registry.host());
    let spawn = || {
        shelf()
            .args(["pull", "--insecure", &name, "--models-dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let mut said = String::new();
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        ok(&output);
        said.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    assert!(said.contains("another pull is downloading it"), "{said}");
    let served = registry.bytes_served();
    let size = model.len() as u64;
    assert!(
        served >= size && served < size + size / 20,
        "served {served} for {size}"
    );
    let blob = std::fs::read(
        dir.path()
            .join(format!("blobs/sha256-{}", sha256_hex(&model))),
    )
    .unwrap();
    assert!(blob == model.as_ref());
    let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
    assert_eq!(blobs, 2, "the model and its config");
}

#[test]
fn a_read_only_layer_is_searched_but_never_written() {
    let _guard = exclusive();
    let registry = MockRegistry::start();
    let shared = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let model = path(SMOLLM2);
    ok(&shelf_in(
        shared.path(),
        &registry,
        &["import", model.to_str().unwrap(), "--name", "team/smol:v1"],
    ));
    let layered = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--shared-models", shared.path().to_str().unwrap()]);
        shelf_in(local.path(), &registry, &all)
    };
    let listed = ok(&layered(&["list"]));
    assert!(
        listed.contains("team/smol:v1") && listed.contains("read-only"),
        "{listed}"
    );
    let shown = ok(&layered(&["show", "team/smol:v1"]));
    assert!(
        shown.contains("read-only") && shown.contains("llama"),
        "{shown}"
    );
    let said = ok(&layered(&[
        "run",
        "team/smol:v1",
        PROMPT,
        "--temperature",
        "0",
        "--max-tokens",
        "12",
    ]));
    assert!(said.contains("Paris"), "{said}");
    let err = failed(&layered(&["rm", "team/smol:v1"]));
    assert!(err.contains("read-only"), "{err}");
    assert!(ok(&layered(&["list"])).contains("team/smol:v1"));
    // A missing shared root is named, and the local store still works.
    let gone = shelf_in(
        local.path(),
        &registry,
        &["list", "--shared-models", "/nonexistent/nas"],
    );
    assert!(String::from_utf8_lossy(&gone.stderr).contains("/nonexistent/nas"));
}

#[test]
fn gc_removes_what_no_model_uses() {
    let registry = MockRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let model = path(SMOLLM2);
    ok(&shelf_in(
        dir.path(),
        &registry,
        &["import", model.to_str().unwrap(), "--name", "a", "--link"],
    ));
    let stray = dir
        .path()
        .join("blobs")
        .join(format!("sha256-{}", "0".repeat(64)));
    std::fs::write(&stray, b"left behind").unwrap();
    let out = ok(&shelf_in(dir.path(), &registry, &["gc"]));
    assert!(out.contains("removed 1 blobs"), "{out}");
    assert!(!stray.exists());
    assert!(ok(&shelf_in(dir.path(), &registry, &["list"])).contains("a:latest"));
}

#[test]
fn the_server_lists_the_store_and_pulls_only_when_allowed() {
    let _guard = exclusive();
    let registry = MockRegistry::start();
    registry.add_ollama_model("library/smollm2:135m", smollm2(), &[]);
    let name = format!("{}/library/smollm2:135m", registry.host());
    let dir = tempfile::tempdir().unwrap();
    ok(&shelf_in(
        dir.path(),
        &registry,
        &["import", path(SMOLLM2).to_str().unwrap(), "--name", "here"],
    ));
    let client = reqwest::blocking::Client::new();
    let chat = |base: &str, model: &str| {
        client
            .post(format!("{base}/v1/chat/completions"))
            .json(&serde_json::json!({
                "model": model,
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hi"}],
            }))
            .send()
            .unwrap()
    };

    for allow in [false, true] {
        let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--insecure"];
        if allow {
            args.push("--allow-pull");
        }
        let server = common::Server::spawn(&args, dir.path(), &[("HF_ENDPOINT", registry.url())]);
        let models: serde_json::Value = client
            .get(server.url("/v1/models"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(models["data"][0]["id"], "here:latest", "{models}");
        let first = chat(&server.base, &name);
        if !allow {
            assert_eq!(first.status(), 404);
            let body: serde_json::Value = first.json().unwrap();
            assert_eq!(body["error"]["code"], "model_not_found", "{body}");
            assert_eq!(registry.bytes_served(), 0, "never pulled implicitly");
            continue;
        }
        assert_eq!(first.status(), 503);
        let body: serde_json::Value = first.json().unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("pulling"),
            "{body}"
        );
        // Clients retry a 503; so does this test, until the pull is in.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let response = chat(&server.base, &name);
            if response.status() == 200 {
                break;
            }
            assert_eq!(response.status(), 503, "{:?}", response.text());
            assert!(Instant::now() < deadline, "the pull never finished");
            std::thread::sleep(Duration::from_millis(200));
        }
        let models: serde_json::Value = client
            .get(server.url("/v1/models"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(
            models.to_string().contains("library/smollm2:135m"),
            "{models}"
        );
    }
}

#[test]
fn a_split_model_is_pulled_whole_and_runs() {
    let _guard = exclusive();
    let registry = MockRegistry::start();
    let parts = split_gguf(&smollm2(), 3);
    for (i, part) in parts.iter().enumerate() {
        let file = format!("Q4_1/smol-Q4_1-{:05}-of-00003.gguf", i + 1);
        registry.add_hf_file("acme/Split", &file, Bytes::from(part.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    ok(&shelf_in(
        dir.path(),
        &registry,
        &["pull", "hf.co/acme/Split:Q4_1"],
    ));
    let shown = ok(&shelf_in(
        dir.path(),
        &registry,
        &["show", "hf.co/acme/Split:Q4_1"],
    ));
    assert!(
        shown.contains("split into      3 files") && shown.contains("134.5M"),
        "{shown}"
    );
    let said = answer(dir.path(), &registry, "hf.co/acme/Split:Q4_1");
    let direct = answer(dir.path(), &registry, path(SMOLLM2).to_str().unwrap());
    assert_eq!(
        said, direct,
        "the split model answers as the whole one does"
    );
}
