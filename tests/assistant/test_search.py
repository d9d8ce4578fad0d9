"""The assistant's index on a generated corpus of 30 documents in eight
formats, through the real `shelf watch` commands (SHELF_BIN)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import corpus  # noqa: E402  (beside this file)

SHELF = os.environ.get("SHELF_BIN", "target/debug/shelf")


def shelf(db, *args):
    out = subprocess.run([SHELF, "--assistant-db", db, *args], capture_output=True, text=True, check=True)
    return out.stdout


def test_every_document_is_indexed_and_search_finds_the_answer_file(tmp_path):
    """Every corpus document, whatever its format, is indexed (none skipped),
    and for at least 90% of the 20 questions the file holding the answer is
    among the top 5 search results."""
    folder = tmp_path / "corpus"
    questions = corpus.build(str(folder))
    db = str(tmp_path / "assistant.db")
    shelf(db, "watch", "add", str(folder), "--name", "corpus")
    [status] = json.loads(shelf(db, "watch", "status", "corpus", "--json"))
    assert status["skipped"] == []
    assert status["indexed"] == len(corpus.files()) >= 30
    found = 0
    for question, answer_files, _ in questions:
        hits = [h["path"] for h in json.loads(shelf(db, "watch", "search", question, "--json", "--limit", "5"))]
        found += any(f in hits for f in answer_files)
    assert found / len(questions) >= 0.9, f"{found} of {len(questions)}"


def test_removing_a_watch_takes_its_files_out_of_search(tmp_path):
    """`watch rm` leaves nothing of the folder searchable."""
    folder = tmp_path / "corpus"
    corpus.build(str(folder))
    db = str(tmp_path / "assistant.db")
    shelf(db, "watch", "add", str(folder), "--name", "corpus")
    assert json.loads(shelf(db, "watch", "search", "Meridian Mutual excess", "--json"))
    shelf(db, "watch", "rm", "corpus")
    assert json.loads(shelf(db, "watch", "search", "Meridian Mutual excess", "--json")) == []
