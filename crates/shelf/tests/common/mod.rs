//! Helpers for driving the real `shelf` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on purpose.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

/// The binary under test.
pub fn shelf() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shelf"));
    command
        .env_remove("SHELF_MODELS")
        .env_remove("SHELF_SHARED_MODELS")
        .env_remove("SHELF_ADDR")
        .env_remove("SHELF_ALLOW_PULL")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .env_remove("SHELF_API_KEY")
        .env_remove("SHELF_AUDIT_LOG")
        .env_remove("SHELF_ALLOWED_HOSTS")
        .env_remove("SHELF_CORS_ORIGINS")
        // A fresh key database each run: a key in the user's own would
        // close the server to these tests.
        .env("SHELF_KEYS", fresh_keys_path())
        // Nor do the user's watched folders come into them.
        .env(
            "SHELF_ASSISTANT_DB",
            fresh_keys_path().with_extension("assistant.db"),
        )
        .env("HF_HOME", "/nonexistent/shelf-test-hf-home")
        .env("SHELF_THREADS", "2")
        .env("SHELF_LOG", "warn,llama-cpp-2=error");
    command
}

/// A key database path no other run uses (the file does not exist yet).
pub fn fresh_keys_path() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    dir.path()
        .join(format!("keys-{}.db", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Run `shelf ARGS` on the assistant database `db`: whether it succeeded,
/// its stdout and its stderr.
pub fn shelf_on_db(db: &Path, args: &[&str]) -> (bool, String, String) {
    let out = shelf()
        .env("SHELF_ASSISTANT_DB", db)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Run `shelf` with arguments and collect its output.
pub fn shelf_output(args: &[&str], models_dir: &Path) -> Output {
    shelf()
        .args(args)
        .arg("--models-dir")
        .arg(models_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run shelf")
}

/// Tests that time the model share the machine's two cores one at a time.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `shelf serve` process on a free loopback port, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
    pub models_dir: tempfile::TempDir,
}

impl Server {
    /// Serve `model` (a path), preloaded, with extra flags.
    pub fn start(model: &Path, extra: &[&str]) -> Server {
        let models_dir = tempfile::tempdir().unwrap();
        let mut child = shelf()
            .args(["serve", "--addr", "127.0.0.1:0", "--ctx", "1024", "--model"])
            .arg(model)
            .arg("--models-dir")
            .arg(models_dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shelf serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let base = read_base(&mut stdout);
        // The second line comes once the preloaded model is ready.
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("shelf ready"),
            "the server did not get ready: {line:?}"
        );
        Server {
            child,
            base,
            models_dir,
        }
    }

    /// `shelf ARGS --models-dir DIR` with extra environment, no preload:
    /// returns once it listens.
    pub fn spawn(args: &[&str], models_dir: &Path, env: &[(&str, String)]) -> Server {
        let mut command = shelf();
        command.args(args).arg("--models-dir").arg(models_dir);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shelf serve");
        let base = read_base(&mut BufReader::new(child.stdout.take().unwrap()));
        Server {
            child,
            base,
            models_dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to exit by itself.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The base URL from serve's first line, `shelf listening on URL`.
fn read_base(stdout: &mut impl BufRead) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix("shelf listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string()
}

/// A copy of a real model, cut in half.
pub fn truncated_copy(model: &Path, dir: &Path) -> PathBuf {
    let bytes = std::fs::read(model).unwrap();
    let path = dir.join("truncated.gguf");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    path
}
