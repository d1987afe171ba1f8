"""The claims register in data/claims.json is what the library computes now (never typed, never stale)."""

from llmlab.claims import VERDICTS, claims_markdown, register, stored_register


def test_stored_register_equals_a_fresh_computation():
    fresh = {row["id"]: row for row in register()}
    stored = {row["id"]: row for row in stored_register()}
    assert sorted(fresh) == sorted(stored), "run `python -m llmlab.claims` to regenerate data/claims.json"
    for key, row in fresh.items():
        assert stored[key] == row, (key, stored[key]["measured"], row["measured"])


def test_every_claim_has_a_verdict_and_a_notebook_that_exists():
    from llmlab.paths import REPO_ROOT

    for row in stored_register():
        assert row["verdict"] in VERDICTS, row
        assert (REPO_ROOT / "notebooks" / row["notebook"]).exists(), row


def test_markdown_table_has_one_line_per_claim():
    text = claims_markdown(("1",))
    assert text.count("\n") == 2 + sum(1 for row in stored_register() if row["section"] == "1") - 1, text
