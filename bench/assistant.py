"""The assistant on the generated corpus (tests/assistant/corpus.py): search
finds the answer file in its top 5 (bar 0.9), and `shelf ask` with the
assistant model cites a file that holds the answer (bar 0.6). Also reported:
answers that contain the expected words, and time per question.

With --search-only --embed EMBEDDING_MODEL, nothing is asked: search by
words alone and search fused with the embedding model's vectors are set
side by side on the questions and on the same facts asked in other words
(corpus.PARAPHRASES); bar: fusion finds at least as many in its top 5.

Usage: python3 bench/assistant.py [MODEL] [--threads N] [--questions N]
       python3 bench/assistant.py --search-only --embed EMBEDDING_MODEL
Exits 1 when a bar is missed."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "assistant"))
import corpus  # noqa: E402

MODELS = os.environ.get("SHELF_TEST_MODELS") or os.path.expanduser("~/.cache/shelf/test-models")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=os.path.join(MODELS, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"))
    parser.add_argument("--threads", default="2")
    parser.add_argument("--questions", type=int, default=len(corpus.QUESTIONS))
    parser.add_argument("--corpus", help="a folder to use instead of the generated corpus, with questions.json")
    parser.add_argument("--embed", help="an embedding model for search (a path or store name)")
    parser.add_argument("--search-only", action="store_true", help="compare search with and without --embed")
    args = parser.parse_args()
    shelf = os.environ.get("SHELF_BIN", "target/release/shelf")
    work = tempfile.mkdtemp()
    if args.corpus:
        folder = args.corpus
        with open(os.path.join(folder, "questions.json")) as f:
            questions = [(q["question"], q["files"], q.get("words", [])) for q in json.load(f)]
    else:
        folder = os.path.join(work, "corpus")
        questions = corpus.build(folder)
    questions = questions[: args.questions]
    db = os.path.join(work, "assistant.db")

    def run(*command):
        out = subprocess.run([shelf, "--assistant-db", db, "--threads", args.threads, *command],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"shelf {' '.join(command[:2])} failed: {out.stderr}")
        return out.stdout

    run("watch", "add", folder, "--name", "corpus")
    if args.search_only:
        paraphrases = [] if args.corpus else corpus.PARAPHRASES
        sys.exit(compare_search(run, args.embed, questions, paraphrases))
    embed = ["--embed", args.embed] if args.embed else ["--words-only"]
    top5 = cited = worded = 0
    seconds = []
    for question, files, words in questions:
        hits = [h["path"] for h in json.loads(run("watch", "search", question, "--json", "--limit", "5", *embed))]
        in_top5 = any(f in hits for f in files)
        started = time.monotonic()
        outcome = json.loads(run("ask", question, "--model", args.model, "--json", *embed))
        seconds.append(time.monotonic() - started)
        cited_files = {c.rsplit(":", 1)[0].removeprefix("corpus/") for c in outcome["citations"]}
        good_cite = bool(cited_files & set(files))
        has_words = all(w.lower() in outcome["answer"].lower() for w in words)
        top5 += in_top5
        cited += good_cite
        worded += has_words
        print(f"{'top5' if in_top5 else '----'} {'cited' if good_cite else '-----'} "
              f"{'words' if has_words else '-----'} {seconds[-1]:5.1f}s  {question}  -> {sorted(cited_files)}",
              flush=True)
    n = len(questions)
    print(f"search: answer file in the top 5 for {top5}/{n} ({top5 / n:.0%}), bar 90%")
    print(f"ask: a cited file holds the answer for {cited}/{n} ({cited / n:.0%}), bar 60%")
    print(f"ask: the answer has the expected words for {worded}/{n} ({worded / n:.0%})")
    print(f"ask: {sum(seconds) / n:.1f} s a question on average")
    missed = top5 / n < 0.9 or cited / n < 0.6
    if missed:
        print("MISSED")
    sys.exit(1 if missed else 0)


def compare_search(run, embed, questions, paraphrases):
    """Top-1 and top-5 hits of words-only and fused search; 1 when fusion
    finds fewer in its top 5 than words alone."""
    if not embed:
        sys.exit("--search-only needs --embed EMBEDDING_MODEL")
    worse = False
    for label, asked in [("questions", questions), ("paraphrases", paraphrases)]:
        if not asked:
            continue
        counts = {}
        for mode, extra in [("words", ["--words-only"]), ("fused", ["--embed", embed])]:
            first = top5 = 0
            for item in asked:
                question, files = item[0], item[1]
                hits = [h["path"] for h in json.loads(run("watch", "search", question, "--json", "--limit", "5", *extra))]
                first += bool(hits) and hits[0] in files
                top5 += any(f in hits for f in files)
            counts[mode] = top5
            print(f"{label}: {mode:5} first {first}/{len(asked)}, top 5 {top5}/{len(asked)}", flush=True)
        worse |= counts["fused"] < counts["words"]
    if worse:
        print("MISSED: fused search found fewer than words alone")
    return 1 if worse else 0


if __name__ == "__main__":
    main()
