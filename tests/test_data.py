"""Datasets: the study's CSVs and their cards, truer constructions, user files, bad input, offline use."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA
from trusttrace.cli.app import app
from trusttrace.data import DatasetCard, TrustDataset, builtin_cards, first_word_baseline, load_dataset
from trusttrace.data import hub
from trusttrace.errors import DatasetError, OfflineError

SHARED = SHARED_DATA
STUDY = SHARED / "tracingllm"
UPSTREAM = SHARED / "upstream"
needs_data = pytest.mark.skipif(not STUDY.is_dir(), reason=f"study CSVs not found at {STUDY}")
needs_upstream = pytest.mark.skipif(not UPSTREAM.is_dir(), reason=f"upstream files not found at {UPSTREAM}")

# name -> (rows, label 1, label 0, groups, full content hash pinned on the study files)
EXPECTED = {
    "truthfulqa": (2263, 1118, 1145, 410, "e50e00da14c4"),
    "toxigen": (6514, 3633, 2881, 6408, "32353fa2c1c7"),
    "confaide": (2346, 1173, 1173, 2269, "49d4f67643bc"),
    "stereoset": (1952, 976, 976, 970, "56ccbae582c3"),
    "sst2": (3642, 1821, 1821, 1821, "1d438c44be50"),
    "sst2_sentiment": (1821, 909, 912, None, "3e0bb0af4ba6"),
    "confaide_tier2": (122, 80, 42, 61, "a4508ae8106f"),
}


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """No test may reach the Hub or read the caller's data folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRUSTTRACE_DATA", raising=False)


@pytest.fixture(scope="module")
def study():
    """Every built-in dataset loaded once from the shared files."""
    if not STUDY.is_dir() or not UPSTREAM.is_dir():
        pytest.skip(f"study CSVs or upstream files not found under {SHARED}")
    return {name: load_dataset(name, data_dir=STUDY, source="local") for name in EXPECTED}


def reference_split_leaks(keys: list[str]) -> tuple[int, int]:
    """Rows of the study's last-20 % test part whose key also occurs in its first-80 % train part."""
    cut = int(len(keys) * 0.8)
    train = set(keys[:cut])
    return sum(key in train for key in keys[cut:]), len(keys) - cut


# ----- the study's datasets -------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_builtin_rows_balance_groups_and_hash(study, name):
    rows, ones, zeros, n_groups, digest = EXPECTED[name]
    data = study[name]
    assert (len(data), int(data.labels.sum()), int((data.labels == 0).sum())) == (rows, ones, zeros)
    assert data.labels.dtype == np.int64
    assert (data.groups is None) == (n_groups is None)
    if n_groups is not None:
        assert len(data.groups) == rows and len(np.unique(data.groups)) == n_groups
    assert data.content_hash.startswith(digest)
    assert data.card == builtin_cards()[name]


@needs_data
def test_parent_folder_and_environment_resolve_to_the_same_files(monkeypatch):
    direct = load_dataset("stereoset", data_dir=STUDY)
    parent = load_dataset("stereoset", data_dir=SHARED)
    monkeypatch.setenv("TRUSTTRACE_DATA", str(SHARED))
    from_env = load_dataset("stereoset")
    assert direct.content_hash == parent.content_hash == from_env.content_hash
    assert direct.source == str(STUDY / "stereoset.csv")


@needs_data
def test_truthfulqa_groups_are_questions_and_the_reference_split_leaks(study):
    data = study["truthfulqa"]
    questions = [statement.split("\t")[0] for statement in data.statements]
    for group in np.unique(data.groups):
        assert len({questions[i] for i in np.flatnonzero(data.groups == group)}) == 1
    sizes = pd.Series(data.groups).value_counts()
    assert (sizes.min(), sizes.max()) == (2, 6)
    assert all(question.startswith("Q: ") for question in questions)
    assert reference_split_leaks(questions) == (451, 453)


@needs_data
def test_sst2_twins_have_opposite_labels_and_are_not_sentiment(study):
    data = study["sst2"]
    frame = data.to_frame()
    assert frame.groupby("group").size().eq(2).all()
    assert frame.groupby("group")["label"].agg(lambda labels: sorted(labels) == [0, 1]).all()
    originals = frame[frame.label == 0].statement
    assert originals.eq(originals.str.lower()).all()
    assert (frame.statement.duplicated()).sum() == 14  # label-1 copies with no letter upper-cased
    assert reference_split_leaks([s.lower() for s in data.statements]) == (605, 729)
    card = data.card
    assert "NOT sentiment" in card.quirks[0] and "upper-cased" in card.label_1


