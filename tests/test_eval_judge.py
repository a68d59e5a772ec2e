"""`sgpo-data eval-judge` (fast tier: the labels and arith judges need no model): ProcessBench's figures, checked
against the true labels, a hand computation and bad input."""

import json

import pytest
from typer.testing import CliRunner

from sgpo_data.errors import SgpoError
from sgpo_data.judges.base import Verdict
from sgpo_data.judges.evaluate import load_processbench, metrics, sample
from sgpo_data.schema import JudgeStatus
from sgpo_data_cli.app import app

SUBSETS = ["gsm8k", "math", "olympiadbench", "omnimath"]


def eval_judge(*args):
    result = CliRunner().invoke(app, ["eval-judge", *map(str, args)])
    return result.exit_code, result.output


def test_the_true_labels_score_f1_100_on_every_processbench_subset(shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for subset in SUBSETS:  # the truth copied into a column of predictions
        rows = json.loads((shared_data / "processbench" / f"{subset}.json").read_text())
        (data / f"{subset}.json").write_text(json.dumps([{**row, "copy": row["label"]} for row in rows]))
    out = tmp_path / "out"
    code, output = eval_judge("--data", data, "--judge", "labels", "--judge-column", "copy", "--out", out)
    assert code == 0, output
    found = json.loads((out / "metrics.json").read_text())
    assert list(found["subsets"]) == SUBSETS
    assert [found["subsets"][s]["items"] for s in SUBSETS] == [400, 1000, 1000, 1000]
    assert all(m["f1"] == m["acc_erroneous"] == m["acc_correct"] == 100.0 for m in found["subsets"].values())
    assert found["mean_f1"] == 100.0 and found["total"]["calls"] == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 3400


@pytest.mark.parametrize("flags", [["--judge", "labels"], ["--judge", "labels", "--judge-column", "label"],
                                   ["--judge", "noisy", "--set", "options.judge=labels"]],
                         ids=["no --judge-column", "the ground truth column", "labels inside another judge"])
def test_the_labels_judge_may_not_read_the_ground_truth(shared_data, tmp_path, flags):
    code, output = eval_judge("--data", shared_data / "processbench", *flags, "--out", tmp_path)
    assert code == 2, output
    [line] = [line for line in output.splitlines() if line.strip()]
    assert line.startswith("error:") and "ground truth" in line and "--judge-column my_predictions" in line
    assert list(tmp_path.iterdir()) == []  # refused before anything was judged or written


def test_the_judge_option_lists_every_registered_judge():
    from sgpo_data.judges import JUDGES

    result = CliRunner().invoke(app, ["eval-judge", "--help"], env={"COLUMNS": "200"})
    [line] = [line for line in result.output.splitlines() if "--judge " in line]
    assert all(name in line for name in JUDGES.names()) and "noisy" in line


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_perturbed_predictions_reproduce_an_f1_computed_by_hand(tmp_path):
    # Four erroneous items (labels 1, 2, 0, 3) and three correct ones (-1).
    labels = [1, 2, 0, 3, -1, -1, -1]
    preds = [1, 0, 0, -1, -1, 2, -1]  # erroneous: exact, early, exact, missed; correct: right, false alarm, right
    rows = [{"id": f"x-{i}", "problem": "p", "steps": ["a", "b", "c", "d"], "label": label, "pred": pred}
            for i, (label, pred) in enumerate(zip(labels, preds))]
    data = write_jsonl(tmp_path / "mine.jsonl", rows)
    code, output = eval_judge("--data", data, "--judge", "labels", "--judge-column", "pred", "--out", tmp_path / "out")
    assert code == 0, output
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())["subsets"]["mine"]
    acc_err, acc_cor = 100 * 2 / 4, 100 * 2 / 3  # 50.0 and 66.67
    assert (m["acc_erroneous"], m["acc_correct"]) == (50.0, 66.67)
    assert m["f1"] == round(2 * acc_err * acc_cor / (acc_err + acc_cor), 2) == 57.14
    assert m["erroneous_predictions"] == {"early": 1, "exact": 2, "late": 0, "missed": 1, "no_verdict": 0}
    assert m["correct_predictions"] == {"right": 2, "false_alarm": 1, "no_verdict": 0}
    assert "57.1" in output


def test_unparseable_predictions_count_as_failures_and_wrong():
    verdicts = [Verdict(2, JudgeStatus.OK, "2"), Verdict(None, JudgeStatus.PARSE_ERROR, "?"),
                Verdict(None, JudgeStatus.PARSE_ERROR, "?"), Verdict(-1, JudgeStatus.OK, "-1")]
    m = metrics([2, 1, -1, -1], verdicts)
    assert (m["acc_erroneous"], m["acc_correct"], m["f1"]) == (50.0, 50.0, 50.0)
    assert m["parse_failures"] == 2 and m["parse_failure_rate"] == 0.5
    assert m["erroneous_predictions"]["no_verdict"] == 1 and m["correct_predictions"]["no_verdict"] == 1


