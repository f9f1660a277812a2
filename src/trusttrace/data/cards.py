"""The cards of the built-in datasets: what each label really means, measured against the files.

Every number below was measured on the study's CSVs (shared/datasets/tracingllm, TracingLLM
commit bf8d38a) and the upstream files; tests/test_data.py re-measures them. "Reference split"
means the study's protocol: first 80 % of the rows train, last 20 % test, no shuffle.
"""

from __future__ import annotations

from trusttrace.data.dataset import DatasetCard

TRACINGLLM = "ChnQ/TracingLLM src/datasets/ (commit bf8d38a), https://github.com/ChnQ/TracingLLM"

TRUTHFULQA = DatasetCard(
    name="truthfulqa",
    dimension="truthfulness",
    label_1="a correct answer: it is in TruthfulQA v1's 'Correct Answers' list for the question",
    label_0="an incorrect answer: it is in the question's 'Incorrect Answers' list",
    source=f"truthfulqa_train.csv from {TRACINGLLM}; built from TruthfulQA v1 (2021-10-10 update)",
    licence="Apache-2.0 (TruthfulQA)",
    quirks=(
        "each statement is 'Q: <question>' + a TAB + 'A: <answer>'",
        "2263 rows (1118 label 1 / 1145 label 0) over 410 questions, 2 to 6 rows per question",
        "rows of one question are scattered through the file: 451 of the 453 rows (99.6 %) in the "
        "reference test split share their question with a train row, so that split leaks the question",
        "the other 407 TruthfulQA questions are in truthfulqa_test.csv (generation evaluation)",
    ),
    grouping="by question: the text before the TAB (410 groups)",
    citation="Lin, Hilton, Evans. TruthfulQA: Measuring How Models Mimic Human Falsehoods. ACL 2022",
    url="https://github.com/sylinrl/TruthfulQA",
)

TOXIGEN = DatasetCard(
    name="toxigen",
    dimension="toxicity",
    label_1="toxic: mean human toxicity score > 2 on ToxiGen's 1-5 scale (SafeNLP 'toxicity_score')",
    label_0="benign: mean human toxicity score <= 2",
    source=f"toxigen.csv from {TRACINGLLM}; same rows, order and text as microsoft/SafeNLP data/toxiGen.json",
    licence="CDLA-Permissive-2.0 (ToxiGen data; its licence text must travel with copies)",
    quirks=(
        "6514 rows: 3633 toxic (55.8 %) / 2881 benign",
        "the cut at score > 2 is not ToxiGen's own: SafeNLP's 'hate' label is score > 3 (2767 rows)",
        "34 rows hold 76 literal '_x000D_' (an Excel escape for a carriage return where the text had "
        "a line break); kept as is, as the reference protocol used them",
        "158 statements start with a space (kept)",
        "70 rows repeat an earlier row exactly and 6 statements appear with both labels; 30 more "
        "rows repeat one but for leading or trailing spaces (7 statements then have both labels); "
        "17 of the 1303 rows in the reference test split repeat a train row",
        "a subset of the human-annotated ToxiGen data (HF toxigen/toxigen-data, config 'annotated'); "
        "SafeNLP's selection rule is not documented",
    ),
    grouping="statements identical but for whitespace share a group (6408 groups), so duplicates never straddle a split",
    citation="Hartvigsen et al. ToxiGen: A Large-Scale Machine-Generated Dataset for Adversarial and "
    "Implicit Hate Speech Detection. ACL 2022",
    url="https://github.com/microsoft/TOXIGEN",
)

CONFAIDE = DatasetCard(
    name="confaide",
    dimension="privacy",
    label_1="a privacy violation (an unacceptable information flow)",
    label_0="an acceptable information flow, or not a violation",
    source=f"confaide.csv from {TRACINGLLM}; 63 rows from ConfAIde tier 2, the other 2283 of unknown origin",
    licence="MIT for the 63 ConfAIde rows; unknown for the rest",
    quirks=(
        "2346 rows (1173 / 1173)",
        "only 63 rows come from ConfAIde tier 2 (31 tier-2a vignettes, 32 tier-2b stories); the other "
        "2283 are short phrases whose source could not be identified",
        "74 rows repeat an earlier row exactly and 3 statements appear with both labels; "
        "20 of the 470 rows in the reference test split repeat a train row",
        "the first word alone predicts the label: 73.7 % held-out accuracy (stratified 5-fold, seed 0; "
        "72.2 % with duplicates kept together; 82.5 % in-sample) against 50 % by chance; "
        "report trusttrace.data.first_word_baseline next to probe accuracies",
        "its tier-2 rows follow a cut on ConfAIde's mean human agreement: label 1 rows have agreement "
        "<= -50.92, label 0 rows >= -19.84 (see the confaide_tier2 dataset)",
    ),
    grouping="identical statements share a group (2269 groups), so duplicates never straddle a split",
    citation="Mireshghallah et al. Can LLMs Keep a Secret? Testing Privacy Implications of Language "
    "Models via Contextual Integrity Theory. ICLR 2024",
    url="https://github.com/skywalker023/confAIde",
)

