"""The package's exceptions: one type per kind of bad input, all under TrustTraceError.

Every message is one line that names the file, row, key or value at fault, so the CLI can
print it as is and exit with code 2.
"""


class TrustTraceError(Exception):
    """Base of every error trusttrace raises on bad input or an unusable artefact."""


class DatasetError(TrustTraceError):
    """A dataset file or name is unusable (missing column, bad label, empty statement...)."""


class CheckpointError(TrustTraceError):
    """An unknown suite, revision or selection, or a checkpoint that cannot be resolved."""


class ModelError(TrustTraceError):
    """A model that cannot be loaded or whose decoder layers cannot be found."""


class LayerError(TrustTraceError):
    """A layer index outside the model's or the activations' range."""


class StoreError(TrustTraceError):
    """A missing, corrupt or incompatible artefact in a workspace."""


class CorruptArtefactError(StoreError):
    """An artefact whose checksum does not match its sidecar: never used, recomputed instead."""


class OfflineError(TrustTraceError):
    """Something needs the Hugging Face Hub and the Hub cannot be reached."""


class ProbeError(TrustTraceError):
    """Probing or mutual-information input that cannot give a meaningful answer."""


class SteeringError(TrustTraceError):
    """A steering vector that does not fit the model or layer it is applied to."""


class EvaluationError(TrustTraceError):
    """An unknown task, a bad template, an unusable classifier or judge configuration."""


class ReportError(TrustTraceError):
    """A report request that no result in the workspace can satisfy (an unknown column or value)."""


class ConfigError(TrustTraceError):
    """An invalid experiment configuration (unknown key, wrong type, unknown name)."""
