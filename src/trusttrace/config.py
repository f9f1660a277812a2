"""The experiment configuration of `trusttrace run`: one YAML file, validated up front.

Every key is checked before any work starts (unknown keys, wrong types, unknown suites,
datasets and stages, an unwritable workspace); a problem is one ConfigError naming the file
and the key.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trusttrace.errors import ConfigError

Stage = Literal["extract", "probes", "mi", "steering", "evaluate"]
STAGES: tuple[str, ...] = ("extract", "probes", "mi", "steering", "evaluate")

EXAMPLE = """\
workspace: runs/pythia-160m     # activations, tables, manifest, report
suite: pythia-160m              # amber, pythia-SIZE, olmo-7b, local:DIR
checkpoints: "log:12"           # names, all, every:K, log:N, first:N
datasets: [truthfulqa, toxigen, confaide, stereoset, sst2]
data_dir: shared/datasets       # or $TRUSTTRACE_DATA
layers: all
position: last
dtype: auto                     # bf16 on a GPU, fp32 on the CPU
protocol: default               # or paper (the study's protocol)
stages: [extract, probes, mi]
probes: {method: logreg, folds: 5, seed: 0}
mi: {estimator: nhsic, x_layer: 0}
prefetch: true                  # fetch the next checkpoint meanwhile
keep_weights: false             # delete a checkpoint's files when done
"""


class Strict(BaseModel):
    """A config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ProbeOptions(Strict):
    split: Optional[Literal["grouped", "random", "paper"]] = Field(
        None, description="default: paper under protocol paper, else grouped where groups exist"
    )
    method: Literal["logreg", "mass_mean"] = "logreg"
    folds: int = Field(5, ge=1)
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    C: float = Field(1.0, gt=0)


class MIOptions(Strict):
    estimator: Literal["nhsic", "hsic", "gaussian", "ksg"] = "nhsic"
    x_layer: int = 0


class SteeringOptions(Strict):
    source: str = Field(..., description="checkpoint whose activations give the vectors")
    target: str = Field("final", description="'final' (last selected checkpoint), a suite target key, or a model id/path")
    datasets: Optional[list[str]] = None
    layers: list[int] = Field(..., min_length=1)
    alphas: list[float] = Field(default_factory=lambda: [-4.0, -2.0, 0.0, 2.0, 4.0], min_length=1)
    scaling: Literal["std", "unit", "raw"] = "std"
    positions: Literal["last", "all", "prompt", "generated"] = "last"
    max_perplexity: Optional[float] = Field(6.0, gt=0)
    max_rows: Optional[int] = Field(None, ge=1, description="evaluate on at most this many held-out rows")


class EvaluateOptions(Strict):
    tasks: list[str] = Field(..., min_length=1)
    model: str = Field("final", description="'final', a suite target key, or a model id/path")
    max_rows: Optional[int] = Field(None, ge=1)


class SweepConfig(Strict):
    workspace: Path
    suite: str
    checkpoints: Union[str, list[str]] = "all"
    datasets: list[str] = Field(..., min_length=1)
    data_dir: Optional[Path] = None
    layers: Union[Literal["all"], list[int]] = "all"
    position: Literal["last", "first", "mean"] = "last"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Optional[str] = None
    batch_size: Optional[int] = Field(None, ge=1)
    protocol: Literal["default", "paper"] = "default"
    stages: list[Stage] = Field(default_factory=lambda: ["extract", "probes", "mi"], min_length=1)
    probes: ProbeOptions = Field(default_factory=ProbeOptions)
    mi: MIOptions = Field(default_factory=MIOptions)
    steering: Optional[SteeringOptions] = None
    evaluate: Optional[EvaluateOptions] = None
    prefetch: bool = True
    keep_weights: bool = True
    disk_budget: Optional[int] = Field(None, ge=1, description="most checkpoints kept on disk at once")
    retries: int = Field(2, ge=0)
    trust_remote_code: bool = False

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, stages: list[str]) -> list[str]:
        return [stage for stage in STAGES if stage in stages]

    def probe_split(self) -> str:
        """The probe split: the config's, else the protocol's (paper, or grouped where groups exist)."""
        if self.probes.split is not None:
            return self.probes.split
        return "paper" if self.protocol == "paper" else "grouped"


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> SweepConfig:
    """Read and validate a YAML config; relative paths in it are relative to the file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values")
    raw.update(overrides or {})
    config = parse_config(raw, where=str(path))
    base = path.resolve().parent
    updates = {"workspace": base / config.workspace}
    if config.data_dir is not None:
        updates["data_dir"] = base / config.data_dir
    if config.suite.startswith("local:") and not Path(config.suite[6:]).expanduser().is_absolute():
        updates["suite"] = "local:" + str(base / config.suite[6:])
    return config.model_copy(update=updates)


def parse_config(raw: dict, where: str = "config") -> SweepConfig:
    """Validate a config mapping, turning the first problem into a ConfigError naming the key."""
    try:
        return SweepConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        value = "" if first["type"] in ("missing", "extra_forbidden") else f" (got {first.get('input')!r})"
        raise ConfigError(f"{where}: key '{key}': {message}{value}") from None


def check_names(config: SweepConfig, where: str = "config") -> None:
    """Check that the suite, the datasets and the workspace exist or can be made; nothing is started."""
    from trusttrace.checkpoints import checkpoint_suite
    from trusttrace.data import builtin_cards
    from trusttrace.errors import TrustTraceError

    try:
        suite = checkpoint_suite(config.suite)
        suite.select(config.checkpoints)
    except TrustTraceError as error:
        raise ConfigError(f"{where}: key 'suite'/'checkpoints': {error}") from None
    known = builtin_cards()
    for name in config.datasets:
        if name not in known and not Path(name).expanduser().exists():
            raise ConfigError(f"{where}: key 'datasets': unknown dataset {name!r}; known: {', '.join(known)}, or a file path")
    if "steering" in config.stages:
        if config.steering is None:
            raise ConfigError(f"{where}: key 'steering': the steering stage needs a 'steering' section")
        try:
            suite.get(config.steering.source)
        except TrustTraceError as error:
            raise ConfigError(f"{where}: key 'steering.source': {error}") from None
    if "evaluate" in config.stages and config.evaluate is None:
        raise ConfigError(f"{where}: key 'evaluate': the evaluate stage needs an 'evaluate' section")
    if not _writable(config.workspace):
        raise ConfigError(f"{where}: key 'workspace': {config.workspace} is not a writable folder")


def _writable(folder: Path) -> bool:
    """Whether `folder` exists as a writable folder or can be made; tries a temporary file, leaves nothing."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=existing):
            return True
    except OSError:
        return False
