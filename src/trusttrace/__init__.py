"""trusttrace: trace how trustworthiness is encoded across a language model's pre-training checkpoints.

    import trusttrace as tt
    ds = tt.load_dataset("stereoset", data_dir="shared/datasets")
    model, tok = tt.load_model("EleutherAI/pythia-70m", revision="step1000")
    acts = tt.extract_activations(model, tok, ds.statements)
    probes = tt.fit_probes(acts, ds.labels, groups=ds.groups)

Names are imported on first use (PEP 562), so the command line starts without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "trusttrace.analysis": ("mi_record", "probe_record", "run_mi", "run_probes"),
    "trusttrace.checkpoints": ("Checkpoint", "CheckpointSuite", "checkpoint_suite", "list_suites"),
    "trusttrace.config": ("SweepConfig", "load_config"),
    "trusttrace.data": ("DatasetCard", "TrustDataset", "builtin_cards", "load_dataset"),
    "trusttrace.errors": (
        "CheckpointError", "ConfigError", "CorruptArtefactError", "DatasetError", "EvaluationError", "LayerError",
        "ModelError", "OfflineError", "ProbeError", "ReportError", "SteeringError", "StoreError", "TrustTraceError",
    ),
    "trusttrace.evaluation": ("EvalResult", "GridResult", "evaluate", "steering_grid"),
    "trusttrace.extract": ("extract_activations",),
    "trusttrace.info": ("ESTIMATOR_CAVEAT", "information_plane", "mutual_information", "turning_points"),
    "trusttrace.models": ("decoder_layers", "load_model"),
    "trusttrace.probes": ("ProbeResults", "fit_probes"),
    "trusttrace.report": ("write_report",),
    "trusttrace.splits": ("make_splits",),
    "trusttrace.steering": (
        "Steering", "build_vectors", "export_lm_eval", "load_vectors", "save_vectors", "steer", "steering_vector",
    ),
    "trusttrace.store": ("ActivationStore",),
    "trusttrace.sweep": ("run_sweep",),
    "trusttrace.extract_stage": ("extract_to_store",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from trusttrace.provenance import trusttrace_version

        return trusttrace_version()
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'trusttrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