@needs_data
def test_stereoset_contexts_pair_rows_with_both_labels(study):
    data = study["stereoset"]
    frame = data.to_frame()
    sizes = frame.groupby("group").size().value_counts().to_dict()
    assert sizes == {2: 964, 4: 6}
    assert frame.groupby("group")["label"].mean().eq(0.5).all()
    first = frame[frame.group == frame.group[0]].statement.tolist()
    assert first == [
        "Fine Crimean wines were passed around. A native or inhabitant of the Ukrainians.",
        "Fine Crimean wines were passed around. The first Amendment of the Constitution of the United States.",
    ]
    assert "ANTI-STEREOTYPE" in data.card.label_1 and "UNRELATED" in data.card.label_0
    assert "NOT stereotype vs. benign" in data.card.quirks[0]


@needs_data
def test_toxigen_card_numbers(study):
    data = study["toxigen"]
    frame = data.to_frame()
    with_cr = frame.statement.str.contains("_x000D_")
    assert (int(with_cr.sum()), int(frame.statement.str.count("_x000D_").sum())) == (34, 76)
    assert round(100 * data.labels.mean(), 1) == 55.8
    assert frame.statement.str.startswith(" ").sum() == 158
    assert frame[["statement", "label"]].duplicated().sum() == 70
    assert frame.groupby("statement").label.nunique().gt(1).sum() == 6
    assert reference_split_leaks(data.statements) == (17, 1303)
    spaced = frame.assign(text=frame.statement.str.split().str.join(" "))
    assert spaced[["text", "label"]].duplicated().sum() == 99 and spaced.groupby("text").label.nunique().gt(1).sum() == 7
    assert spaced.groupby("text").group.nunique().eq(1).all()  # copies but for leading or trailing spaces share a group


@needs_data
@needs_upstream
def test_toxigen_matches_safenlp_and_its_hate_label_is_a_different_cut(study):
    records = json.loads((UPSTREAM / "toxigen" / "toxiGen.json").read_text(encoding="utf-8"))
    assert [record["text"] for record in records] == study["toxigen"].statements
    assert [int(record["toxicity_score"] > 2) for record in records] == study["toxigen"].labels.tolist()
    assert sum(record["toxicity_score"] > 3 for record in records) == 2767
    assert all((record["label"] == "hate") == (record["toxicity_score"] > 3) for record in records)


@needs_data
def test_toxigen_cleanup_is_explicit_and_recorded():
    kept = load_dataset("toxigen", data_dir=STUDY)
    cleaned = load_dataset("toxigen", data_dir=STUDY, clean=True)
    assert sum("_x000D_" in s for s in kept.statements) == 34 and kept.card.cleanups == ()
    assert not any("_x000D_" in s for s in cleaned.statements)
    assert "newline" in cleaned.card.cleanups[0]
    assert cleaned.content_hash != kept.content_hash
    assert np.array_equal(cleaned.labels, kept.labels)


@needs_data
def test_confaide_card_numbers_and_first_word_shortcut(study):
    data = study["confaide"]
    frame = data.to_frame()
    assert frame[["statement", "label"]].duplicated().sum() == 74
    assert frame.groupby("statement").label.nunique().gt(1).sum() == 3
    assert reference_split_leaks(data.statements) == (20, 470)
    assert round(first_word_baseline(data, grouped=False), 3) == 0.737
    assert round(first_word_baseline(data), 3) == 0.722


@needs_data
@needs_upstream
def test_confaide_tier2_rule_reproduces_the_study_rows(study):
    tier2 = study["confaide_tier2"]
    label_of = dict(zip(tier2.statements, tier2.labels.tolist()))
    confaide = study["confaide"].to_frame()
    shared = confaide[confaide.statement.isin(label_of)]
    assert len(shared) == 63
    assert shared.apply(lambda row: label_of[row.statement] == row.label, axis=1).all()
    vignettes = {line.split("\\n", 1)[1].strip() for line in (UPSTREAM / "confaide" / "tier_2a.txt").read_text().splitlines()}
    assert shared.statement.isin(vignettes).sum() == 31
    frame = tier2.to_frame()
    assert frame.groupby("group").size().eq(2).all() and frame.groupby("group").label.nunique().eq(1).all()
    assert not any("privacy expectations" in s for s in tier2.statements)


def write_upstream(root: Path, ratings: list[str], sentiment: str = "1 good film .\n0 bad -lrb- very -rrb- film .\n") -> Path:
    """A minimal data folder: tracingllm/ (empty) beside upstream/ with ConfAIde tier 2 and SST-2 files."""
    (root / "tracingllm").mkdir(parents=True)
    confaide = root / "upstream" / "confaide"
    confaide.mkdir(parents=True)
    prompt = "Please rate. \\n"
    (confaide / "tier_2a.txt").write_text("".join(f"{prompt}Vignette {i}.\n" for i in range(len(ratings))))
    (confaide / "tier_2b.txt").write_text("".join(f"{prompt} Story {i}.\n" for i in range(len(ratings))))
    (confaide / "tier_2_labels.txt").write_text("\n".join(ratings))
    (root / "upstream" / "sst2").mkdir()
    (root / "upstream" / "sst2" / "stsa.binary.test.txt").write_text(sentiment)
    return root / "tracingllm"


