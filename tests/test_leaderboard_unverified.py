"""`trajbench leaderboard --unverified`: imported runs (which no world can replay) are refused
without the flag, in one line; with it they are ranked apart from verified entries, under a
visible "imported, not replay-verified" label, in all three files; an edited import is rejected."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import jsonschema
import orjson
import pytest

from bench.cli import main
from bench.world.task import load_schema

FIXTURE = Path(__file__).parent / "fixtures" / "imports" / "tau-bench.json"
LABEL = "imported, not replay-verified"


def _import(tmp_path: Path, name: str, flip: int = 0) -> Path:
    """The fixture imported; `flip` successes turned into failures (another agent's file)."""
    records = json.loads(FIXTURE.read_text())
    for record in [r for r in records if r["reward"] == 1][:flip]:
        record["reward"] = 0
    source = tmp_path / f"{name}.json"
    source.write_bytes(orjson.dumps(records))
    out = tmp_path / name
    assert main(["import", "tau-bench", str(source), "--out", str(out)]) == 0
    return out


def _pass_hat(records: list[dict], k: int) -> float:
    """Per task C(c,k)/C(n,k) over its valid trials (an errored record counts in no figure),
    mean over the tasks with n >= k."""
    counts: dict[int, list[int]] = {}
    for r in records:
        if "error" not in r["info"]:
            cell = counts.setdefault(r["task_id"], [0, 0])
            cell[0] += 1
            cell[1] += r["reward"] == 1
    terms = [comb(c, k) / comb(n, k) for n, c in counts.values() if n >= k]
    return sum(terms) / len(terms)


def test_an_import_is_refused_without_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _import(tmp_path, "a")
    capsys.readouterr()
    assert main(["leaderboard", str(run), "--out", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--unverified" in err and "imported from tau-bench" in err
    assert not (tmp_path / "lb").exists()


def test_imports_are_ranked_apart_and_labelled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _import(tmp_path, "a"), _import(tmp_path, "b", flip=2)
    out = tmp_path / "lb"
    assert main(["leaderboard", str(a), str(b), "--out", str(out), "--unverified", "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    assert f"[{LABEL}]" in printed and "0 verified run(s) and 2 imported" in printed
    board = orjson.loads((out / "leaderboard.json").read_bytes())
    jsonschema.Draft202012Validator(load_schema("leaderboard.schema.json")).validate(board)
    assert board["entries"] == []  # never mixed into the verified ranking
    ranked = board["unverified"]
    assert [e["run"]["dir"] for e in ranked] == ["a", "b"] and [e["rank"] for e in ranked] == [1, 2]
    assert all(e["verification"] == LABEL and e["verified"] is None and e["source"]["format"] == "tau-bench" for e in ranked)
    assert len({e["label"] for e in ranked}) == 2  # imports of one task set share an agent name and id prefix
    records = json.loads(FIXTURE.read_text())
    K = board["rank_by"]["k"]
    assert ranked[0]["rank_metric"]["mean"] == pytest.approx(_pass_hat(records, K))
    readme = (out / "README.md").read_text()
    assert "## Imported, not replay-verified" in readme and f"*{LABEL}*" in readme and "*no verified entry*" in readme
    page = (out / "index.html").read_text()
    assert 'id="unverified"' in page and f'data-verification="{LABEL}"' in page


def test_an_edited_import_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _import(tmp_path, "a")
    manifest = orjson.loads((run / "run.json").read_bytes())
    manifest["agent"]["name"] = "gpt-99-real"
    (run / "run.json").write_bytes(orjson.dumps(manifest))
    capsys.readouterr()
    assert main(["leaderboard", str(run), "--out", str(tmp_path / "lb"), "--unverified"]) == 1
    err = capsys.readouterr().err
    assert "agent.name" in err and "nothing written" in err
    assert not (tmp_path / "lb").exists()
