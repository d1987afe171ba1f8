"""Stored GPU results carry their provenance; a result without it is refused."""

import json

import pytest

from llmlab.results import describe, load_result, provenance, save_result


def test_every_stored_result_has_provenance():
    from llmlab.paths import results_dir

    names = [path.stem for path in results_dir().glob("*.json")]
    assert "gpu-memory-anatomy" in names, names
    for name in names:
        result = load_result(name)
        assert result["provenance"]["command"] and result["provenance"]["date"], name
        assert "stored run on" in describe(result)


def test_round_trip_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAB_DATA", str(tmp_path))
    (tmp_path / "results").mkdir()
    save_result("probe", {"x": 1}, command="python probe.py")
    result = load_result("probe")
    assert result["measurements"] == {"x": 1} and result["provenance"]["command"] == "python probe.py"
    assert result["provenance"]["torch"], provenance()
    (tmp_path / "results" / "bare.json").write_text(json.dumps({"measurements": {}}))
    with pytest.raises(ValueError, match="provenance"):
        load_result("bare")
    with pytest.raises(LookupError, match="probe"):
        load_result("missing")