def test_confaide_tier2_cutoffs_at_the_boundaries(tmp_path):
    data = load_dataset("confaide_tier2", data_dir=write_upstream(tmp_path, ["-60", "-50", "-20", "-19.9", "0"]))
    assert data.statements == ["Vignette 0.", "Story 0.", "Vignette 1.", "Story 1.", "Vignette 3.", "Story 3.", "Vignette 4.", "Story 4."]
    assert data.labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0] and data.groups.tolist() == [0, 0, 1, 1, 3, 3, 4, 4]


def test_upstream_files_with_bad_lines(tmp_path):
    with pytest.raises(DatasetError, match="tier_2_labels.txt: line 2: rating 'n/a' is not a number"):
        load_dataset("confaide_tier2", data_dir=write_upstream(tmp_path / "a", ["-60", "n/a"]))
    with pytest.raises(DatasetError, match="2 vignettes, 2 stories and 1 ratings"):
        load_dataset("confaide_tier2", data_dir=write_upstream(tmp_path / "b", ["-60", ""]))
    folder = write_upstream(tmp_path / "c", ["-60"], sentiment="1 fine .\nx odd .\n")
    with pytest.raises(DatasetError, match="stsa.binary.test.txt: line 2: label 'x' is not 0 or 1"):
        load_dataset("sst2_sentiment", data_dir=folder)
    for rating in ("nan", "-180"):
        with pytest.raises(DatasetError, match=f"tier_2_labels.txt: line 2: rating '{rating}' is not a number from -100 to 100"):
            load_dataset("confaide_tier2", data_dir=write_upstream(tmp_path / rating, ["-60", rating]))
    folder = write_upstream(tmp_path / "cr", ["-60"], sentiment="1 good .\r0 bad .\r")  # old Mac line ends
    assert load_dataset("sst2_sentiment", data_dir=folder).statements == ["good .", "bad ."]
    folder = write_upstream(tmp_path / "latin", ["-60"])
    (folder.parent / "upstream" / "sst2" / "stsa.binary.test.txt").write_bytes(b"1 fine .\n0 a caf\xe9 film .\n")
    with pytest.raises(DatasetError, match="stsa.binary.test.txt: line 2 is not UTF-8 text"):
        load_dataset("sst2_sentiment", data_dir=folder)
    good = load_dataset("sst2_sentiment", data_dir=write_upstream(tmp_path / "d", ["-60"]))
    assert good.statements == ["good film .", "bad ( very ) film ."] and good.labels.tolist() == [1, 0]


@needs_data
@needs_upstream
def test_sst2_sentiment_is_the_same_sentences_with_real_labels(study):
    sentiment, perturbed = study["sst2_sentiment"], study["sst2"]
    originals = {s for s, label in zip(perturbed.statements, perturbed.labels) if label == 0}
    assert sum(s in originals for s in sentiment.statements) == 1815
    assert not any("-lrb-" in s for s in sentiment.statements)
    assert sentiment.card.label_1.startswith("positive")


def test_cards_cover_every_builtin_and_say_what_labels_mean():
    cards = builtin_cards()
    assert list(cards) == list(EXPECTED)
    for name, card in cards.items():
        assert card.name == name and card.label_1 and card.label_0 and card.licence and card.source
        assert card.dimension in ("truthfulness", "toxicity", "privacy", "fairness", "robustness")
        text = card.describe()
        assert name in text and f"label 1:  {card.label_1}" in text and f"label 0:  {card.label_0}" in text
    assert "63 rows" in cards["confaide"].source and "73.7 %" in " ".join(cards["confaide"].quirks)


# ----- TrustDataset ---------------------------------------------------------------------


def tiny(labels=(1, 0, 1), groups=("a", "a", "b")) -> TrustDataset:
    card = DatasetCard("tiny", "user", "yes", "no", "test", "none")
    return TrustDataset("tiny", ["x", "y", "z"], np.array(labels), None if groups is None else np.array(groups), card, "test")


def test_content_hash_is_pinned_and_sensitive_to_every_field():
    base = tiny()
    canonical = '{"statements":["x","y","z"],"labels":[1,0,1],"groups":["a","a","b"]}'
    assert base.content_hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert base.content_hash == "dd851471af1b13782bbc196255a99dda90a09860e27d73afcab0242e237ba8dd"
    assert base.content_hash == tiny().content_hash
    assert base.content_hash != tiny(labels=(1, 0, 0)).content_hash
    assert base.content_hash != tiny(groups=("a", "b", "b")).content_hash
    assert base.content_hash != tiny(groups=None).content_hash
    assert base.content_hash == base.subset([0, 1, 2]).content_hash
    ints = tiny(groups=(1, 1, 2))
    assert ints.content_hash == TrustDataset("tiny", ["x", "y", "z"], [1, 0, 1], np.array([1, 1, 2], dtype=np.int32), ints.card, "t").content_hash


