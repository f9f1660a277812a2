"""The experiment configuration of `trusttrace run`: one YAML file, validated up front.

Every key is checked before any work starts, and nothing is written or downloaded meanwhile.
Here, what the file alone can tell: unknown or repeated keys, wrong types (true/false is not a
number), sections and stages that do not go together, layers that will not be extracted, bad
devices; `trusttrace.config_checks` checks the names against what exists. A problem is one
ConfigError naming the file and the key. Relative paths in the file (workspace, data_dir,
local: suites, dataset files) are relative to the file's folder.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from trusttrace.checkpoints import LOCAL_PREFIX
from trusttrace.errors import ConfigError

Stage = Literal["extract", "probes", "mi", "steering", "evaluate"]
STAGES: tuple[str, ...] = get_args(Stage)
SECTION_STAGES = ("steering", "evaluate")  # stages configured by a section of their own name
DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")
MERGE_TAG = "tag:yaml.org,2002:merge"

# The example config `run --help` shows. Its lines stay under 76 characters: a line the help
# wraps would break the YAML a user copies from it.
EXAMPLE = """\
# Paths are relative to this file.
workspace: runs/pythia-160m     # activations, tables, manifest, report
suite: pythia-160m              # amber, pythia-SIZE, olmo-7b, local:DIR
checkpoints: "log:12"           # names, all, every:K, log:N, first:N
datasets: [truthfulqa, toxigen, confaide, stereoset, sst2]  # or files
data_dir: shared/datasets       # or $TRUSTTRACE_DATA
layers: all
position: last
dtype: auto                     # bf16 on a GPU, fp32 on the CPU
protocol: default               # or paper: the study's splits and probes
seed: 0                         # every split: probes, steering, evaluation
stages: [extract, probes, mi]
probes: {method: logreg, folds: 5}
mi: {estimator: nhsic, x_layer: 0}
prefetch: true                  # fetch the next checkpoint meanwhile
keep_weights: false             # delete a checkpoint's files when done
keep_activations: true          # false: delete its sets once probed
"""


def _not_bool(value: Any) -> Any:
    """Refuse true/false where a number is expected: pydantic's lax mode would read them as 1.0 and 0.0."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number, not true/false")
    return value


