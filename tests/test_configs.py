"""The shipped experiment configs stay valid, and a bad config is refused before any work, in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

from trusttrace.config import load_config, parse_config
from trusttrace.config_checks import check_names
from trusttrace.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_is_valid(path, hub_online, monkeypatch, shared_data):
    monkeypatch.setenv("TRUSTTRACE_DATA", str(shared_data))  # the study's datasets, read and split as a run would
    from types import SimpleNamespace

    import trusttrace.checkpoints as checkpoints

    config = load_config(path)
    assert config.workspace.is_absolute()
    if config.suite.startswith("olmo"):  # its revisions come from the Hub: a plausible listing stands in
        branches = [SimpleNamespace(name=f"step{1000 * i}-tokens{4 * i}B") for i in range(20)]
        monkeypatch.setattr(checkpoints, "list_repo_refs", lambda repo: SimpleNamespace(branches=branches))
    check_names(config, where=str(path))


def test_amber_reproduction_uses_the_study_settings():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "amber-paper.yaml")
    assert config.protocol == "paper" and config.probe_split() == "paper"
    assert config.checkpoints == ["ckpt_000", "ckpt_001", "ckpt_002", "ckpt_005", "ckpt_010", "ckpt_020",
                                  "ckpt_050", "ckpt_100", "ckpt_179", "ckpt_358"]
    assert config.steering.source == "ckpt_179" and config.steering.target == "chat"


def test_the_probes_follow_the_sweep_seed_unless_they_name_their_own():
    base = {"workspace": "ws", "suite": "pythia-70m", "datasets": ["sst2"]}
    assert parse_config({**base, "seed": 3}).probe_seed() == 3
    assert parse_config({**base, "seed": 3, "probes": {"seed": 0}}).probe_seed() == 0
    assert parse_config(base).probe_seed() == 0
    older = parse_config({**base, "probes": {"seed": 3}})  # written before the top-level seed: 3 everywhere, as then
    assert (older.seed, older.probe_seed()) == (3, 3)


def test_the_example_in_run_help_is_a_valid_config():
    import yaml

    from trusttrace.config import EXAMPLE, parse_config

    config = parse_config(yaml.safe_load(EXAMPLE))
    assert config.datasets == ["truthfulqa", "toxigen", "confaide", "stereoset", "sst2"]
    from typer.testing import CliRunner

    from trusttrace.cli.app import app

    shown = CliRunner().invoke(app, ["run", "--help"]).output  # as an 80-column terminal shows it
    for line in EXAMPLE.splitlines():
        assert f" {line}" in shown, f"the help wraps or drops {line!r}"


# ----- a config is refused at load/--check time, in one line naming the key, exit code 2 -----


@pytest.fixture()
def project(tmp_path):
    """A config folder with a local suite of two 4-block checkpoints (their config.json is all
    validation reads) and toy datasets toy.csv, a/toy.csv and b/toy.csv (20 rows: enough for 5
    folds); returns a writer of tmp_path/config.yaml from keys (over a valid base) or raw text."""
    for step in (0, 10):
        folder = tmp_path / "suite" / f"step_{step}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 4}))
    for folder in (tmp_path, tmp_path / "a", tmp_path / "b"):
        folder.mkdir(exist_ok=True)
        (folder / "toy.csv").write_text("statement,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(20)))

    def write(changes: dict | str = "") -> Path:
        base = {"workspace": "ws", "suite": "local:suite", "datasets": [str(tmp_path / "toy.csv")], "device": "cpu"}
        text = changes if isinstance(changes, str) else yaml.safe_dump({**base, **changes}, sort_keys=False)
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return path

    return write


def run_check(path: Path, capsys) -> tuple[int, str]:
    """`trusttrace run PATH --check`: its exit code and what it printed to stderr."""
    from trusttrace.cli import main as cli_main

    with mock.patch.object(sys, "argv", ["trusttrace", "run", str(path), "--check"]), pytest.raises(SystemExit) as exit_info:
        cli_main()
    return exit_info.value.code, capsys.readouterr().err


def assert_refused(path: Path, capsys, *fragments: str) -> None:
    """Exit code 2, one line holding every fragment, and no workspace made."""
    code, err = run_check(path, capsys)
    assert code == 2, err
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err
    assert not (path.parent / "ws").exists(), "nothing may be written on a bad config"


STEERING = {"source": "step_10", "layers": [1]}


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        pytest.param({"layers": [0, 99]}, ["key 'layers'", "layer 99 is out of range", "4 decoder blocks"], id="layer-out-of-range"),
        pytest.param({"layers": [0, -5]}, ["key 'layers'", "layer -5 is out of range"], id="negative-layer-out-of-range"),
        pytest.param({"layers": []}, ["key 'layers'", "no layers chosen"], id="no-layers"),
        pytest.param({"layers": [1, 2]}, ["key 'mi.x_layer'", "layer 0 is not among the extracted layers (1, 2)", "x_layer: 1"],
                     id="default-x-layer-not-extracted"),
        pytest.param({"layers": [1, 2], "mi": {"x_layer": 7}}, ["key 'mi.x_layer'", "layer 7", "x_layer: 1"], id="x-layer-not-extracted"),
        pytest.param({"mi": {"x_layer": 4}}, ["key 'mi.x_layer'", "layer 4", "(0..3)"], id="x-layer-beyond-the-blocks"),
        pytest.param({"stages": ["extract", "steering"], "steering": {"source": "step_10", "layers": [4]}},
                     ["key 'steering.layers'", "[4]"], id="steering-layer-beyond-the-blocks"),
        pytest.param({"layers": [0, 1], "stages": ["extract", "steering"], "steering": {"source": "step_10", "layers": [2]}},
                     ["key 'steering.layers'", "[2]", "(0, 1)"], id="steering-layer-not-extracted"),
        pytest.param({"stages": ["extract", "evaluate"], "evaluate": {"tasks": ["nosuchtask"]}},
                     ["key 'evaluate.tasks'", "unknown task 'nosuchtask'"], id="unknown-task"),
        pytest.param({"stages": ["extract", "evaluate"], "evaluate": {"tasks": ["binary"]}},
                     ["key 'evaluate.tasks'", "task 'binary' needs a dataset"], id="task-without-its-dataset"),
        pytest.param({"stages": ["extract", "steering"], "steering": {**STEERING, "datasets": ["nosuch"]}},
                     ["key 'steering.datasets'", "'nosuch' is not one of the sweep's datasets (toy)"],
                     id="unknown-steering-dataset"),
        pytest.param({"stages": ["extract", "steering"], "steering": {**STEERING, "datasets": ["toy.csv"]}},
                     ["key 'steering.datasets'", "'toy.csv'"], id="steering-dataset-by-file-name"),
        pytest.param({"checkpoints": ["step_0"], "stages": ["extract", "steering"], "steering": STEERING},
                     ["key 'steering.source'", "step_10 is not among the checkpoints the sweep selects (step_0) and", "holds no activations of it", "add it to 'checkpoints'"],
                     id="steering-source-not-selected"),
        pytest.param({"stages": ["probes", "mi"]}, ["key 'stages'", "add extract to stages"], id="no-extract-no-activations"),
        pytest.param({"steering": STEERING}, ["key 'steering'", "not in stages", "add it to stages"], id="steering-without-its-stage"),
        pytest.param({"evaluate": {"tasks": ["privacy"]}}, ["key 'evaluate'", "not in stages"], id="evaluate-without-its-stage"),
        pytest.param({"device": "tpu9"}, ["key 'device'", "'tpu9'", "cuda:N"], id="unknown-device"),
        pytest.param({"checkpoints": 5}, ["key 'checkpoints':", "(got 5)", "every:K"], id="checkpoints-not-a-selection"),
        pytest.param({"batch_size": True}, ["key 'batch_size'", "valid integer", "(got True)"], id="boolean-as-integer"),
        pytest.param({"probes": {"C": True}}, ["key 'probes.C'", "not true/false"], id="boolean-as-number"),
        pytest.param({"seed": -1}, ["key 'seed'", "greater than or equal to 0"], id="negative-seed"),
        pytest.param({"stages": ["extract", "steering"], "steering": {**STEERING, "alphas": [float("nan"), 2]}},
                     ["key 'steering.alphas.0'", "finite number"], id="non-finite-alpha"),
        pytest.param({"stages": ["extract", "steering"], "steering": {**STEERING, "layers": [1, 2, 1]}},
                     ["key 'steering.layers'", "layers [1] are named more than once"], id="steering-layer-twice"),
        pytest.param({"stages": ["extract", "steering"], "steering": {**STEERING, "target": "./a"}},
                     ["key 'steering.target'", "a folder without config.json, so not a saved model"], id="target-folder-not-a-model"),
        pytest.param({"workspace": "b"}, ["key 'workspace'", "holds other files and is not a trusttrace workspace"],
                     id="workspace-among-other-files"),
        pytest.param({"probes": {"seed": -1}}, ["key 'probes.seed'", "greater than or equal to 0"], id="negative-probes-seed"),
    ],
)
def test_config_is_refused_up_front(project, capsys, changes, fragments):
    assert_refused(project(changes), capsys, *fragments)


def test_an_encoder_as_evaluate_model_and_a_config_that_is_not_text_are_refused(project, tmp_path, capsys):
    encoder = tmp_path / "bert"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert_refused(project({"stages": ["extract", "evaluate"], "evaluate": {"model": "./bert", "tasks": ["sst2"]}}), capsys,
                   "key 'evaluate.model'", "an encoder (BertConfig, is_decoder false), not a causal language model")
    path = project()
    path.write_bytes(b"\xff\xfe\x00\x01")
    assert_refused(path, capsys, "cannot read the config (not UTF-8 text")


def test_a_workspace_may_be_the_configs_own_folder_or_hold_hidden_files(project, tmp_path, capsys):
    code, err = run_check(project({"workspace": "."}), capsys)  # beside the config and its data, on purpose
    assert code == 0, err
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / ".gitkeep").touch()
    (tmp_path / "fresh" / "lost+found").mkdir()
    code, err = run_check(project({"workspace": "fresh"}), capsys)
    assert code == 0, err


def test_a_target_folder_whose_config_is_malformed_is_refused(project, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("null")
    assert_refused(project({"stages": ["extract", "evaluate"], "evaluate": {"model": "./broken", "tasks": ["sst2"]}}), capsys,
                   "key 'evaluate.model'", "cannot read a model config")


def test_two_datasets_with_one_name_are_refused(project, tmp_path, capsys):
    first, second = str(tmp_path / "a" / "toy.csv"), str(tmp_path / "b" / "toy.csv")
    assert_refused(project({"datasets": [first, second]}), capsys,
                   f"key 'datasets': {first} and {second} have the same name 'toy'")
    assert_refused(project({"datasets": [first, first]}), capsys, f"key 'datasets': {first!r} is listed twice")


def test_checkpoints_error_names_no_union_member(project, capsys):
    _, err = run_check(project({"checkpoints": 5}), capsys)
    assert "checkpoints.str" not in err


def test_duplicate_yaml_keys_are_refused_with_their_lines(project, tmp_path, capsys):
    text = f"workspace: ws\nsuite: local:suite\ndatasets: [{tmp_path / 'toy.csv'}]\nbatch_size: 8\nprobes:\n  folds: 2\n  folds: 3\n"
    assert_refused(project(text), capsys, "key 'folds' is given twice (lines 6 and 7)")
    assert_refused(project(text.replace("probes:\n  folds: 2\n", "batch_size: 16\nprobes:\n")), capsys,
                   "key 'batch_size' is given twice (lines 4 and 5)")


def test_a_yaml_syntax_error_names_its_line_and_an_empty_config_says_so(project, tmp_path, capsys):
    text = f"workspace: ws\nsuite: local:suite\ndatasets: [{tmp_path / 'toy.csv'}\nbatch_size: 8\n"
    assert_refused(project(text), capsys, "not valid YAML (line 4: expected ',' or ']'")
    assert_refused(project("# nothing yet\n"), capsys, "the config is empty")


def test_yaml_merge_keys_are_not_duplicates(project, tmp_path, capsys):
    text = f"workspace: ws\nsuite: local:suite\ndatasets: [{tmp_path / 'toy.csv'}]\nprobes:\n  <<: {{folds: 2, seed: 1}}\n  folds: 3\n"
    code, err = run_check(project(text), capsys)
    assert code == 0, err


@pytest.mark.parametrize("layers", [[0, 3], [-1, -4], "all", [0, 3, -1]])  # 3 and -1: one stored block
def test_layers_within_the_blocks_pass(project, capsys, layers):
    code, err = run_check(project({"layers": layers, "mi": {"x_layer": 0}}), capsys)
    assert code == 0, err


def test_x_layer_conflict_matters_only_with_the_mi_stage(project, capsys):
    code, err = run_check(project({"layers": [1, 2], "stages": ["extract", "probes"]}), capsys)
    assert code == 0, err


def test_stages_without_extract_pass_over_stored_activations(project, tmp_path, capsys):
    from trusttrace.store import ActivationStore

    ActivationStore(tmp_path / "ws")
    (tmp_path / "ws" / "activations" / "some-set").mkdir(parents=True)
    code, err = run_check(project({"stages": ["probes", "mi"]}), capsys)
    assert code == 0, err


def test_device_auto_means_the_default(project):
    assert load_config(project({"device": "auto"})).device is None
    assert load_config(project({"device": "cuda:1"})).device == "cuda:1"


@pytest.mark.parametrize(
    ("keys", "moot"),
    [({"probes": {"folds": 3, "test_size": 0.3}}, ["test_size"]), ({"probes": {"method": "mass_mean", "C": 2.0}}, ["C"]),
     ({"probes": {"split": "paper", "folds": 10}}, ["folds"]), ({"protocol": "paper", "probes": {"folds": 10}}, ["folds"]),
     ({"probes": {"folds": 1, "test_size": 0.3}}, []), ({"probes": {"folds": 5}}, []),
     ({"probes": {"folds": 5, "test_size": 0.2, "method": "mass_mean", "C": 1.0}}, [])],  # defaults spelt out
)
def test_probe_keys_with_no_effect_are_named_in_a_warning(project, keys, moot):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_config(project(keys))
    named = [str(w.message).split("'")[1] for w in caught if str(w.message).startswith("key 'probes.")]
    assert named == [f"probes.{key}" for key in moot]


def test_a_paper_protocol_extracting_other_than_float32_is_warned_of(project):
    import warnings

    for dtype, warned in (("auto", True), ("bfloat16", True), ("float32", False)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_config(project({"protocol": "paper", "dtype": dtype}))
        assert any("set dtype: float32 to reproduce" in str(w.message) for w in caught) == warned, dtype


def test_layers_of_a_hub_suite_are_checked_only_from_the_cache(tmp_path, monkeypatch, hub_online):
    """The block count of a Hub checkpoint comes from a config.json already cached, never a download."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    config = parse_config({"workspace": str(tmp_path / "ws"), "suite": "pythia-70m", "checkpoints": "step1000",
                           "datasets": ["truthfulqa"], "layers": [0, 9]})
    unchecked = check_names(config)  # nothing cached: the check is left to run time, and said so
    assert any(note.startswith("the layers against the model (no config.json of step1000") for note in unchecked)
    repo = tmp_path / "hub" / "models--EleutherAI--pythia-70m"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "step1000").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text(json.dumps({"num_hidden_layers": 6}))
    with pytest.raises(ConfigError, match="key 'layers': layer 9 is out of range: the model has 6 decoder blocks"):
        check_names(config)