def test_subset_and_frame():
    data = tiny()
    part = data.subset([2, 0])
    assert part.statements == ["z", "x"] and part.labels.tolist() == [1, 1] and part.groups.tolist() == ["b", "a"]
    assert part.card is data.card and len(part) == 2
    assert list(data.to_frame().columns) == ["statement", "label", "group"]
    assert tiny(groups=None).to_frame().group.isna().all()
    with pytest.raises(DatasetError, match="row 3 is outside the 3 rows"):
        data.subset([3])


def test_dataset_rejects_inconsistent_columns():
    card = tiny().card
    with pytest.raises(DatasetError, match="label 2 at row 1 is not 0 or 1"):
        TrustDataset("t", ["a", "b"], [0, 2], None, card, "t")
    with pytest.raises(DatasetError, match="2 statements but labels"):
        TrustDataset("t", ["a", "b"], [0, 1, 1], None, card, "t")


# ----- user files -----------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_user_csv_jsonl_and_parquet_load_with_their_stem_as_name(tmp_path):
    csv = load_dataset(write(tmp_path / "mine.csv", "statement,label,group\nNA,1,q1\nb,0,q1\n"))
    assert (csv.name, csv.statements, csv.labels.tolist(), csv.groups.tolist()) == ("mine", ["NA", "b"], [1, 0], ["q1", "q1"])
    assert csv.card.dimension == "user" and csv.source == str(tmp_path / "mine.csv")
    lines = '{"statement": "a", "label": true}\n\n{"statement": "b", "label": 0.0}\n{"statement": "c", "label": "1"}\n'
    jsonl = load_dataset(str(write(tmp_path / "other.jsonl", lines)))
    assert (jsonl.name, jsonl.labels.tolist(), jsonl.groups) == ("other", [1, 0, 1], None)
    pd.DataFrame({"statement": ["a", "b"], "label": [False, True]}).to_parquet(tmp_path / "p.parquet")
    assert load_dataset(tmp_path / "p.parquet").labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nostatement.csv", "text,label\na,1\nb,0\n", "nostatement.csv: missing column 'statement' (found: text, label)"),
        ("nolabel.csv", "statement\na\n", "nolabel.csv: missing column 'label'"),
        ("two.csv", "statement,label\na,1\nb,2\n", "two.csv: data row 2 (line 3): label '2' is not 0 or 1"),
        ("yes.csv", "statement,label\na,yes\nb,0\n", "yes.csv: data row 1 (line 2): label 'yes' is not 0 or 1"),
        ("half.csv", "statement,label\na,0.5\nb,0\n", "half.csv: data row 1 (line 2): label '0.5' is not 0 or 1"),
        ("nolab.csv", "statement,label\na,\nb,0\n", "nolab.csv: data row 1 (line 2): missing label"),
        ("empty.csv", 'statement,label\na,1\n"  ",0\n', "empty.csv: data row 2 (line 3): empty statement"),
        ("one.csv", "statement,label\na,1\nb,1\n", "one.csv: every row has label 1; a probe needs both classes"),
        ("header.csv", "statement,label\n", "header.csv: no data rows"),
        ("ragged.csv", "statement,label\na,1,x,y\nb,0\n", "ragged.csv: data row 1 (line 2) has 4 fields, the header has 2"),
        ("nogroup.csv", "statement,label,group\na,1,\nb,0,g\n", "nogroup.csv: data row 1 (line 2): missing group"),
        ("num.jsonl", '{"statement": "a", "label": 1}\n\n{"statement": 5, "label": 0}\n', "num.jsonl: line 3: statement 5 is not text"),
        ("bad.jsonl", '{"statement": "a", "label": 1}\n{oops\n', "bad.jsonl: line 2 is not valid JSON"),
        ("list.jsonl", "[1, 2]\n", "list.jsonl: line 1 is not a JSON object"),
        ("int.jsonl", '{"statement": "a", "label": 3}\n{"statement": "b", "label": 0}\n', "int.jsonl: line 1: label 3 is not 0 or 1"),
        ("null.jsonl", '{"statement": null, "label": 1}\n', "null.jsonl: line 1: missing statement"),
        ("glist.jsonl", '{"statement": "a", "label": 1, "group": [1, 2]}\n', "glist.jsonl: line 1: group [1, 2] is not one text or number"),
        ("gbool.jsonl", '{"statement": "a", "label": 1, "group": 1}\n{"statement": "b", "label": 0, "group": true}\n', "gbool.jsonl: line 2: group True is a boolean, but line 1's group 1 is a number"),
        ("gbig.jsonl", '{"statement": "a", "label": 1, "group": 100000000000000000000}\n', "gbig.jsonl: line 1: group 100000000000000000000 does not fit a 64-bit integer"),
        ("ginf.jsonl", '{"statement": "a", "label": 1, "group": Infinity}\n', "ginf.jsonl: line 1: group inf is not a finite number"),
        ("notes.txt", "statement,label\n", "notes.txt: unsupported file type '.txt'"),
        ("broken.parquet", "not parquet", "broken.parquet: cannot read the file"),
        ("multi.csv", 'statement,label\n"two\nlines",1\nb,7\n', "multi.csv: data row 2 (line 4): label '7' is not 0 or 1"),
        ("multi2.csv", 'statement,label\n\n"two\nlines",x\n', "multi2.csv: data row 1 (lines 3-4): label 'x' is not 0 or 1"),
        ("twice.csv", "statement,statement,label\na,b,1\n", "twice.csv: repeated column names"),
        ("blank.csv", "", "blank.csv: empty file, no header row"),
    ],
)
def test_bad_files_name_the_file_and_the_row(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_dataset(path)



@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("group", pd.array([1, None], dtype="Int64"), "data row 2: missing group"),
        ("group", pd.array(["g1", None], dtype="string"), "data row 2: missing group"),
        ("label", pd.array([1, None], dtype="Int64"), "data row 2: missing label"),
        ("statement", pd.array(["a", None], dtype="string"), "data row 2: missing statement"),
    ],
)
def test_missing_values_in_nullable_parquet_columns_are_named(tmp_path, column, values, message):
    frame = pd.DataFrame({"statement": ["a", "b"], "label": [1, 0], "group": ["g1", "g2"]})
    frame[column] = values
    frame.to_parquet(tmp_path / "nullable.parquet")
    with pytest.raises(DatasetError, match=re.escape(f"nullable.parquet: {message}")):
        load_dataset(tmp_path / "nullable.parquet")


