"""Starting the real `shelf serve` (SHELF_BIN) with SmolLM2 on a free loopback port."""
import contextlib
import os
import subprocess

MODEL = "smollm2-135m-instruct-q4_1"


def model_path(name):
    """A test model's file; a missing one fails the test, never skips it."""
    models = os.environ.get("SHELF_TEST_MODELS") or os.path.expanduser("~/.cache/shelf/test-models")
    path = os.path.join(models, f"{name}.gguf")
    assert os.path.isfile(path), f"{path} is missing: run scripts/setup.sh"
    return path


@contextlib.contextmanager
def shelf_server(*extra, models=(MODEL,), models_dir=None):
    """The server's base URL while it runs with `extra` flags, `models` preloaded,
    its store in `models_dir`."""
    flags = [arg for name in models for arg in ("--model", model_path(name))]
    store = models_dir or os.environ.get("TMPDIR", "/tmp")
    proc = subprocess.Popen(
        [os.environ.get("SHELF_BIN", "target/debug/shelf"), "serve", "--addr", "127.0.0.1:0",
         *flags, "--threads", "2", "--models-dir", store, *extra],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "SHELF_LOG": "warn,llama-cpp-2=error"},
    )
    try:
        base = proc.stdout.readline().strip().removeprefix("shelf listening on ")
        for _ in models:
            ready = proc.stdout.readline()
            assert ready.startswith("shelf ready"), ready
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