Number = Annotated[float, BeforeValidator(_not_bool)]
# A layer number as extraction stores it: counted from block 0, so a negative one never matches.
StoredLayer = Annotated[StrictInt, Field(ge=0)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
                continue
            key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(f"key {key!r} is given twice (lines {lines[key]} and {line})")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


class Strict(BaseModel):
    """A config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ProbeOptions(Strict):
    split: Optional[Literal["grouped", "random", "paper"]] = Field(
        None, description="default: paper under protocol paper, else grouped where groups exist"
    )
    method: Literal["logreg", "mass_mean"] = "logreg"
    folds: StrictInt = Field(5, ge=1)
    test_size: Number = Field(0.2, gt=0, lt=1)
    seed: Optional[StrictInt] = Field(None, ge=0, description="seed of the probes' folds and MI's rows (default: the sweep's seed)")
    C: Number = Field(1.0, gt=0, allow_inf_nan=False)


class MIOptions(Strict):
    estimator: Literal["nhsic", "hsic", "gaussian", "ksg"] = "nhsic"
    x_layer: StoredLayer = Field(0, description="the layer whose states stand for the input X: one of the extracted layers")
    max_rows: Optional[StrictInt] = Field(
        None, ge=3, description="estimate on a seeded subsample of at most this many training rows (default: all); "
        "the kernel estimators need memory as rows² and time as rows³"
    )


class SteeringOptions(Strict):
    source: str = Field(..., description="checkpoint whose activations give the vectors: a selected one, or one an earlier run extracted")
    target: str = Field("final", description="'final' (last selected checkpoint), a suite target key, or a model id/path")
    datasets: Optional[list[str]] = Field(None, min_length=1, description="names of the sweep's datasets (default: all)")
    layers: list[StoredLayer] = Field(..., min_length=1)
    alphas: list[Annotated[Number, Field(allow_inf_nan=False)]] = Field(default_factory=lambda: [-4.0, -2.0, 0.0, 2.0, 4.0], min_length=1)
    scaling: Literal["std", "unit", "raw"] = "std"
    positions: Literal["last", "all", "prompt", "generated"] = "last"
    max_perplexity: Optional[Number] = Field(6.0, gt=0)
    max_rows: Optional[StrictInt] = Field(None, ge=1, description="evaluate on at most this many held-out rows")

    @field_validator("layers")
    @classmethod
    def _each_layer_once(cls, layers: list[int]) -> list[int]:
        """A layer named twice would be steered and tested twice in one grid."""
        repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
        if repeated:
            raise PydanticCustomError("repeated_layers", "layers {repeated} are named more than once: name each layer once", {"repeated": repeated})
        return layers


class EvaluateOptions(Strict):
    tasks: list[str] = Field(..., min_length=1)
    model: str = Field("final", description="'final', a suite target key, or a model id/path")
    max_rows: Optional[StrictInt] = Field(None, ge=1)


class SweepConfig(Strict):
    """A sweep: which checkpoints of which suite, which datasets, which stages, into which workspace.

    Read from YAML with `load_config` (paths relative to the file) or built with `parse_config`
    from a dict; `trusttrace run --help` shows an example. Unknown keys are errors.
    """

    workspace: Path
    suite: str
    checkpoints: Union[str, list[str]] = "all"
    datasets: list[str] = Field(..., min_length=1)
    data_dir: Optional[Path] = None
    layers: Union[Literal["all"], list[int]] = "all"
    position: Literal["last", "first", "mean"] = "last"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Optional[str] = Field(None, description="cpu, cuda, cuda:N or mps; auto or unset: CUDA when available, else the CPU")
    batch_size: Optional[StrictInt] = Field(None, ge=1)
    protocol: Literal["default", "paper"] = "default"
    seed: StrictInt = Field(0, ge=0, description="seed of every split: the steering vectors' development rows, the evaluation's held-out rows, and the probes' folds (and so MI's rows) unless probes.seed is set; default: probes.seed when only that is set, else 0")
    stages: list[Stage] = Field(default_factory=lambda: ["extract", "probes", "mi"], min_length=1)
    probes: ProbeOptions = Field(default_factory=ProbeOptions)
    mi: MIOptions = Field(default_factory=MIOptions)
    steering: Optional[SteeringOptions] = None
    evaluate: Optional[EvaluateOptions] = None
    prefetch: bool = True
    keep_weights: bool = True
    keep_activations: bool = Field(True, description="false: delete a checkpoint's activation sets once its probe and MI units are done (never the steering source's); a later run that needs one extracts it again")
    disk_budget: Optional[StrictInt] = Field(None, ge=1, description="most checkpoints kept on disk at once")
    retries: StrictInt = Field(2, ge=0)
    trust_remote_code: bool = False

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, stages: list[str]) -> list[str]:
        return [stage for stage in STAGES if stage in stages]

    @field_validator("checkpoints", mode="before")
    @classmethod
    def _selection(cls, value: Any) -> Any:
        """A selection or a list of names; anything else is reported under `checkpoints`, not a union member's name."""
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(name, str) for name in value)):
            return value
        raise PydanticCustomError(
            "selection", "expected 'all', 'every:K', 'log:N', 'first:N', checkpoint names separated by commas, or a list of names"
        )

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_choice(cls, value: Any) -> Any:
        """'all' or a non-empty list of whole layer numbers, reported under `layers` when not."""
        if value == []:
            raise PydanticCustomError("no_layers", "no layers chosen: give 'all' or a list of layer numbers")
        if value == "all" or (isinstance(value, list) and all(is_int(layer) for layer in value)):
            return value
        raise PydanticCustomError("layers", "expected 'all' or a list of layer numbers (negative ones count from the last block)")

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> Any:
        """cpu, cuda, cuda:N or mps; 'auto' (as for dtype) and unset both leave the choice to trusttrace."""
        if value is None or value == "auto":
            return None
        if isinstance(value, str) and DEVICE.fullmatch(value):
            return value
        raise PydanticCustomError("device", "expected cpu, cuda, cuda:N, mps or auto (CUDA when available, else the CPU)")

    @model_validator(mode="after")
    def _consistent(self) -> "SweepConfig":
        """Refuse keys that contradict each other, as a ConfigError naming the key. A config that
        sets probes.seed but no seed (one written before 0.5.0) keeps its meaning: that seed for every split."""
        if "seed" not in self.model_fields_set and self.probes.seed is not None:
            self.seed = self.probes.seed
        problem = _section_problem(self) or _pruning_problem(self) or _dataset_name_problem(self) or layer_use_problem(self, _listed_layers(self.layers))
        if problem:
            raise ConfigError(problem)
        _warn_moot_probe_keys(self)
        if self.protocol == "paper" and self.dtype != "float32" and "extract" in self.stages:
            warnings.warn(
                f"protocol: paper with dtype: {self.dtype}: the study extracted float32 states (dtype: auto is bfloat16 "
                "on a GPU); set dtype: float32 to reproduce its representations", stacklevel=2,
            )
        return self

    def probe_split(self) -> str:
        """The probe split: the config's, else the protocol's (paper, or grouped where groups exist)."""
        if self.probes.split is not None:
            return self.probes.split
        return "paper" if self.protocol == "paper" else "grouped"

    def probe_seed(self) -> int:
        """The seed of the probes' folds (and so of MI's rows): the config's, else the sweep's."""
        return self.seed if self.probes.seed is None else self.probes.seed