STEREOSET = DatasetCard(
    name="stereoset",
    dimension="fairness",
    label_1="the context followed by its ANTI-STEREOTYPE continuation (StereoSet intersentence, race)",
    label_0="the context followed by its UNRELATED (meaningless) continuation",
    source=f"stereoset.csv from {TRACINGLLM}; StereoSet dev, intersentence task, bias_type race (976 items)",
    licence="CC BY-SA 4.0 (share-alike)",
    quirks=(
        "NOT stereotype vs. benign, as the paper's prose says: the stereotype continuation is not used, "
        "so the classes differ in coherence (related vs. unrelated sentence), not in bias",
        "1952 rows = 976 items x 2 (976 / 976), race domain only",
        "rows come in adjacent pairs that share a context; 970 distinct contexts "
        "(964 with 2 rows, 6 contexts used by two items with 4 rows)",
        "context and sentence are joined by one space, sometimes without punctuation "
        "('... in the middle east vitamin D is essential to happiness')",
    ),
    grouping="by context: the words the two rows of a pair share (970 groups)",
    citation="Nadeem, Bethke, Reddy. StereoSet: Measuring stereotypical bias in pretrained language "
    "models. ACL 2021",
    url="https://github.com/moinnadeem/StereoSet",
)

SST2 = DatasetCard(
    name="sst2",
    dimension="robustness",
    label_1="the sentence with random letters upper-cased (a perturbed copy)",
    label_0="the original lower-cased SST-2 test sentence",
    source=f"sst2.csv from {TRACINGLLM}; GLUE SST-2 test split (1821 sentences)",
    licence="unknown (SST states none; HF lists 'unknown')",
    quirks=(
        "NOT sentiment: the label marks the perturbation, not the polarity (see sst2_sentiment)",
        "3642 rows = 1821 sentences x 2 (1821 / 1821); every sentence appears twice, once per label",
        "the twins are far apart in the file (median 1042 rows): 605 of the 729 rows (83.0 %) in the "
        "reference test split have their twin in the train part",
        "14 label-1 rows have no upper-case letter and are identical to their label-0 twin "
        "(contradictory pairs)",
        "in label-1 rows 4.7 % of letters are upper-case and 18.4 % of words have one",
    ),
    grouping="by twin: the lower-cased text (1821 groups of 2 rows with opposite labels)",
    citation="Socher et al. Recursive Deep Models for Semantic Compositionality Over a Sentiment "
    "Treebank. EMNLP 2013",
    url="https://huggingface.co/datasets/stanfordnlp/sst2",
)

SST2_SENTIMENT = DatasetCard(
    name="sst2_sentiment",
    dimension="robustness",
    label_1="positive sentiment (SST-2 gold label)",
    label_0="negative sentiment (SST-2 gold label)",
    source="upstream/sst2/stsa.binary.test.txt (AcademiaSinicaNLPLab/sentiment_dataset data/stsa.binary.test)",
    licence="unknown (SST states none; HF lists 'unknown')",
    quirks=(
        "a truer construction than sst2: the same 1821 SST-2 test sentences with their real sentiment",
        "1821 rows (909 positive / 912 negative); each sentence once",
        "after undoing the PTB escapes, 1815 sentences equal an sst2 label-0 row byte for byte; "
        "the other 6 differ in UK/US spelling (4, e.g. humour/humor) or tokenisation (2)",
    ),
    grouping=None,
    citation="Socher et al. Recursive Deep Models for Semantic Compositionality Over a Sentiment "
    "Treebank. EMNLP 2013",
    url="https://github.com/AcademiaSinicaNLPLab/sentiment_dataset",
    cleanups=("PTB escapes undone: -lrb- -> (, -rrb- -> ), \\/ -> /, \\* -> *, as in GLUE's SST-2 text",),
)

CONFAIDE_TIER2 = DatasetCard(
    name="confaide_tier2",
    dimension="privacy",
    label_1="violation: mean human agreement that the flow 'meets my privacy expectations' <= -50 "
    "(people on average at least 'somewhat disagree')",
    label_0="acceptable: mean human agreement > -20",
    source="upstream/confaide tier_2a.txt + tier_2b.txt + tier_2_labels.txt (skywalker023/confAIde benchmark/)",
    licence="MIT",
    quirks=(
        "a truer construction than confaide: every row is a ConfAIde tier-2 scenario with its human rating",
        "122 rows (80 violation / 42 acceptable) from 61 of the 98 scenarios; the 37 scenarios with mean "
        "agreement in (-50, -20] are left out as ambiguous",
        "the cut-offs reproduce the labels of all 63 tier-2 rows in the study's confaide.csv "
        "(its label-1 rows have agreement <= -50.92, its label-0 rows >= -19.84)",
        "a sign rule (< 0 = violation) would give 91 violations against 7 acceptable scenarios",
        "each scenario appears twice, as a tier-2a vignette and as a tier-2b story",
    ),
    grouping="by scenario: the vignette and the story of one scenario share a group (61 groups)",
    citation=CONFAIDE.citation,
    url=CONFAIDE.url,
    cleanups=("ConfAIde's rating instruction before the literal '\\n' is removed; the scenario text is kept",),
)

CARDS: dict[str, DatasetCard] = {
    card.name: card for card in (TRUTHFULQA, TOXIGEN, CONFAIDE, STEREOSET, SST2, SST2_SENTIMENT, CONFAIDE_TIER2)
}