def test_the_arith_judge_runs_on_processbench_without_an_engine(shared_data, tmp_path):
    code, output = eval_judge("--data", shared_data / "processbench", "--judge", "arith", "--subset", "gsm8k",
                              "--limit", "50", "--seed", "3", "--out", tmp_path)
    assert code == 0, output
    found = json.loads((tmp_path / "metrics.json").read_text())
    assert found["sample"] == {"limit": 50, "seed": 3} and found["subsets"]["gsm8k"]["items"] == 50
    assert found["subsets"]["gsm8k"]["calls"] == 0 and found["judge"]["name"] == "arith"


def test_a_seeded_sample_is_reproducible_and_keeps_file_order(shared_data):
    items = load_processbench(str(shared_data / "processbench" / "gsm8k.json"))["gsm8k"]
    first, again = sample(items, 20, 7), sample(items, 20, 7)
    assert [x.id for x in first] == [x.id for x in again] != [x.id for x in sample(items, 20, 8)]
    positions = [items.index(x) for x in first]
    assert positions == sorted(positions)


BASE = {"id": "t-0", "problem": "p", "steps": ["a", "b"], "label": 0}


@pytest.mark.parametrize("change, message", [
    ({"steps": []}, r"'steps' must be a non-empty list of strings, got \[\]"),
    ({"steps": ["a", 3]}, r"steps\[1\] is int, not a string"),
    ({"steps": "a\n\nb"}, r"'steps' must be a non-empty list of strings"),
    ({"label": 2}, r"label 2 is out of range; it must be -1 \(no error\) or a step index 0..1"),
    ({"label": -2}, r"label -2 is out of range"),
    ({"label": True}, r"label True is out of range"),
    ({"label": None}, r"label None is out of range"),
    ({"problem": None}, r"'problem' must be a string"),
])
def test_bad_items_are_one_error_naming_the_file_and_the_item(tmp_path, change, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{**BASE, **change}])
    with pytest.raises(SgpoError, match=rf"{tmp_path}/bad.jsonl: item 0 \(id 't-0'\): {message}"):
        load_processbench(str(path))


def test_bad_files_and_missing_subsets_are_one_line_each(tmp_path):
    (tmp_path / "gsm8k.json").write_text(json.dumps([BASE]))
    with pytest.raises(SgpoError, match=r"no file for subset\(s\) math; found: gsm8k"):
        load_processbench(str(tmp_path), ["gsm8k", "math"])
    assert list(load_processbench(str(tmp_path))) == ["gsm8k"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(BASE) + "\n{not json\n")
    with pytest.raises(SgpoError, match=r"broken.jsonl: line 2 is not JSON"):
        load_processbench(str(broken))
    (tmp_path / "object.json").write_text(json.dumps(BASE))
    with pytest.raises(SgpoError, match=r"object.json: expected a JSON list of items, got dict"):
        load_processbench(str(tmp_path / "object.json"))
    with pytest.raises(SgpoError, match=r"no such file or folder, and not a Hub dataset id"):
        load_processbench(str(tmp_path / "absent.json"))
    code, output = eval_judge("--data", tmp_path / "gsm8k.json", "--judge", "labels", "--judge-column", "nope",
                              "--out", tmp_path / "out")
    assert code == 2 and "gsm8k: no item has the column 'nope' the judge reads" in output


def test_a_label_missing_on_one_item_is_a_parse_failure_not_a_crash(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [BASE, {**BASE, "absent": 0}])
    code, output = eval_judge("--data", path, "--judge", "labels", "--judge-column", "absent", "--out", tmp_path / "o")
    assert code == 0, output
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())["subsets"]["x"]
    assert m["parse_failures"] == 1 and m["acc_erroneous"] == 50.0


def test_a_byte_order_mark_and_unicode_line_separators_inside_strings_are_read(tmp_path):
    item = {**BASE, "steps": ["a\u2028b", "c\x85d\re"]}
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([item], ensure_ascii=False).encode())
    (tmp_path / "raw.jsonl").write_text(json.dumps(item, ensure_ascii=False) + "\r\n", encoding="utf-8", newline="")
    for name in ("bom.json", "raw.jsonl"):
        [loaded] = load_processbench(str(tmp_path / name))[name.split(".")[0]]
        assert loaded.steps == item["steps"]
