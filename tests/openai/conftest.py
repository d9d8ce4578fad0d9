"""Starting the real `shelf serve` (SHELF_BIN) with SmolLM2 on a free loopback port."""
import contextlib
import os
import subprocess
import tempfile

MODEL = "smollm2-135m-instruct-q4_1"

# The process behind each running server's base URL, for tests that signal it.
PROCESSES = {}


def model_path(name):
    """A test model's file; a missing one fails the test, never skips it."""
    models = os.environ.get("SHELF_TEST_MODELS") or os.path.expanduser("~/.cache/shelf/test-models")
    path = os.path.join(models, f"{name}.gguf")
    assert os.path.isfile(path), f"{path} is missing: run scripts/setup.sh"
    return path


@contextlib.contextmanager
def shelf_server(*extra, models=(MODEL,), models_dir=None, keys=None, env=None, stderr=None, assistant_db=None):
    """The server's base URL while it runs with `extra` flags, `models` preloaded,
    its store in `models_dir`, its key database `keys` (a fresh, empty one by default)."""
    flags = [arg for name in models for arg in ("--model", model_path(name))]
    store = models_dir or os.environ.get("TMPDIR", "/tmp")
    with contextlib.ExitStack() as stack:
        if keys is None:
            keys = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "keys.db")
        proc = subprocess.Popen(
            [os.environ.get("SHELF_BIN", "target/debug/shelf"), "serve", "--addr", "127.0.0.1:0",
             *flags, "--threads", "2", "--models-dir", store, "--keys", keys,
             "--assistant-db", assistant_db or os.path.join(os.path.dirname(keys), "assistant.db"), *extra],
            stdout=subprocess.PIPE, text=True,
            env={**os.environ, "SHELF_LOG": "warn,llama-cpp-2=error", **(env or {})},
            stderr=stderr,
        )
        yield from _running(proc, models)


def _running(proc, models):
    base = None
    try:
        line = proc.stdout.readline()
        while line.startswith("TLS certificate"):
            line = proc.stdout.readline()
        base = line.strip().removeprefix("shelf listening on ")
        for _ in models:
            ready = proc.stdout.readline()
            assert ready.startswith("shelf ready"), ready
        PROCESSES[base] = proc
        yield base
    finally:
        PROCESSES.pop(base, None)
        proc.terminate()
        proc.wait(timeout=30)


def shelf_keys(keys, *args):
    """Run `shelf keys ARGS` on the database `keys`; its stdout's last line."""
    out = subprocess.run(
        [os.environ.get("SHELF_BIN", "target/debug/shelf"), "keys", *args, "--keys", keys],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.strip().splitlines()[-1]


@contextlib.contextmanager
def mock_registry(model, path):
    """shelf's loopback test registry serving `path` as the Ollama model `model`;
    yields its base URL."""
    binary = os.path.join(os.path.dirname(os.environ.get("SHELF_BIN", "target/debug/shelf")), "shelf-mock-registry")
    proc = subprocess.Popen([binary, "--ollama", f"{model}={path}"], stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def settled(ask):
    """What `ask()` answers when asked a second time, over its own prompt now
    cached, as a later identical request (a stream of it) will meet it.
    llama.cpp's kernels are not batch-invariant: a greedy answer to a prompt
    computed fresh may differ from one over the cached prompt
    (docs/serving.md), so two answers compared must meet the same cache."""
    ask()
    return ask()
