"""The offline demo: a synthetic world of facts, a tiny LM pre-trained on it, and the full trace."""

from trusttrace.demo.pretrain import checkpoint_steps, pretrain, world_tokenizer
from trusttrace.demo.run import DemoResult, run_demo
from trusttrace.demo.world import ATTRIBUTES, CompletionItem, Entity, World, build_world

__all__ = [
    "ATTRIBUTES", "CompletionItem", "DemoResult", "Entity", "World", "build_world", "checkpoint_steps", "pretrain",
    "run_demo", "world_tokenizer",
]