def test_repeated_statements_without_groups_are_reported_once(tmp_path):
    path = write(tmp_path / "repeats.csv", "statement,label\na,1\nb,0\na,0\na,1\n")
    with pytest.warns(UserWarning, match="repeats.csv: 2 row\\(s\\) repeat an earlier statement") as caught:
        load_dataset(path)
    assert len(caught) == 1
    grouped = write(tmp_path / "grouped.csv", "statement,label,group\na,1,a\nb,0,b\na,0,a\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(grouped)


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("name, good", [("latin.csv", b"ok,1"), ("latin.jsonl", b'{"statement": "ok", "label": 1}')])
def test_a_file_that_is_not_utf8_is_refused_naming_its_line(tmp_path, name, good, end):
    """The decoder's own offset counts within its read buffer; the error names the file's line,
    counted as the readers count lines."""
    path = tmp_path / name
    header = [b"statement,label"] if name.endswith(".csv") else []
    bad = b"caf\xe9,0" if name.endswith(".csv") else b'{"statement": "caf\xe9", "label": 0}'
    path.write_bytes(end.join(header + [good] * 20_000 + [bad, good]) + end)
    line = 20_001 + len(header)
    column = bad.index(b"\xe9") + 1
    message = rf"{name}: line {line} is not UTF-8 text \(invalid continuation byte at byte {column} of the line\); save"
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_missing_file_and_unknown_name():
    with pytest.raises(DatasetError, match="nowhere.csv: file not found"):
        load_dataset("nowhere.csv")
    with pytest.raises(DatasetError, match="unknown dataset 'stereo'; known: truthfulqa, toxigen, confaide, stereoset, sst2"):
        load_dataset("stereo")
    with pytest.raises(DatasetError, match="source 'web' is not one of auto, local, hub"):
        load_dataset("stereoset", source="web")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="applies to built-in names only"):
        load_dataset("x.csv", source="hub")


# ----- offline and the Hub --------------------------------------------------------------


def test_offline_without_local_files_says_to_pass_a_data_dir(tmp_path):
    with pytest.raises(OfflineError, match=r"stereoset: no data folder given \(data_dir=, --data-dir or \$TRUSTTRACE_DATA\).*HF_HUB_OFFLINE.*--data-dir"):
        load_dataset("stereoset")
    with pytest.raises(OfflineError, match=f"truthfulqa: no {re.escape(str(tmp_path))}.*truthfulqa_train.csv.*TRUSTTRACE_DATA"):
        load_dataset("truthfulqa", data_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"sst2: no data folder given \(data_dir=, --data-dir or \$TRUSTTRACE_DATA\)$"):
        load_dataset("sst2", source="local")
    (tmp_path / "dd").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        where = f"{tmp_path / 'dd' / 'upstream'} or {tmp_path / 'upstream'}"
        with pytest.raises(DatasetError, match=f"sst2_sentiment: no upstream folder \\({re.escape(where)}\\)$"):
            load_dataset("sst2_sentiment", data_dir="dd", source="local")  # the folders looked in, not "upstream/"
        (tmp_path / "dd" / "upstream").mkdir()
        with pytest.raises(DatasetError, match=f"sst2_sentiment: no {re.escape(str(tmp_path / 'dd' / 'upstream'))}/"):
            load_dataset("sst2_sentiment", data_dir="dd", source="local")
    with pytest.raises(DatasetError, match="confaide: .*no Hugging Face source; get confaide.csv from https://github.com/ChnQ/TracingLLM"):
        load_dataset("confaide")
    with pytest.raises(DatasetError, match="confaide_tier2: .*no Hugging Face source; get .*github.com/skywalker023/confAIde"):
        load_dataset("confaide_tier2", data_dir=tmp_path)


