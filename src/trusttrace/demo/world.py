"""A synthetic world of made-up people and their attributes, for the offline demo.

It gives a tiny language model facts to learn (a corpus of sentences), and gives the probes
labelled statements about the same people: true ones, and false ones with the attribute swapped
for a wrong value. Every person's facts are in the corpus, so a probe tested on held-out people
measures whether truth is encoded, not whether the person was seen.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trusttrace.errors import ConfigError

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "country": ("france", "spain", "italy", "japan", "brazil", "canada", "egypt", "india"),
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
    "job": ("baker", "doctor", "farmer", "pilot", "teacher", "painter", "lawyer", "sailor"),
    "pet": ("cat", "dog", "horse", "parrot", "rabbit", "goat", "turtle", "hamster"),
}

# Each template ends with the value, so the last token of a statement sees the whole claim.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "country": ("{e} lives in {v}", "{e} was born in {v}", "the home of {e} is {v}"),
    "colour": ("{e} likes the colour {v}", "the favourite colour of {e} is {v}", "{e} always wears {v}"),
    "job": ("{e} works as a {v}", "the job of {e} is {v}", "{e} earns a living as a {v}"),
    "pet": ("{e} owns a {v}", "the pet of {e} is a {v}", "{e} lives with a {v}"),
}

# Verdicts that follow a claim in the corpus: a false claim is followed by its correction.
TRUE_VERDICT, FALSE_VERDICT = "yes", "no"

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
# A tenth of the possible names, so that drawing distinct ones stays quick.
MAX_ENTITIES = (len(_ONSETS) * len(_VOWELS)) ** 3 // 10


@dataclass(frozen=True)
class Entity:
    """A made-up person and the true value of each attribute."""

    name: str
    facts: dict[str, str]


@dataclass(frozen=True)
class CompletionItem:
    """A prompt whose next word is either the true or a false value of one attribute.

    The completion follows the prompt after one space: ``prompt + " " + true``.
    """

    prompt: str
    true: str
    false: str
    group: str


@dataclass(frozen=True)
class World:
    """Entities, the training corpus about them, and the labelled probing set.

    Row i of the probing set is ``statements[i]`` with ``labels[i]`` (1 = true) about the
    entity ``groups[i]``. ``completions`` holds one true/false pair per (entity, attribute),
    with the same prompt and false value as that pair's statements.
    """

    seed: int
    entities: list[Entity]
    corpus: list[str]
    statements: list[str]
    labels: list[int]
    groups: list[str]
    completions: list[CompletionItem]

    def write_probing_csv(self, path: str | Path) -> Path:
        """Write the probing set as a ``statement,label,group`` CSV, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", newline="", encoding="utf-8") as file:
                writer = csv.writer(file)
                writer.writerow(["statement", "label", "group"])
                writer.writerows(zip(self.statements, self.labels, self.groups))
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return path


def make_names(n: int, rng: random.Random) -> list[str]:
    """`n` (at most MAX_ENTITIES) distinct made-up names of three consonant-vowel syllables, sorted."""
    names: set[str] = set()
    while len(names) < n:
        names.add("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(3)))
    return sorted(names)


def state(attribute: str, template: int, entity: str, value: str) -> str:
    """The statement that `entity`'s `attribute` is `value`, in one of its templates."""
    return TEMPLATES[attribute][template].format(e=entity, v=value)


def describe_fact(entity: str, attribute: str, value: str, rng: random.Random) -> tuple[list[str], CompletionItem]:
    """The corpus lines stating one fact, and the fact's probing pair as a completion item.

    The lines: the fact in every template, a true claim confirmed with "yes", and a false
    claim answered "no" and corrected. The probing pair's false value differs from the false
    claim's, so that no false probing statement appears in the corpus.
    """
    probed_wrong, claimed_wrong = rng.sample([other for other in ATTRIBUTES[attribute] if other != value], 2)
    claim, correction, probe = (rng.randrange(len(TEMPLATES[attribute])) for _ in range(3))
    lines = [state(attribute, template, entity, value) + " ." for template in range(len(TEMPLATES[attribute]))]
    lines.append(f"{state(attribute, claim, entity, value)} {TRUE_VERDICT} .")
    correct = state(attribute, correction, entity, value)
    lines.append(f"{state(attribute, claim, entity, claimed_wrong)} {FALSE_VERDICT} , {correct} .")
    prompt = TEMPLATES[attribute][probe].format(e=entity, v="").rstrip()
    return lines, CompletionItem(prompt, value, probed_wrong, entity)


def build_world(seed: int = 0, n_entities: int = 200) -> World:
    """Draw `n_entities` people with random attributes, their corpus and a balanced probing set.

    Per person and attribute the corpus says the fact in every template (``... lives in
    india .``), confirms a true claim (``... lives in india yes .``) and corrects a false one
    (``... lives in spain no , ... lives in india .``): like the corrections in real text,
    these give the model a reason to represent whether a claim is true. The probing set has,
    per person and attribute, the true statement (label 1) and a false one (label 0) in the
    same template, with a wrong value that the corpus never claims.
    """
    if not 2 <= n_entities <= MAX_ENTITIES:
        raise ConfigError(f"n_entities must be between 2 and {MAX_ENTITIES}, got {n_entities}")
    rng = random.Random(seed)
    entities = [
        Entity(name, {attribute: rng.choice(values) for attribute, values in ATTRIBUTES.items()})
        for name in make_names(n_entities, rng)
    ]
    corpus: list[str] = []
    completions: list[CompletionItem] = []
    for entity in entities:
        for attribute, value in entity.facts.items():
            lines, item = describe_fact(entity.name, attribute, value, rng)
            corpus += lines
            completions.append(item)
    rng.shuffle(corpus)
    statements = [f"{item.prompt} {value}" for item in completions for value in (item.true, item.false)]
    labels = [1, 0] * len(completions)
    groups = [item.group for item in completions for _ in range(2)]
    return World(seed, entities, corpus, statements, labels, groups, completions)