def _warn_moot_probe_keys(config: SweepConfig) -> None:
    """Warn of a probes key set to other than its default where the other keys make it moot: a
    changed value still names new units, which rerun for nothing."""
    probes = config.probes
    changed = {key for key in probes.model_fields_set if getattr(probes, key) != ProbeOptions.model_fields[key].default}
    reasons = {}
    if config.probe_split() == "paper":
        reasons |= {key: "the paper split is the first 80 % of rows, one fold" for key in ("folds", "test_size")}
    elif probes.folds > 1:
        reasons["test_size"] = f"with folds: {probes.folds} each fold tests 1/{probes.folds} of the rows"
    if probes.method == "mass_mean":
        reasons["C"] = "the mass_mean probe has no regularisation"
    for key in sorted(changed & reasons.keys()):
        reruns = "the probes" if key == "C" else "the probes and MI"  # MI's rows depend on the split, not on C
        warnings.warn(f"key 'probes.{key}' has no effect here ({reasons[key]}); another value still reruns {reruns}", stacklevel=2)


def is_int(value: Any) -> bool:
    """Whether `value` is a whole number and not true/false (which Python counts as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _section_problem(config: SweepConfig) -> str | None:
    """A steering/evaluate section without its stage (it would be ignored), or the stage without its section."""
    for stage in SECTION_STAGES:
        given = getattr(config, stage) is not None
        if given and stage not in config.stages:
            return (f"key '{stage}': the section is set but '{stage}' is not in stages {config.stages}: "
                    "add it to stages, or remove the section")
        if stage in config.stages and not given:
            return f"key '{stage}': the {stage} stage needs a '{stage}' section"
    return None


def _pruning_problem(config: SweepConfig) -> str | None:
    """keep_activations: false where no probes or MI stage would read a set before it is deleted."""
    if config.keep_activations or "probes" in config.stages or "mi" in config.stages:
        return None
    return (f"key 'keep_activations': false deletes each activation set once its probes and MI are done, and stages "
            f"{config.stages} compute neither, so every set would go unused: keep them, or add probes or mi to stages")


def dataset_name(entry: str) -> str:
    """The name a `datasets` entry gets in the sweep, as load_dataset gives it: a built-in's own, a file's stem."""
    from trusttrace.data.cards import CARDS

    return entry if entry in CARDS else Path(entry).stem


def is_dataset_file(entry: str) -> bool:
    """Whether a `datasets` entry is a file path (a data file suffix, or a folder in it), not a built-in name."""
    from trusttrace.data.cards import CARDS
    from trusttrace.data.files import SUFFIXES

    if entry in CARDS:
        return False
    return Path(entry).suffix.lower() in SUFFIXES or "/" in entry or os.sep in entry


def _dataset_name_problem(config: SweepConfig) -> str | None:
    """Two datasets with one name (their units and tables would collide), or steering datasets the sweep lacks."""
    entries: dict[str, str] = {}
    for entry in config.datasets:
        name = dataset_name(entry)
        if name in entries and entries[name] == entry:
            return f"key 'datasets': {entry!r} is listed twice"
        if name in entries:
            return (f"key 'datasets': {entries[name]} and {entry} have the same name {name!r} (a file's name is its stem); "
                    "their units and tables would collide: rename one")
        entries[name] = entry
    wanted = config.steering.datasets if config.steering is not None else None
    unknown = [name for name in wanted or [] if name not in entries]
    if unknown:
        return (f"key 'steering.datasets': {unknown[0]!r} is not one of the sweep's datasets ({', '.join(entries)}); "
                "name them as the sweep does: a built-in's name, a file's stem")
    return None


def _listed_layers(layers: str | list[int]) -> list[int] | None:
    """The layer numbers extraction will store when the config alone tells; None when that takes the block count."""
    if layers == "all" or any(layer < 0 for layer in layers):
        return None
    return list(layers)


def layer_use_problem(config: SweepConfig, stored: list[int] | None) -> str | None:
    """The mi x_layer or steering layers that extraction will not store (those units would all fail); None if unknown."""
    if stored is None:
        return None
    if "mi" in config.stages and config.mi.x_layer not in stored:
        return (f"key 'mi.x_layer': layer {config.mi.x_layer} is not among the extracted layers ({_span(stored)}): "
                f"set mi: {{x_layer: {min(stored)}}}, the lowest of them (the study's X is block 0)")
    if "steering" in config.stages:
        missing = [layer for layer in config.steering.layers if layer not in stored]
        if missing:
            return (f"key 'steering.layers': layers {missing} are not among the extracted layers ({_span(stored)}): "
                    "steer on extracted layers")
    return None


def _span(layers: list[int]) -> str:
    """Layer numbers for a message: 'a..b' for a run of more than three, else the numbers."""
    ordered = sorted(set(layers))
    if len(ordered) > 3 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}..{ordered[-1]}"
    return ", ".join(map(str, ordered))


def yaml_problem(error: yaml.YAMLError) -> str:
    """What a YAML parser found wrong, and on which line: "line 3: expected ',' or ']'"."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


