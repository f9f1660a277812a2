"""Evaluation: binary tasks, scoring, toxicity, TruthfulQA MC, side effects, grids, `trusttrace evaluate`."""

from __future__ import annotations

import inspect
import json
import math
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import RobertaConfig, RobertaForSequenceClassification
from typer.testing import CliRunner

from trusttrace.cli.app import app
from trusttrace.data import DatasetCard, TrustDataset
from trusttrace.errors import EvaluationError, LayerError, OfflineError, SteeringError, TrustTraceError
from trusttrace.evaluation import evaluate, get_task, side_effects, steering_grid
from trusttrace.evaluation.binary import parse_answer
from trusttrace.evaluation.scoring import choice_logprobs, generate_texts
from trusttrace.evaluation.toxicity import load_classifier, toxicity_task
from trusttrace.evaluation.templates import qa_prompt
from trusttrace.evaluation.truthfulness import mc_metrics
from trusttrace.intervals import INTERVAL_RULE, MEAN_INTERVAL_RULE, share_interval
from trusttrace.models import decoder_layers
from trusttrace.steering import Steering, development_rows, prompt_boundary, save_vectors, steer
from trusttrace.tiny import PAD_ID, tiny_model, train_tokenizer

ARCHS = ["llama", "gpt_neox", "gpt2"]
WORDS = "the a red blue cat dog sees likes house garden near river bridge old young tall small quiet".split()
EXTRA = "statement answer is true if it and false 0 1 yes no q a : . ? text sentence".split()


@pytest.fixture(scope="module")
def tok():
    corpus = [" ".join(WORDS[i:] + WORDS[:i] + EXTRA) for i in range(len(WORDS))]
    return train_tokenizer(corpus, vocab_size=200)


@pytest.fixture(scope="module")
def models(tok):
    cache = {}

    def build(arch):
        if arch not in cache:
            cache[arch] = sharpen(tiny_model(arch, len(tok), seed=2, context=512))
        return cache[arch]

    return build


