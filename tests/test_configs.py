"""The shipped experiment configs stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from trusttrace.config import check_names, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_is_valid(path):
    config = load_config(path)
    assert config.workspace.is_absolute()
    if config.suite.startswith(("amber", "pythia")):
        check_names(config, where=str(path))


def test_amber_reproduction_uses_the_study_settings():
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "amber-paper.yaml")
    assert config.protocol == "paper" and config.probe_split() == "paper"
    assert config.checkpoints == ["ckpt_000", "ckpt_001", "ckpt_002", "ckpt_005", "ckpt_010", "ckpt_020",
                                  "ckpt_050", "ckpt_100", "ckpt_179", "ckpt_358"]
    assert config.steering.source == "ckpt_179" and config.steering.target == "chat"


def test_the_example_in_run_help_is_a_valid_config():
    import yaml

    from trusttrace.config import EXAMPLE, parse_config

    config = parse_config(yaml.safe_load(EXAMPLE))
    assert config.datasets == ["truthfulqa", "toxigen", "confaide", "stereoset", "sst2"]