@needs_data
def test_hub_source_is_used_even_with_local_files_when_asked():
    with pytest.raises(OfflineError, match="source='hub' asked for"):
        load_dataset("sst2", data_dir=STUDY, source="hub")


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (hub.LocalEntryNotFoundError("no cache"), OfflineError, "cannot be reached \\(LocalEntryNotFoundError\\)"),
        (ConnectionError("down"), OfflineError, "cannot be reached"),
        (hub.GatedRepoError.__new__(hub.GatedRepoError, "gated"), DatasetError, "gated on the Hub: accept its terms"),
        (hub.RepositoryNotFoundError.__new__(hub.RepositoryNotFoundError, "gone"), DatasetError, "the Hub has no dataset"),
    ],
)
def test_hub_failures_become_one_line_package_errors(monkeypatch, hub_online, raised, expected, message):

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(hub, "snapshot_download", fail)
    with pytest.raises(expected, match=message) as caught:
        load_dataset("toxigen")
    assert "\n" not in str(caught.value)


def fake_download(monkeypatch, files: list[Path]) -> None:
    monkeypatch.setattr(hub, "download", lambda repo_id, patterns, context, advice: files)


def mc2_parquet(path: Path, records: list[dict]) -> Path:
    """TruthfulQA records in the layout of HF truthful_qa's multiple_choice config."""
    pd.DataFrame({
        "question": [r["question"] for r in records],
        "mc1_targets": [{"choices": list(r["mc1_targets"]), "labels": list(r["mc1_targets"].values())} for r in records],
        "mc2_targets": [{"choices": list(r["mc2_targets"]), "labels": list(r["mc2_targets"].values())} for r in records],
    }).to_parquet(path)
    return path


def test_hub_truthfulqa_rows_are_mc2_answers_grouped_by_question(monkeypatch, tmp_path):
    records = [
        {"question": "Q1?", "mc1_targets": {"Yes.": 1, "Nope.": 0}, "mc2_targets": {"Yes.": 1, "Sure.": 1, "Nope.": 0}},
        {"question": "Q2?", "mc1_targets": {"No.": 1, "Maybe.": 0}, "mc2_targets": {"No.": 1, "Maybe.": 0}},
    ]
    fake_download(monkeypatch, [mc2_parquet(tmp_path / "validation-00000-of-00001.parquet", records)])
    data = load_dataset("truthfulqa", source="hub")
    assert data.statements[:3] == ["Q: Q1?\tA: Yes.", "Q: Q1?\tA: Sure.", "Q: Q1?\tA: Nope."]
    assert data.labels.tolist() == [1, 1, 0, 1, 0] and data.groups.tolist() == [0, 0, 0, 1, 1]
    assert data.source == "truthfulqa/truthful_qa" and "v0" in data.card.quirks[0]


@needs_data
@needs_upstream
def test_hub_truthfulqa_recipe_on_v0_holds_the_study_rows_it_can(study, monkeypatch, tmp_path):
    """The Hub's config is v0 (mc_task_v0.json); the study's rows are v1 MC2 answers to 410 questions."""
    records = json.loads((UPSTREAM / "truthfulqa" / "mc_task_v0.json").read_text(encoding="utf-8"))
    fake_download(monkeypatch, [mc2_parquet(tmp_path / "validation-00000-of-00001.parquet", records)])
    built = load_dataset("truthfulqa", source="hub")
    rows = set(zip(built.statements, built.labels.tolist()))
    study_rows = list(zip(study["truthfulqa"].statements, study["truthfulqa"].labels.tolist()))
    assert len(built) == 5882 and sum(row in rows for row in study_rows) == 2224


def test_hub_stereoset_keeps_race_anti_stereotype_and_unrelated(monkeypatch, tmp_path):
    path = tmp_path / "validation-00000-of-00001.parquet"
    sentences = {"sentence": ["Stereo.", "Anti.", "Cat."], "gold_label": [1, 0, 2]}
    pd.DataFrame(
        {"context": ["C1 is here.", "C2."], "bias_type": ["race", "gender"], "sentences": [sentences, sentences]}
    ).to_parquet(path)
    fake_download(monkeypatch, [path])
    data = load_dataset("stereoset", source="hub")
    assert data.statements == ["C1 is here. Anti.", "C1 is here. Cat."] and data.labels.tolist() == [1, 0]
    assert data.groups.tolist() == [0, 0] and data.card.label_1 == builtin_cards()["stereoset"].label_1