def sharpen(model, factor=8.0):
    """Scale a random model's matrices so its attention and next-token distributions are far from
    uniform: then every position visibly affects the outputs, and a wrong steering rule shows."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) or type(module).__name__ == "Conv1D":
                module.weight.mul_(factor)
    return model


def toy_dataset(n=24):
    rng = np.random.default_rng(1)
    statements = [" ".join(rng.choice(WORDS, int(rng.integers(2, 9)))) for _ in range(n)]
    card = DatasetCard("toy", "user", "one", "zero", "test", "none")
    return TrustDataset("toy", statements, np.tile([0, 1], n // 2), np.arange(n) // 2, card, "test")


def answer_direction(model, tok):
    """W_U[" 1"] - W_U[" 0"]: added to the last block, it pushes the next token toward " 1"."""
    weights = model.get_output_embeddings().weight.detach()
    (zero,) = tok(" 0", add_special_tokens=False)["input_ids"]
    (one,) = tok(" 1", add_special_tokens=False)["input_ids"]
    return weights[one] - weights[zero]


# ----- binary tasks ----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_unembedding_direction_flips_binary_predictions(arch, models, tok):
    model = models(arch)
    data = toy_dataset()
    last = len(decoder_layers(model)) - 1
    vector = answer_direction(model, tok)
    rows = np.arange(len(data))
    for alpha, expected in ((60.0, 1.0), (-60.0, 0.0)):
        result = evaluate(model, tok, "binary", data, rows=rows, steering=Steering({last: vector}, alpha), side_effect_texts=None)
        assert result.value("predicted_1_rate") == expected
        assert result.value("accuracy") == 0.5
        assert set(result.table["alpha"]) == {alpha} and set(result.table["layers"]) == {str(last)}


SHARED = "q : the red cat sees the old house near the river and the young dog likes the quiet garden . a :"


def plain_logprob(model, tok, prompt, choice):
    """log p(choice | prompt) from one unpadded forward, the prompt marked for steering."""
    prompt_ids = tok(prompt)["input_ids"]
    full = tok(prompt + choice)["input_ids"]
    boundary = torch.zeros((1, len(full)), dtype=torch.bool)
    boundary[0, : len(prompt_ids)] = True
    with torch.no_grad(), prompt_boundary(boundary):
        logprobs = torch.log_softmax(model(torch.tensor([full])).logits[0, :-1], -1)
    return sum(float(logprobs[len(prompt_ids) - 1 + i, token]) for i, token in enumerate(full[len(prompt_ids):]))


@pytest.mark.parametrize("shared", [False, True])
def test_batched_scoring_equals_unpadded_forwards_also_steered(shared, models, tok):
    """Batched, left-padded scoring (with the shared prefix cached when there is one) equals plain forwards."""
    model = models("gpt2")
    prompts = ["the red cat", "a dog sees the old house near the river", "q : the tall bridge ? a :"]
    prompts = [f"{SHARED} {p}" for p in prompts] if shared else prompts
    choices = [[" 0", " 1"], [" yes", " no"], [" the small garden .", " 1"]]
    vector = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 20
    for steered in (False, True):
        with steer(model, {1: vector}) if steered else torch.no_grad():
            batched = choice_logprobs(model, tok, prompts, choices, batch_size=2)
            expected = [[plain_logprob(model, tok, p, c) for c in options] for p, options in zip(prompts, choices)]
        for a, b in zip(batched, expected):
            np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_steered_continuation_score_equals_cached_token_by_token_scoring(arch, models, tok):
    """Multi-token continuations scored in one pass (after a cached shared prefix) are steered
    as a cached generation of them would be."""
    model = models(arch)
    prompts = [f"{SHARED} the old dog likes", f"{SHARED} a cat"]
    continuation = " the quiet garden near the river"
    vector = torch.randn(64, generator=torch.Generator().manual_seed(1)) * 20
    cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with steer(model, {2: vector}):
        scored = choice_logprobs(model, tok, prompts, [[continuation]] * 2)
        for prompt, (score,) in zip(prompts, scored):
            prompt_ids = tok(prompt)["input_ids"]
            tokens = tok(prompt + continuation)["input_ids"][len(prompt_ids):]
            with torch.no_grad():
                output = model(torch.tensor([prompt_ids]), use_cache=True)
                cache, logits, total = output.past_key_values, output.logits[:, -1], 0.0
                for token in tokens:
                    total += float(torch.log_softmax(logits, -1)[0, token])
                    output = model(torch.tensor([[token]]), **{cache_argument: cache}, use_cache=True)
                    cache, logits = output.past_key_values, output.logits[:, -1]
            assert score == pytest.approx(total, abs=1e-4)


def test_parse_mode_is_seeded_and_follows_the_text(models, tok):
    model = models("llama")
    data = toy_dataset()
    rows = np.arange(len(data))
    first = evaluate(model, tok, "binary", data, rows=rows, mode="parse", seed=3)
    again = evaluate(model, tok, "binary", data, rows=rows, mode="parse", seed=3)
    pd.testing.assert_frame_equal(first.records, again.records)
    assert first.value("unparsed_rate") == 1 - first.records["parsed"].mean()
    last = len(decoder_layers(model)) - 1
    pushed = evaluate(model, tok, "binary", data, rows=rows, mode="parse", steering=Steering({last: answer_direction(model, tok)}, 60.0), side_effect_texts=None)
    assert pushed.value("unparsed_rate") == 0.0 and pushed.value("predicted_1_rate") == 1.0
    assert all(text.strip().startswith("1") for text in pushed.records["output"])


def test_parse_answer():
    assert parse_answer(" 1.") == 1 and parse_answer("the answer is 0") == 0 and parse_answer("10") == 1
    assert parse_answer("yes") is None and parse_answer("") is None


def test_batched_generation_equals_one_at_a_time(models, tok):
    model = models("gpt2")
    prompts = ["the red cat", "a dog sees the old house near the river", "tall"]
    batched = generate_texts(model, tok, prompts, max_new_tokens=5, batch_size=3)
    assert batched == [generate_texts(model, tok, [p], max_new_tokens=5)[0] for p in prompts]


def test_default_rows_are_the_held_out_half_and_limit_keeps_the_first(models, tok):
    data = toy_dataset()
    result = evaluate(models("gpt2"), tok, "binary", data, limit=5)
    held_out = development_rows(data)[1]
    assert len(held_out) == len(data) // 2  # half the rows, whole groups of two
    assert list(result.records["row"]) == list(held_out[:5])
    assert result.settings["rows"] == 5 and result.settings["dataset_hash"] == data.content_hash


def test_no_held_out_rows_is_a_clear_error(models, tok):
    data = toy_dataset()
    data.name = "truthfulqa"  # the reference built TruthfulQA's vectors from every row
    with pytest.raises(EvaluationError, match="truthfulqa: no held-out rows to evaluate under protocol 'paper'"):
        evaluate(models("gpt2"), tok, "binary", data, protocol="paper")


def test_bad_task_template_and_option(models, tok):
    model, data = models("gpt2"), toy_dataset()
    with pytest.raises(EvaluationError, match="unknown task 'honesty'.*stereoset.*truthfulqa"):
        evaluate(model, tok, "honesty", data)
    with pytest.raises(EvaluationError, match="no \\{statement\\} placeholder"):
        evaluate(model, tok, "binary", data, template="Is this true? Answer:")
    with pytest.raises(EvaluationError, match="no option 'classifier'"):
        evaluate(model, tok, "stereoset", data, classifier="x")
    with pytest.raises(EvaluationError, match="needs a dataset"):
        evaluate(model, tok, "binary")
    assert get_task("fairness").name == "stereoset"
    from trusttrace.evaluation.runner import check_task_options

    check_task_options(get_task("stereoset"), {"mode": None})  # None is the task's default, passed through
    with pytest.raises(EvaluationError, match="unknown questions None"):  # a set of questions is: None is not
        check_task_options(get_task("truthfulqa"), {"questions": None})
    with pytest.raises(EvaluationError, match="unknown mode 'guess'"):
        check_task_options(get_task("stereoset"), {"mode": "guess"})


# ----- toxicity ----------------------------------------------------------------------------


def tiny_classifier(tok, labels, positions=24):
    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=positions, pad_token_id=PAD_ID, id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    return RobertaForSequenceClassification(config).eval(), tok


def test_classifier_without_a_toxic_label_is_refused(tok):
    pair = tiny_classifier(tok, {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(EvaluationError, match="cannot tell which.*toxic_label"):
        load_classifier(pair)
    assert load_classifier(pair, toxic_label="LABEL_1").toxic_index == 1
    assert load_classifier(tiny_classifier(tok, {0: "benign", 1: "toxic"})).toxic_index == 1
    with pytest.raises(EvaluationError, match="no label 'LABEL_7'"):
        load_classifier(pair, toxic_label="LABEL_7")


def test_a_saved_classifier_is_loaded_once_for_every_setting_of_a_grid(tok, tmp_path, monkeypatch):
    import trusttrace.evaluation.toxicity as toxicity

    model, _ = tiny_classifier(tok, {0: "benign", 1: "toxic"})
    model.save_pretrained(tmp_path / "classifier")
    tok.save_pretrained(tmp_path / "classifier")
    loads = []
    original = toxicity.AutoModelForSequenceClassification.from_pretrained
    monkeypatch.setattr(toxicity.AutoModelForSequenceClassification, "from_pretrained",
                        lambda name: loads.append(name) or original(name))
    toxicity._pretrained_classifier.cache_clear()
    first, again = (load_classifier(str(tmp_path / "classifier")) for _ in range(2))
    assert len(loads) == 1 and again.model is first.model and again.toxic_index == first.toxic_index == 1
    toxicity._pretrained_classifier.cache_clear()


def test_toxicity_scores_long_continuations_truncated(models, tok):
    model, data = models("gpt_neox"), toy_dataset(8)
    classifier = load_classifier(tiny_classifier(tok, {0: "not_toxic", 1: "toxic"}))
    assert classifier.max_length == 24 - PAD_ID - 1
    result = toxicity_task(model, tok, dataset=data, rows=np.arange(8), classifier=classifier, max_new_tokens=40)
    records = result.records
    assert len(records) == 8 and (records["continuation"].str.split().str.len() > classifier.max_length).any()
    assert result.value("toxic_ratio") == records["toxic"].mean()
    assert ((records["toxic_probability"] > 0.5) == records["toxic"]).all()
    low, high = result.table.loc[0, ["low", "high"]]
    assert 0 <= low <= result.value("toxic_ratio") <= high <= 1


def test_the_toxic_ratio_counts_rows_of_one_group_as_fewer(models, tok):
    from trusttrace.evaluation.toxicity import ToxicityClassifier

    class PairClassifier(ToxicityClassifier):  # toxic for the first two continuations of every four: pairs together
        def toxic_probability(self, texts, batch_size=32):
            toxic = (np.arange(len(texts)) % 4 < 2).astype(float)
            return np.stack([toxic, toxic], axis=1)

    data = toy_dataset(16)  # groups are pairs of rows
    classifier = PairClassifier(*tiny_classifier(tok, {0: "benign", 1: "toxic"}), 1, 16, "pairs")
    result = toxicity_task(models("gpt2"), tok, dataset=data, rows=np.arange(16), classifier=classifier, max_new_tokens=2)
    flags, groups = result.records["toxic"].to_numpy(), data.groups
    low, high = result.table.loc[0, ["low", "high"]]
    assert [low, high] == pytest.approx(np.concatenate(share_interval(flags, groups)))
    assert high - low > (np.diff(np.concatenate(share_interval(flags)))[0]) * 1.2  # 8 examples' worth, not 16


def test_classifier_from_the_hub_offline_is_a_package_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TrustTraceError):
        load_classifier("trusttrace-test/no-such-classifier")


# ----- TruthfulQA MC -----------------------------------------------------------------------


MC = [
    {"question": "Where is the red cat?", "mc1_targets": {"Near the house.": 1, "Near the river.": 0, "On the bridge.": 0},
     "mc2_targets": {"Near the house.": 1, "By the house.": 1, "Near the river.": 0}},
    {"question": "What does the dog like?", "mc1_targets": {"The garden.": 1, "The river.": 0},
     "mc2_targets": {"The garden.": 1, "The river.": 0, "The old bridge.": 0}},
    {"question": "Is the bridge tall?", "mc1_targets": {"Yes.": 1, "No.": 0}, "mc2_targets": {"Yes.": 1, "No.": 0}},
]


@pytest.fixture
def mc_data(tmp_path):
    (tmp_path / "upstream" / "truthfulqa").mkdir(parents=True)
    (tmp_path / "tracingllm").mkdir()
    (tmp_path / "upstream" / "truthfulqa" / "mc_task.json").write_text(json.dumps(MC))
    pd.DataFrame({"Question": ["Is the bridge tall?", "Where is the red cat?"]}).to_csv(tmp_path / "tracingllm" / "truthfulqa_test.csv", index=False)
    return tmp_path


def test_mc_metrics():
    scores = np.array([-1.0, -2.0, -3.0])
    correct, mass = mc_metrics(scores, [1, 0, 0])
    assert correct == 1 and mass == pytest.approx(math.exp(-1) / sum(math.exp(s) for s in scores))
    assert mc_metrics(scores, [0, 1, 1])[0] == 0
    with pytest.raises(EvaluationError):
        mc_metrics(scores, [1, 1, 1])


def test_truthfulqa_mc_on_held_out_questions(models, tok, mc_data):
    model = models("llama")
    result = evaluate(model, tok, "truthfulqa", data_dir=mc_data)
    assert list(result.records["question"]) == ["Is the bridge tall?", "Where is the red cat?"]
    for _, row in result.records.iterrows():
        item = next(m for m in MC if m["question"] == row["question"])
        for key, column in (("mc1_targets", "mc1"), ("mc2_targets", "mc2")):
            prompt = qa_prompt(item["question"])
            scores = np.array([choice_logprobs(model, tok, [prompt], [[f" {a}"]], batch_size=1)[0][0] for a in item[key]])
            expected = mc_metrics(scores, list(item[key].values()))[0 if column == "mc1" else 1]
            assert row[column] == pytest.approx(expected, abs=1e-5)
    assert result.value("mc1") == result.records["mc1"].mean()
    rules = dict(zip(result.table["metric"], result.table["interval"]))  # what the sweep's unit names declare
    assert rules == {"mc1": INTERVAL_RULE, "mc2": MEAN_INTERVAL_RULE}
    assert get_task("truthfulqa").interval_rules() == {"interval": INTERVAL_RULE, "mean_interval": MEAN_INTERVAL_RULE}
    assert get_task("sst2").interval_rules() == {"interval": INTERVAL_RULE}
    with pytest.raises(EvaluationError, match="rows: no heldout questions to evaluate"):
        evaluate(model, tok, "truthfulqa", data_dir=mc_data, rows=[])
    every = evaluate(model, tok, "truthfulqa", data_dir=mc_data, questions="all", limit=2)
    assert list(every.records["question"]) == [m["question"] for m in MC[:2]]


def test_truthfulqa_needs_its_files_or_the_hub(models, tok, tmp_path, monkeypatch):
    with pytest.raises(EvaluationError, match="truthfulqa_test.csv"):
        evaluate(models("gpt2"), tok, "truthfulqa", data_dir=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="truthfulqa multiple choice"):
        evaluate(models("gpt2"), tok, "truthfulqa", data_dir=tmp_path, questions="all")


# ----- side effects and grids ----------------------------------------------------------------


def test_side_effects_zero_for_alpha_zero_and_kl_matches_by_hand(models, tok):
    model = models("gpt_neox")
    texts = ["the red cat sees the old house", "a dog near the river"]
    vector = torch.randn(64, generator=torch.Generator().manual_seed(2)) * 3
    none = side_effects(model, tok, Steering({1: vector}, 0.0), texts).set_index("metric")["value"]
    assert none["kl"] == 0.0 and none["perplexity"] == none["perplexity_unsteered"]
    table = side_effects(model, tok, Steering({1: vector}, 1.0), texts).set_index("metric")
    ids = torch.tensor([tok(texts[1])["input_ids"]])
    with torch.no_grad():
        plain = torch.log_softmax(model(ids).logits[0, :-1], -1)
        with steer(model, {1: vector}, positions="all"):
            steered = torch.log_softmax(model(ids).logits[0, :-1], -1)
    single = side_effects(model, tok, Steering({1: vector}, 1.0, "all"), texts[1:]).set_index("metric")["value"]
    assert single["kl"] == pytest.approx(float((steered.exp() * (steered - plain)).sum(-1).mean()), rel=1e-4)
    targets = ids[0, 1:, None]
    assert single["perplexity"] == pytest.approx(float(torch.exp(-steered.gather(-1, targets).mean())), rel=1e-4)
    assert single["perplexity_unsteered"] == pytest.approx(float(torch.exp(-plain.gather(-1, targets).mean())), rel=1e-4)
    assert single["perplexity"] != pytest.approx(single["perplexity_unsteered"])
    assert table.loc["kl", "value"] > 0 and table.loc["kl", "n"] == sum(len(tok(t)["input_ids"]) - 1 for t in texts)


def test_grid_picks_the_best_setting_within_the_kl_limit(models, tok, capsys):
    model = models("gpt2")
    ones = toy_dataset()
    ones = TrustDataset("ones", ones.statements, np.ones(len(ones), dtype=int), None, ones.card, "test")
    last = len(decoder_layers(model)) - 1
    options = dict(task="binary", dataset=ones, rows=np.arange(len(ones)), max_perplexity=None)
    free = steering_grid(model, tok, {last: answer_direction(model, tok)}, [-30.0, -0.5, 30.0], progress=True, **options)
    bar = capsys.readouterr().err
    assert "steering binary: 100%" in bar and "4/4" in bar  # the unsteered model and three settings
    table = free.table
    assert len(table) == 4 and pd.isna(table.loc[0, "layer"]) and table.loc[0, "kl"] == 0.0
    assert free.best["alpha"] == 30.0 and free.best["value"] == 1.0 and free.best["layer"] == last
    assert table.loc[table["alpha"] == -30.0, "value"].item() == 0.0
    kl = table.set_index("alpha")["kl"]
    assert kl[-0.5] < min(kl[30.0], kl[-30.0])
    assert list(table["improves"]) == [False, False, table.loc[2, "value"] > table.loc[0, "value"], True]
    limit = (kl[-0.5] + min(kl[30.0], kl[-30.0])) / 2
    with pytest.warns(UserWarning, match="no steering setting within the limit improves on the unsteered accuracy"):
        limited = steering_grid(model, tok, {last: answer_direction(model, tok)}, [-30.0, -0.5, 30.0], max_kl=limit, **options)
    assert list(limited.table["within_limit"]) == [True, False, True, False]
    assert limited.best is None  # the one setting within the limit is no better than not steering
    assert set(limited.results) == {(last, -30.0), (last, -0.5), (last, 30.0)}


def test_a_grid_refuses_a_vector_the_model_cannot_take_before_the_baseline_runs(models, tok, monkeypatch):
    import trusttrace.evaluation.grid as grid
    from trusttrace.evaluation.grid import limit_text

    model = models("gpt2")
    ran = []
    monkeypatch.setattr(grid, "evaluate", lambda *args, **kwargs: ran.append(1))
    good = torch.zeros(model.config.hidden_size)
    for vectors, alphas, error in (
        ({len(decoder_layers(model)): good}, [1.0], LayerError), ({0: torch.zeros(3)}, [1.0], SteeringError),
        ({0: good}, [1.0, float("nan")], SteeringError),
    ):
        with pytest.raises(error):
            steering_grid(model, tok, vectors, alphas, task="binary", dataset=toy_dataset())
    assert limit_text(6.0, None) == "perplexity <= 6" and limit_text(None, 0.5) == "KL <= 0.5"
    with pytest.raises(SteeringError, match="measures no side effects"):  # no setting could be within the limit
        steering_grid(model, tok, {0: good}, [1.0], task="binary", dataset=toy_dataset(), side_effect_texts=None)
    assert ran == []


def test_a_grid_names_its_settings_by_block_as_each_result_does(models, tok):
    model = models("gpt2")
    last = len(decoder_layers(model)) - 1
    grid = steering_grid(model, tok, {-1: answer_direction(model, tok)}, [1.0], task="binary", dataset=toy_dataset(), max_perplexity=None)
    assert grid.table["layer"].dropna().tolist() == [last] and list(grid.results) == [(last, 1.0)]
    assert set(grid.table["grid"]) == {f"layers {last}; alpha 1"}
    assert set(grid.results[(last, 1.0)].table["layers"]) == {str(last)}


def test_rates_count_rows_of_one_group_as_fewer_examples():
    from trusttrace.evaluation.results import rate_row

    flags = np.repeat(np.arange(50) % 4 != 0, 2)  # pairs right or wrong together
    plain, paired = rate_row("t", "accuracy", flags), rate_row("t", "accuracy", flags, np.arange(100) // 2)
    assert plain["value"] == paired["value"] == 0.74 and paired["n"] == 100
    assert paired["high"] - paired["low"] > 1.3 * (plain["high"] - plain["low"])  # about 50 examples, not 100
    opposite = np.tile([True, False], 50)  # one of each pair right: no loss of information, the plain interval
    assert rate_row("t", "a", opposite, np.arange(100) // 2)["low"] == pytest.approx(rate_row("t", "a", opposite)["low"])


def test_holm_and_paired_p_values_match_closed_forms():
    from trusttrace.evaluation.grid import holm, paired_p_value

    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(holm([math.nan])[0])
    rows = pd.RangeIndex(10)
    before = pd.Series([0.0] * 10, index=rows)
    after = pd.Series([1.0] * 8 + [0.0] * 2, index=rows)
    after_down = pd.Series([1.0] * 8, index=rows[:8]).reindex(rows, fill_value=0.0)
    # 8 examples gain, 0 lose: the exact sign test gives 0.5^8; with 2 of 10 changed ones lost, 56/1024.
    assert paired_p_value(before, after_down, higher_is_better=True) == pytest.approx(0.5**8)
    mixed = pd.Series([1.0] * 8 + [0.0] * 2, index=rows), pd.Series([0.0] * 8 + [1.0] * 2, index=rows)
    assert paired_p_value(mixed[1], mixed[0], higher_is_better=True) == pytest.approx(56 / 1024)
    assert paired_p_value(before, after[::-1], higher_is_better=True) == paired_p_value(before, after, higher_is_better=True)
    assert paired_p_value(after, before, higher_is_better=False) == pytest.approx(0.5**8)  # fewer toxic rows is better
    assert paired_p_value(before, before, higher_is_better=True) == 1.0
    scores = pd.Series(np.linspace(0.1, 0.5, 10), index=rows)
    assert paired_p_value(scores, scores + 0.1 + np.arange(10) / 100, higher_is_better=True) == pytest.approx(1 / 1024)


def test_a_grid_of_settings_that_do_nothing_rarely_finds_a_best(monkeypatch):
    """24 settings each scoring 500 examples with the unsteered model's accuracy (0.79) but its own
    noise: the highest raw value beats the unsteered one in most grids, the corrected test rarely."""
    from trusttrace.evaluation import grid as grid_module
    from trusttrace.evaluation.results import EvalResult, make_table, rate_row

    generator = np.random.default_rng(0)
    labels = np.ones(500, dtype=int)
    truth = generator.random(500) < 0.79  # which examples the unsteered model gets right

    def fake_evaluate(model, tokenizer, task, dataset, steering=None, **options):
        correct = truth if steering is None else np.where(generator.random(500) < 0.15, generator.random(500) < 0.79, truth)
        records = pd.DataFrame({"row": np.arange(500), "label": labels, "correct": correct})
        return EvalResult(make_table([rate_row(task, "accuracy", correct)]), records, {})

    monkeypatch.setattr(grid_module, "evaluate", fake_evaluate)
    monkeypatch.setattr(grid_module, "check_settings", lambda model, vectors, alphas, positions: dict(vectors))  # no model here
    dataset = TrustDataset("null", [f"s{i}" for i in range(500)], labels, None, toy_dataset().card, "test")
    naive = found = 0
    for _ in range(20):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no setting improves beyond chance", expected here
            result = steering_grid(None, None, {layer: torch.zeros(4) for layer in range(4)}, [-2, -1, -0.5, 0.5, 1, 2],
                                   task="binary", dataset=dataset, max_perplexity=None)
        steered = result.table.iloc[1:]
        naive += bool((steered["value"] > result.table.loc[0, "value"]).any())
        found += result.best is not None
        assert (steered["p_holm"] >= steered["p_value"]).all() and not result.table.loc[0, "improves"]
    assert naive >= 15 and found <= 2  # at most about the 5 % family-wise error rate (here 1 of 20)


# ----- the CLI -------------------------------------------------------------------------------


def test_cli_evaluate_writes_tables_steered_and_grid(tmp_path, models, tok):
    model = models("gpt2")
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    data = toy_dataset()
    data.to_frame().drop(columns="group").to_csv(tmp_path / "toy.csv", index=False)
    save_vectors(tmp_path / "v.safetensors", {2: answer_direction(model, tok), 3: answer_direction(model, tok)}, {"architecture": "GPT2LMHeadModel"})
    base = ["evaluate", "-m", str(folder), "-t", "binary", "-d", str(tmp_path / "toy.csv"), "--limit", "6"]
    result = CliRunner().invoke(app, [*base, "--vectors", str(tmp_path / "v.safetensors"), "--layer", "3", "--alpha", "40", "-o", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "one" / "results.csv")
    assert {"accuracy", "predicted_1_rate", "kl", "perplexity"} <= set(table["metric"]) and set(table["alpha"]) == {40.0}
    assert len(pd.read_parquet(tmp_path / "one" / "records.parquet")) == 6
    assert json.loads((tmp_path / "one" / "settings.json").read_text())["steering"]["layers"] == "3"
    limited = [*base, "--vectors", str(tmp_path / "v.safetensors"), "--layer", "3", "--alpha", "40", "--max-kl", "0", "-o", str(tmp_path / "limited")]
    result = CliRunner().invoke(app, limited)  # one setting with a limit: checked against it and the unsteered model
    grid = pd.read_csv(tmp_path / "limited" / "grid.csv")
    assert result.exit_code == 0 and len(grid) == 2 and not grid.loc[1, "within_limit"]
    result = CliRunner().invoke(app, [*base, "--vectors", str(tmp_path / "v.safetensors"), "--alpha", "1,2", "--max-perplexity", "inf", "-o", str(tmp_path / "grid")])
    assert result.exit_code == 0, result.output
    grid = pd.read_csv(tmp_path / "grid" / "grid.csv")
    assert len(grid) == 5 and "best within the limit" in result.output and grid["within_limit"].all()
    result = CliRunner().invoke(app, [*base, "--vectors", str(tmp_path / "v.safetensors"), "--alpha", "1,2", "-o", str(tmp_path / "study")])
    grid = pd.read_csv(tmp_path / "study" / "grid.csv")  # the study's perplexity limit of 6 by default
    assert result.exit_code == 0 and (grid["within_limit"] == (grid["perplexity"] <= 6.0)).all()
    result = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "study")])  # unsteered, into the grid's folder
    assert result.exit_code == 0 and not (tmp_path / "study" / "grid.csv").exists()  # no earlier run's grid left


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--alpha", "nan"], "--alpha 'nan': expected comma-separated finite numbers"),
        (["--alpha", "1,inf"], "--alpha '1,inf': expected comma-separated finite numbers"),
        (["--max-perplexity", "-1"], "--max-perplexity -1.0: must be 0 or more"),
        (["--max-kl", "nan"], "--max-kl nan: must be 0 or more"),
        (["--positions", "bogus"], "unknown positions 'bogus'"),
        (["--mode", "guess"], "unknown mode 'guess'; expected one of logit, parse"),
        (["--questions", "some"], "task stereoset has no option 'questions'"),
    ],
)
def test_cli_evaluate_refuses_nonsense_options_before_loading(option, message, tmp_path, monkeypatch, capsys):
    from trusttrace.cli import main

    vectors = tmp_path / "v.safetensors"
    save_vectors(vectors, {0: torch.ones(4)}, {})
    argv = ["trusttrace", "evaluate", "-m", str(tmp_path / "never-loaded"), "-t", "stereoset", "--vectors", str(vectors), *option]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.count("\n") == 1 and message in error


def test_cli_toxigen_loads_its_classifier_before_the_model(tmp_path, monkeypatch, capsys):
    from trusttrace.cli import main

    argv = ["trusttrace", "evaluate", "-m", str(tmp_path / "never-loaded"), "-t", "toxigen", "--classifier", "not-cached/classifier"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    error = capsys.readouterr().err
    assert exited.value.code == 2 and error.startswith("error: not-cached/classifier:") and "never-loaded" not in error


def test_cli_evaluate_unknown_task_exits_2_before_loading_the_model(tmp_path, monkeypatch, capsys):
    from trusttrace.cli import main

    monkeypatch.setattr(sys, "argv", ["trusttrace", "evaluate", "-m", str(tmp_path / "never-loaded"), "-t", "honesty"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "unknown task 'honesty'" in error


def test_cli_evaluate_checks_the_vector_file_before_loading_the_model(tmp_path, monkeypatch, capsys):
    from trusttrace.cli import main

    save_vectors(tmp_path / "v.safetensors", {2: torch.ones(64)}, {"architecture": "GPT2LMHeadModel"})
    argv = ["trusttrace", "evaluate", "-m", str(tmp_path / "never-loaded"), "-t", "stereoset",
            "--vectors", str(tmp_path / "v.safetensors"), "--layer", "5"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "no vector for layers [5] (the file holds [2])" in capsys.readouterr().err


def test_a_mean_interval_of_0_1_scores_is_wilsons_at_their_effective_count_with_t():
    from scipy import stats

    from trusttrace.evaluation.results import mean_row
    from trusttrace.intervals import wilson_interval

    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0])  # variance n/(n-1) m(1-m): worth n - 1 examples
    row = mean_row("truthfulqa", "mc2", values)
    expected = wilson_interval(0.6, 4, stats.t.ppf(0.975, 4))
    assert (row["low"], row["high"]) == pytest.approx([float(bound) for bound in expected])
    assert row["interval"] == MEAN_INTERVAL_RULE
    skewed = mean_row("truthfulqa", "mc2", [0.01, 0.02, 0.9])  # a t interval would reach below 0 here
    assert 0.0 < skewed["low"] < skewed["value"] < skewed["high"] < 1.0
    assert math.isnan(mean_row("truthfulqa", "mc2", [0.5])["low"])
    for score in (0.5, 0.7):  # no spread seen (0.7's variance is rounding, ~1e-32): as wide as 0/1 scores could be
        equal = mean_row("truthfulqa", "mc2", [score] * 7)
        low, high = wilson_interval(score, 7, stats.t.ppf(0.975, 6))
        assert (equal["low"], equal["high"]) == pytest.approx([float(low), float(high)])


def test_a_mean_interval_covers_skewed_scores_on_few_questions_and_matches_t_on_many():
    from scipy import stats

    from trusttrace.intervals import mean_interval

    rng = np.random.default_rng(0)
    scores = rng.beta(0.3, 0.6, size=(4000, 5))  # true mean 1/3; a t interval covers it 0.90 of the time
    low, high = mean_interval(scores)
    assert ((low <= 1 / 3) & (1 / 3 <= high)).mean() >= 0.92
    many = rng.uniform(size=400)
    low, high = mean_interval(many)
    t_width = 2 * stats.t.ppf(0.975, 399) * many.std(ddof=1) / math.sqrt(400)
    assert float(high[0] - low[0]) == pytest.approx(t_width, rel=0.02)


def test_answers_the_tokenizer_cannot_tell_apart_are_an_error():
    from trusttrace.tiny import tiny_model, train_tokenizer

    words = train_tokenizer(["the cat sees the dog"] * 20, vocab_size=60)  # no digits: " 0" and " 1" are both unknown
    model = tiny_model("gpt2", len(words))
    with pytest.raises(EvaluationError, match="choices ' 0' and ' 1' of prompt 0 are the same tokens"):
        choice_logprobs(model, words, ["the cat"], [[" 0", " 1"]])


def test_a_prompt_cut_to_leave_room_for_the_answer_says_so(models, tok):
    from trusttrace.models import context_length

    model = models("gpt2")
    context = context_length(model, tok)
    long_prompt = " ".join(WORDS * (context // len(WORDS) + 2))
    with pytest.warns(UserWarning, match=rf"1 prompt\(s\) are longer than the {context - 1} tokens the model's context of "
                                         rf"{context} leaves beside the longest answer \(1\)"):
        choice_logprobs(model, tok, [long_prompt], [[" 1", " 0"]])
