"""`python -m pipeline evaluate`: the mechanics, checked where the answer is known."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
from conftest import run_cli

from pipeline.evaluate import metrics, ranks_of_targets


def test_ranks_ignore_ties_and_count_strictly_better_rows():
    scores = np.array([[0.9, 0.9, 0.1], [0.2, 0.5, 0.7]])
    assert ranks_of_targets(scores, np.array([1, 1])).tolist() == [1, 2]
    m = metrics("x", None, np.array([1, 2, 10, 20]))
    assert (m.recall_at_1, m.recall_at_5, m.recall_at_10) == (0.25, 0.5, 0.75)
    assert m.median_rank == 6.0 and abs(m.mrr - (1 + 0.5 + 0.1 + 0.05) / 4) < 1e-9


def test_one_caption_per_image_ranks_its_own_image_first(tmp_path, shared_data, tiny_model_dir):
    folder = tmp_path / "one-caption"
    folder.mkdir()
    (folder / "images").symlink_to(shared_data / "images")  # read in place, never copied
    first = {}
    for line in (shared_data / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        first.setdefault(entry["path"], entry)
    (folder / "captions.jsonl").write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in first.values()), "utf-8"
    )
    build, repo = tmp_path / "build", tmp_path / "repo"
    run_cli("encode", "--data", folder, "--model", tiny_model_dir, "--out", build)
    run_cli("index", "--build", build)
    run_cli("publish", "--build", build, "--to", repo)
    out = tmp_path / "eval.json"
    result = run_cli("evaluate", "--repo", repo, "--alphas", "0,0.5,1", "--output", out)
    assert "R@1" in result.stdout and "deep alpha=0.00" in result.stdout
    report = json.loads(out.read_text())
    by_mode = {r["mode"]: r for r in report["results"]}
    assert set(by_mode) == {"image-only", "deep alpha=0.00", "deep alpha=0.50", "deep alpha=1.00"}
    counts = Counter(e["caption"] for e in first.values())
    unique_share = sum(1 for e in first.values() if counts[e["caption"]] == 1) / len(first)
    assert by_mode["deep alpha=0.00"]["queries"] == 413
    assert by_mode["deep alpha=0.00"]["recall_at_1"] >= unique_share
    # alpha = 1 is image-only search by definition.
    assert by_mode["deep alpha=1.00"]["recall_at_1"] == by_mode["image-only"]["recall_at_1"]
    for r in report["results"]:
        assert 0 <= r["recall_at_1"] <= r["recall_at_5"] <= r["recall_at_10"] <= 1