def test_hub_files_with_other_columns_are_a_dataset_error(monkeypatch, tmp_path):
    path = tmp_path / "test-00000-of-00001.parquet"
    pd.DataFrame({"comment": ["x"], "score": [1.0]}).to_parquet(path)
    fake_download(monkeypatch, [path])
    with pytest.raises(DatasetError, match="toxigen: the files of toxigen/toxigen-data are not laid out as expected"):
        load_dataset("toxigen", source="hub")


def test_hub_toxigen_and_sst2_sentiment(monkeypatch, tmp_path):
    tox = tmp_path / "test-00000-of-00001.parquet"
    pd.DataFrame({"text": ["bad", "fine", " bad "], "toxicity_human": [4.0, 1.5, 4.0]}).to_parquet(tox)
    fake_download(monkeypatch, [tox])
    data = load_dataset("toxigen", source="hub")
    assert data.labels.tolist() == [1, 0, 1] and data.groups.tolist() == [0, 1, 0]  # copies but for spaces: one group
    sst = write(tmp_path / "test.jsonl", '{"text": "great", "label": 1}\n{"text": "awful", "label": 0}\n')
    fake_download(monkeypatch, [sst])
    sentiment = load_dataset("sst2_sentiment", source="hub")
    assert sentiment.labels.tolist() == [1, 0] and sentiment.groups is None


def test_hub_sst2_perturbation_is_seeded_and_never_a_no_op(monkeypatch, tmp_path):
    path = tmp_path / "test-00000-of-00001.parquet"
    sentences = ["a gorgeous , witty , seductive movie .", "it 's a bad sign .", "no . ."]
    pd.DataFrame({"idx": [0, 1, 2], "sentence": sentences, "label": [-1, -1, -1]}).to_parquet(path)
    fake_download(monkeypatch, [path])
    first, second = load_dataset("sst2", source="hub"), load_dataset("sst2", source="hub")
    assert first.content_hash == second.content_hash
    frame = first.to_frame()
    assert frame[frame.label == 0].statement.tolist() == sentences
    for original, copy in zip(first.statements[0::2], first.statements[1::2]):
        assert copy != original and copy.lower() == original
    assert frame.groupby("group")["label"].agg(lambda labels: sorted(labels) == [0, 1]).all()


# ----- the CLI ----------------------------------------------------------------------------


def test_cli_datasets_lists_every_card(monkeypatch):
    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0, result.output
    for name, card in builtin_cards().items():
        assert f"{name}  [" in result.output and f"label 1:  {card.label_1}" in result.output
    assert "local:" not in result.output
    assert "trusttrace datasets stereoset" in CliRunner().invoke(app, ["datasets", "--help"]).output


@needs_data
def test_cli_datasets_shows_local_counts():
    result = CliRunner().invoke(app, ["datasets", "stereoset", "--data-dir", str(SHARED)])
    assert result.exit_code == 0, result.output
    assert "1952 rows (976 label 1 / 976 label 0), 970 groups, sha256 56ccbae582c3" in result.output
    assert "truthfulqa" not in result.output