def test_check_names_the_device_it_could_not_check_and_run_refuses_it_with_the_file(project, monkeypatch, capsys):
    from trusttrace.cli import main as cli_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = project({"device": "cuda"})
    with mock.patch.object(sys, "argv", ["trusttrace", "run", str(path), "--check"]), pytest.raises(SystemExit) as exit_info:
        cli_main()
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "config.yaml: valid" in out
    assert "not checked here: the device: key 'device': 'cuda': CUDA is not available here" in out
    with mock.patch.object(sys, "argv", ["trusttrace", "run", str(path)]), pytest.raises(SystemExit) as exit_info:
        cli_main()
    assert exit_info.value.code == 2
    assert f"{path}: key 'device': 'cuda': CUDA is not available here" in capsys.readouterr().err
    assert not (path.parent / "ws").exists()

def test_text_config_gives_the_block_count(project, tmp_path, capsys):
    for folder in (tmp_path / "suite").iterdir():
        (folder / "config.json").write_text(json.dumps({"model_type": "x", "text_config": {"num_hidden_layers": 8}}))
    code, err = run_check(project({"layers": [5], "mi": {"x_layer": 5}}), capsys)
    assert code == 0, err
    assert_refused(project({"layers": [8], "mi": {"x_layer": 8}}), capsys, "layer 8 is out of range")