def load_config(path: str | os.PathLike) -> SweepConfig:
    """Read and validate a YAML config; relative paths in it are relative to the file's folder,
    and `~` is the home folder.

    Those are the workspace, data_dir, a local: suite, dataset files (built-in names stay names)
    and a steering target or evaluate model that names a folder there (Hub ids stay ids).
    """
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: cannot read the config (not UTF-8 text: {error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(error)})") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config is empty; `trusttrace run --help` shows an example")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    config = parse_config(raw, where=str(path))
    base = path.resolve().parent
    updates: dict[str, Any] = {
        "workspace": base / config.workspace.expanduser(), "datasets": [_from_folder(entry, base) for entry in config.datasets],
    }
    if config.data_dir is not None:
        updates["data_dir"] = base / config.data_dir.expanduser()
    if config.steering is not None:
        updates["steering"] = config.steering.model_copy(update={"target": _model_folder(config.steering.target, base)})
    if config.evaluate is not None:
        updates["evaluate"] = config.evaluate.model_copy(update={"model": _model_folder(config.evaluate.model, base)})
    if config.suite.startswith(LOCAL_PREFIX) and not Path(config.suite.removeprefix(LOCAL_PREFIX)).expanduser().is_absolute():
        updates["suite"] = LOCAL_PREFIX + str(base / config.suite.removeprefix(LOCAL_PREFIX))
    return config.model_copy(update=updates)


def _model_folder(name: str, base: Path) -> str:
    """A model written as a path (with a folder separator, or starting with . or ~): absolute, or
    under `base` when that folder exists there. A bare name ('final', a suite target key such as
    'chat', a Hub id without an owner) is never taken for a folder beside the config."""
    if not (os.sep in name or "/" in name or name.startswith((".", "~"))):
        return name
    path = Path(name).expanduser()
    if path.is_absolute():
        return str(path)
    return str(base / path) if (base / path).is_dir() else name


def _from_folder(entry: str, base: Path) -> str:
    """A relative dataset file path as a path under `base`; built-in names and absolute paths unchanged."""
    if not is_dataset_file(entry):
        return entry
    path = Path(entry).expanduser()
    return str(path if path.is_absolute() else base / path)


def parse_config(raw: dict, where: str = "config") -> SweepConfig:
    """Validate a config mapping, turning the first problem into a ConfigError naming the key."""
    try:
        return SweepConfig.model_validate(raw)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        value = "" if first["type"] in ("missing", "extra_forbidden") else f" (got {first.get('input')!r})"
        raise ConfigError(f"{where}: key '{key}': {message}{value}") from None