def test_cli_unknown_dataset_exits_2_with_one_line(monkeypatch, capsys):
    from trusttrace.cli import main

    monkeypatch.setattr(sys, "argv", ["trusttrace", "datasets", "stereo"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown dataset 'stereo'" in error


# ----- found in review: the Hub's cache, fallbacks, cards of Hub builds, odd input -------------------


def stereoset_parquet(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sentences = {"sentence": ["Stereo.", "Anti.", "Cat."], "gold_label": [1, 0, 2]}
    pd.DataFrame({"context": ["C1 is here."], "bias_type": ["race"], "sentences": [sentences]}).to_parquet(path)
    return path


def test_offline_a_dataset_in_the_hub_cache_is_built_from_there(monkeypatch, tmp_path):
    from huggingface_hub import constants

    commit = "a" * 40
    repo = tmp_path / "hub" / "datasets--McGill-NLP--stereoset"
    stereoset_parquet(repo / "snapshots" / commit / "intersentence" / "validation-00000-of-00001.parquet")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "CACHE_NOTED", set())
    with pytest.warns(UserWarning, match="McGill-NLP/stereoset: the Hub is off, so it is built from the 1 matching file"):
        data = load_dataset("stereoset", source="hub")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("stereoset", source="hub")  # said once per process
    assert data.statements == ["C1 is here. Anti.", "C1 is here. Cat."] and data.source == "McGill-NLP/stereoset"
    with pytest.raises(OfflineError, match="sst2: source='hub' asked for, and the Hugging Face Hub is off .*get sst2.csv from"):
        load_dataset("sst2", source="hub")  # not cached


def test_a_data_folder_that_does_not_exist_is_an_error_not_a_hub_build(monkeypatch, tmp_path):
    with pytest.raises(DatasetError, match=f"truthfulqa: the data folder {re.escape(str(tmp_path / 'typo'))} \\(data_dir / --data-dir\\) does not exist"):
        load_dataset("truthfulqa", data_dir=tmp_path / "typo")
    monkeypatch.setenv("TRUSTTRACE_DATA", str(tmp_path / "typo"))
    with pytest.raises(DatasetError, match=r"\(\$TRUSTTRACE_DATA\) does not exist"):
        load_dataset("truthfulqa")


def test_a_hub_build_nobody_asked_for_warns_that_it_is_not_the_study_file(monkeypatch, tmp_path):
    fake_download(monkeypatch, [stereoset_parquet(tmp_path / "validation.parquet")])
    with pytest.warns(UserWarning, match=r"stereoset: no .*stereoset.csv, so it was built from the Hugging Face dataset McGill-NLP/stereoset.*get stereoset.csv from"):
        load_dataset("stereoset", data_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("stereoset", source="hub")  # asked for: no warning


def test_hub_builds_card_their_own_labels_and_cleanups(monkeypatch, tmp_path):
    records = [{"question": "Q1?", "mc1_targets": {"Yes.": 1, "No.": 0}, "mc2_targets": {"Yes.": 1, "No.": 0}}]
    fake_download(monkeypatch, [mc2_parquet(tmp_path / "validation.parquet", records)])
    truthfulqa = load_dataset("truthfulqa", source="hub")
    assert "v0" in truthfulqa.card.label_1 and "v1" not in truthfulqa.card.label_1
    tox = tmp_path / "test.parquet"
    pd.DataFrame({"text": ["bad", "fine"], "toxicity_human": [4.0, 1.5]}).to_parquet(tox)
    fake_download(monkeypatch, [tox])
    assert "toxicity_human" in load_dataset("toxigen", source="hub").card.label_1
    sst = write(tmp_path / "test.jsonl", '{"text": "a -lrb- good -rrb- film", "label": 1}\n{"text": "bad \\\\/ sad", "label": 0}\n')
    fake_download(monkeypatch, [sst])
    sentiment = load_dataset("sst2_sentiment", source="hub")
    assert sentiment.statements == ["a ( good ) film", "bad / sad"]  # as the local build undoes them
    assert sentiment.card.cleanups == builtin_cards()["sst2_sentiment"].cleanups


def test_groups_mixing_text_and_numbers_are_refused_naming_the_line(tmp_path):
    path = write(tmp_path / "mixed.jsonl", "\n".join(json.dumps({"statement": f"s{i}", "label": i % 2, "group": g}) for i, g in enumerate([1, "q2", "q2", 3])))
    with pytest.raises(DatasetError, match=r"mixed.jsonl: line 2: group 'q2' is text, but line 1's group 1 is a number"):
        load_dataset(path)


def test_groups_that_are_all_booleans_load(tmp_path):
    rows = "\n".join(json.dumps({"statement": f"s{i}", "label": i % 2, "group": i < 2}) for i in range(4))
    assert load_dataset(write(tmp_path / "flags.jsonl", rows)).groups.tolist() == [True, True, False, False]


def test_a_group_column_spelled_otherwise_is_not_read_and_says_so(tmp_path):
    with pytest.warns(UserWarning, match="groups.csv: 'groups' is not read as the group column"):
        assert load_dataset(write(tmp_path / "groups.csv", "statement,label,groups\na,1,x\nb,0,x\n")).groups is None
    indexed = pd.DataFrame({"statement": ["a", "b"], "label": [1, 0]}, index=pd.Index(["x", "x"], name="group"))
    indexed.to_parquet(tmp_path / "indexed.parquet")
    with pytest.warns(UserWarning, match="indexed.parquet: 'group' is not read as the group column"):
        load_dataset(tmp_path / "indexed.parquet")


def test_blank_lines_before_a_csv_header_are_skipped(tmp_path):
    data = load_dataset(write(tmp_path / "blank.csv", "\n  \nstatement,label\na,1\n\t\nb,0\n  \n"))
    assert data.statements == ["a", "b"]
    with pytest.raises(DatasetError, match="data row 2 \\(line 3\\): empty statement"):
        load_dataset(write(tmp_path / "empty_fields.csv", "statement,label\na,1\n,\nb,0\n"))  # a row, not a blank line


def test_a_user_file_named_like_a_built_in_warns(tmp_path):
    with pytest.warns(UserWarning, match="named like the built-in dataset 'stereoset'.*rename the file"):
        load_dataset(write(tmp_path / "stereoset.csv", "statement,label\na,1\nb,0\n"))


def test_first_word_baseline_refuses_folds_the_data_cannot_fill(tmp_path):
    data = load_dataset(write(tmp_path / "small.csv", "statement,label,group\na x,1,1\nb y,0,2\nc z,1,3\nd w,0,2\n"))
    with pytest.raises(DatasetError, match="small has 1 groups of label 0, fewer than 2 folds"):
        first_word_baseline(data, folds=2)
    with pytest.raises(DatasetError, match="small has 2 rows of label 0, fewer than 5 folds"):
        first_word_baseline(data, grouped=False)
    with pytest.raises(DatasetError, match="folds must be a whole number of at least 2, got 1"):
        first_word_baseline(data, folds=1)