def test_dataset_files_are_relative_to_the_config(project, monkeypatch, tmp_path_factory, capsys, hub_online):
    path = project({"datasets": ["toy.csv", "truthfulqa"]})
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert load_config(path).datasets == [str(path.parent / "toy.csv"), "truthfulqa"]
    code, err = run_check(path, capsys)
    assert code == 0, err


def test_model_folders_and_home_paths_are_resolved_and_a_mistyped_target_refused(project, monkeypatch, tmp_path_factory, capsys):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    path = project({"workspace": "~/ws", "data_dir": "~/data", "stages": ["evaluate"],
                    "evaluate": {"model": "suite/step_10", "tasks": ["sst2"]}})
    (home / "data").mkdir()
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    config = load_config(path)
    assert (config.workspace, config.data_dir) == (home / "ws", home / "data")
    assert config.evaluate.model == str(path.parent / "suite" / "step_10")  # a folder beside the config
    hub = load_config(project({"stages": ["evaluate"], "evaluate": {"model": "LLM360/AmberChat", "tasks": ["sst2"]}}))
    assert hub.evaluate.model == "LLM360/AmberChat"  # an id stays an id
    (path.parent / "final").mkdir()  # a folder named like the keyword does not shadow it
    assert load_config(project({"stages": ["evaluate"], "evaluate": {"tasks": ["sst2"]}})).evaluate.model == "final"
    assert_refused(project({"stages": ["evaluate"], "evaluate": {"model": "../suite/step_1000", "tasks": ["sst2"]}}), capsys,
                   "key 'evaluate.model': ../suite/step_1000 is neither a local model folder nor a Hub model id")


