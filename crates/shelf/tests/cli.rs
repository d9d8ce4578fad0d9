//! The `shelf` command line against real models: run, the store, chat.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;

use common::{exclusive, shelf, shelf_output};
use shelf_testmodels::{path, SMOLLM2};

#[test]
fn run_with_a_prompt_prints_a_deterministic_answer() {
    let _guard = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let model = path(SMOLLM2);
    let args = [
        "run",
        model.to_str().unwrap(),
        "Say hello.",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
    ];
    let first = shelf_output(&args, dir.path());
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let answer = String::from_utf8(first.stdout).unwrap();
    assert!(!answer.trim().is_empty());
    let second = shelf_output(&args, dir.path());
    assert_eq!(String::from_utf8(second.stdout).unwrap(), answer);
}

#[test]
fn import_list_run_by_name_and_remove() {
    let _guard = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let model = path(SMOLLM2);
    let imported = shelf_output(
        &["import", model.to_str().unwrap(), "--name", "smol:q4"],
        dir.path(),
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let listed = String::from_utf8(shelf_output(&["list"], dir.path()).stdout).unwrap();
    assert!(listed.contains("smol:q4"), "{listed}");
    let ran = shelf_output(&["run", "smol:q4", "Hi", "--max-tokens", "3"], dir.path());
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(shelf_output(&["rm", "smol:q4"], dir.path())
        .status
        .success());
    let listed = String::from_utf8(shelf_output(&["list"], dir.path()).stdout).unwrap();
    assert!(!listed.contains("smol:q4"), "{listed}");
    let missing = shelf_output(&["run", "smol:q4", "Hi"], dir.path());
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not in the store"));
    let traversal = shelf_output(&["rm", "../../etc"], dir.path());
    assert_eq!(traversal.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&traversal.stderr).contains("invalid model name"));
}

/// Ctrl-C stops the answer being written, not the chat; `/bye` leaves.
#[test]
fn interactive_chat_survives_ctrl_c_and_leaves_on_bye() {
    let _guard = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let mut child = shelf()
        .args([
            "run",
            path(SMOLLM2).to_str().unwrap(),
            "--temperature",
            "0",
            "--verbose",
        ])
        .args(["--max-tokens", "3000", "--ctx", "4096"])
        .arg("--models-dir")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    writeln!(stdin, "Write a very long story about a dragon.").unwrap();
    // Once the answer is streaming, interrupt it.
    let mut byte = [0u8; 1];
    stdout.read_exact(&mut byte).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    writeln!(stdin, "Say hi.").unwrap();
    writeln!(stdin, "/bye").unwrap();
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}: {stderr}");
    // --verbose reports each answer on stderr: the cut one and the next.
    let answers: Vec<&str> = stderr.lines().filter(|l| l.contains("answer:")).collect();
    assert_eq!(answers.len(), 2, "{stderr}");
}

/// `shelf keys`: the secret is printed once, last; the list names keys
/// with their scopes and limits but never a secret; revoking works once.
#[test]
fn keys_are_created_listed_and_revoked_without_showing_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.db");
    let keys = |args: &[&str]| {
        shelf()
            .arg("keys")
            .args(args)
            .arg("--keys")
            .arg(&db)
            .output()
            .unwrap()
    };
    let created = keys(&[
        "create", "ci", "--scope", "chat", "--models", "qwen*", "--rpm", "30",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let stdout = String::from_utf8(created.stdout).unwrap();
    let secret = stdout.lines().last().unwrap().to_string();
    assert!(
        secret.starts_with("shelf_") && secret.len() == 49,
        "{secret}"
    );

    let listed = keys(&["list"]);
    let table = String::from_utf8(listed.stdout).unwrap();
    assert!(
        table.contains("ci") && table.contains("qwen*") && table.contains("30"),
        "{table}"
    );
    assert!(!table.contains(&secret[6..]), "{table}");
    let json = keys(&["list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["scopes"], serde_json::json!(["chat"]));
    assert_eq!(rows[0]["status"], "active");

    assert!(keys(&["create", "ci"]).status.code() == Some(1));
    assert!(keys(&["revoke", "ci"]).status.success());
    let again = keys(&["revoke", "ci"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no live key"));
    let rows: serde_json::Value =
        serde_json::from_slice(&keys(&["list", "--json"]).stdout).unwrap();
    assert_eq!(rows[0]["status"], "revoked");
}