# ----- --check reads the datasets and splits them as the run will, and names what it leaves to run time -----


def check_notes(path: Path, capsys) -> list[str]:
    """`trusttrace run PATH --check` on a valid config: its "not checked here" notes."""
    from trusttrace.cli import main as cli_main

    with mock.patch.object(sys, "argv", ["trusttrace", "run", str(path), "--check"]), pytest.raises(SystemExit) as exit_info:
        cli_main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    return [line.strip().removeprefix("not checked here: ") for line in captured.out.splitlines()[1:]]


def test_a_bad_row_of_a_dataset_file_is_refused(project, tmp_path, capsys):
    rows = ["a,0", "b,1", "c,0", "d,1", "e,2", "f,0"]
    (tmp_path / "label2.csv").write_text("statement,label\n" + "\n".join(rows) + "\n")
    assert_refused(project({"datasets": ["label2.csv"]}), capsys,
                   f"key 'datasets': {tmp_path / 'label2.csv'}: data row 5 (line 6): label '2' is not 0 or 1")


def test_a_builtin_dataset_not_on_disk_is_refused_when_a_run_could_not_build_it(project, tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    assert_refused(project({"datasets": ["stereoset"], "data_dir": "data"}), capsys,
                   f"key 'data_dir': stereoset: no {tmp_path / 'data' / 'stereoset.csv'}, and the Hugging Face Hub is off",
                   "set data_dir:")
    monkeypatch.delenv("TRUSTTRACE_DATA", raising=False)
    assert_refused(project({"datasets": ["stereoset"]}), capsys,
                   "key 'data_dir': stereoset: neither data_dir nor $TRUSTTRACE_DATA is set")


def test_a_builtin_dataset_a_run_builds_from_the_hub_is_left_to_run_time(project, tmp_path, hub_online, capsys):
    (tmp_path / "data").mkdir()
    notes = check_notes(project({"datasets": ["stereoset"], "data_dir": "data"}), capsys)
    where = tmp_path / "data" / "stereoset.csv"
    assert f"dataset stereoset (no {where}; a run builds it from its Hugging Face source, checked then)" in notes
    assert_refused(project({"datasets": ["confaide"], "data_dir": "data"}), capsys,
                   "key 'data_dir': confaide:", "it has no Hugging Face source")


def test_a_builtin_dataset_on_disk_is_read_and_split(project, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stereoset.csv").write_text("statement,label\nthe man ate,1\nthe man sky,0\n")
    assert_refused(project({"datasets": ["stereoset"], "data_dir": "data"}), capsys,
                   "key 'probes.folds': 5 does not fit dataset stereoset (2 rows, 1 of the rarer class, 1 groups)")


def test_a_data_dir_that_is_not_a_folder_is_refused(project, capsys):
    assert_refused(project({"data_dir": "/nonexistent"}), capsys, "key 'data_dir': /nonexistent is not a folder")


@pytest.mark.parametrize(
    ("rows", "changes", "fragments"),
    [
        pytest.param([f"row {i},{i % 2}" for i in range(8)], {},
                     ["key 'probes.folds': 5 does not fit dataset small (8 rows, 4 of the rarer class)", "into 5 fold(s)"],
                     id="random-folds"),
        pytest.param([f"row {i},{i % 2},{i // 4}" for i in range(12)], {},
                     ["key 'probes.folds': 5 does not fit dataset small (12 rows, 6 of the rarer class, 3 groups)",
                      "needs at least 5 groups, found 3"], id="grouped-folds"),
        pytest.param([f"row {i},{i % 2}" for i in range(8)], {"probes": {"folds": 1, "test_size": 0.1}},
                     ["key 'probes.test_size': 0.1 does not fit dataset small (8 rows"], id="one-fold-test-size"),
        pytest.param([f"row {i},{int(i >= 6)}" for i in range(8)], {"probes": {"split": "paper"}},
                     ["key 'probes.split': paper does not fit dataset small (8 rows, 2 of the rarer class)", "one class only"],
                     id="paper"),
    ],
)
def test_a_dataset_too_small_for_the_probe_split_is_refused(project, tmp_path, capsys, rows, changes, fragments):
    header = "statement,label,group" if rows[0].count(",") == 2 else "statement,label"
    (tmp_path / "small.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    assert_refused(project({"datasets": ["small.csv"], **changes}), capsys, *fragments)


def test_the_probe_split_is_checked_only_for_the_stages_that_use_it(project, tmp_path, capsys):
    (tmp_path / "small.csv").write_text("statement,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(8)))
    assert check_notes(project({"datasets": ["small.csv"], "probes": {"folds": 4}}), capsys) == []
    assert check_notes(project({"datasets": ["small.csv"], "stages": ["extract"]}), capsys) == []


def test_hub_targets_are_left_to_run_time_and_local_ones_are_not(project, tmp_path, capsys):
    steering = {**STEERING, "target": "EleutherAI/pythia-70m"}
    notes = check_notes(project({"stages": ["extract", "steering", "evaluate"], "steering": steering,
                                 "evaluate": {"tasks": ["privacy"], "model": "org/chat-model"}}), capsys)
    assert ("key 'steering.target': EleutherAI/pythia-70m is not a local folder; "
            "the Hub model is checked when the stage loads it") in notes
    assert any(note.startswith("key 'evaluate.model': org/chat-model is not a local folder") for note in notes)
    local = {**STEERING, "target": str(tmp_path / "suite" / "step_10")}
    assert check_notes(project({"stages": ["extract", "steering", "evaluate"], "steering": local,
                                "evaluate": {"tasks": ["privacy"]}}), capsys) == []
