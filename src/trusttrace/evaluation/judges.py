"""Judges that answer yes or no about a (question, answer) pair: a local causal LM or an HTTP endpoint.

Both read TruthfulQA's judge format ("Q: …\\nA: …\\nTrue:" or "…\\nHelpful:") and return one
Verdict per prompt: 1 for " yes", 0 for " no", or None with the reason the call failed. A
failing HTTP call is retried with exponential backoff, then recorded; it never ends the run.
API keys are read from the environment at call time and never logged or stored.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trusttrace.errors import EvaluationError
from trusttrace.evaluation.scoring import choice_logprobs
from trusttrace.evaluation.templates import JUDGE_ANSWERS
from trusttrace.models import load_model

APIS = ("completions", "chat")
# HTTP statuses worth another try; any other 4xx (bad key, unknown model) will not change.
RETRY_STATUSES = {408, 409, 425, 429}
ANSWER_WORDS = {"yes": 1, "no": 0}  # an endpoint's reply, by its first word


@dataclass(frozen=True)
class Verdict:
    """One judgement: answer 1 (yes), 0 (no) or None when the judge failed, with the reason."""

    answer: int | None
    error: str | None = None


class Judge(Protocol):
    """Anything that turns judge prompts into verdicts."""

    name: str

    def judge(self, prompts: Sequence[str]) -> list[Verdict]: ...


class LocalJudge:
    """A Hugging Face causal LM judge: yes when log p(" yes") > log p(" no") after the prompt."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, name: str | None = None, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.name = name or getattr(model, "name_or_path", "") or type(model).__name__

    @classmethod
    def load(cls, model_id: str, revision: str | None = None, *, dtype: str = "auto", device: str | None = None, batch_size: int = 8) -> LocalJudge:
        """Load a judge such as allenai/truthfulqa-truth-judge-llama2-7B by Hub id or path."""
        model, tokenizer = load_model(model_id, revision, dtype=dtype, device=device)
        return cls(model, tokenizer, name=str(model_id), batch_size=batch_size)

    def judge(self, prompts: Sequence[str]) -> list[Verdict]:
        scores = choice_logprobs(
            self.model, self.tokenizer, prompts, [list(JUDGE_ANSWERS)] * len(prompts), batch_size=self.batch_size, desc="judge"
        )
        return [Verdict(int(score[1] > score[0])) for score in scores]


@dataclass
class HTTPJudge:
    """A judge behind an OpenAI-compatible API (`/completions` or `/chat/completions`).

    Each prompt is one request with temperature 0 and max_tokens 1; the reply's text must
    start with "yes" or "no". Failed calls (network error, timeout, HTTP 5xx or 429, a reply
    that is not yes/no) are tried `retries` more times, waiting `backoff`·2^k seconds.
    `api_key_env` names the environment variable holding the key (None: send no key, e.g. a
    local server).
    """

    base_url: str
    model: str
    api: str = "completions"
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0
    workers: int = 4

    def __post_init__(self) -> None:
        if not self.base_url or not self.base_url.startswith(("http://", "https://")):
            raise EvaluationError(f"judge base_url {self.base_url!r} must be an http(s) URL, e.g. https://api.openai.com/v1")
        if not self.model:
            raise EvaluationError("judge: no model name given for the endpoint")
        if self.api not in APIS:
            raise EvaluationError(f"judge api {self.api!r} is not one of {', '.join(APIS)}")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise EvaluationError(f"judge: the environment variable {self.api_key_env} holding the API key is not set")

    @property
    def name(self) -> str:
        return f"{self.model} at {self.base_url}"

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + ("/completions" if self.api == "completions" else "/chat/completions")

    def body(self, prompt: str) -> dict[str, Any]:
        """The JSON request for one prompt: greedy, one token."""
        content = {"prompt": prompt} if self.api == "completions" else {"messages": [{"role": "user", "content": prompt}]}
        return {"model": self.model, **content, "max_tokens": 1, "temperature": 0}

    def judge(self, prompts: Sequence[str]) -> list[Verdict]:
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            return list(pool.map(self._judge_one, prompts))

    def _judge_one(self, prompt: str) -> Verdict:
        error = "not tried"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return Verdict(_yes_no(self._reply_text(self._post(self.body(prompt)))))
            except urllib.error.HTTPError as failure:
                error = f"HTTP {failure.code}"
                if failure.code < 500 and failure.code not in RETRY_STATUSES:
                    break
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, ConnectionError) as failure:
                error = f"unreachable ({getattr(failure, 'reason', failure)})"
            except ValueError as failure:
                error = f"unusable reply ({failure})"
        return Verdict(None, error)

    def _post(self, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.api_key_env, '')}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def _reply_text(self, reply: Any) -> str:
        try:
            choice = reply["choices"][0]
            text = choice["text"] if self.api == "completions" else choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"no {'text' if self.api == 'completions' else 'message'} in the reply") from None
        if not isinstance(text, str):  # a refusal or a tool call comes back with content null
            raise ValueError(f"the reply's text is {text!r}, not text")
        return text


def _yes_no(text: str) -> int:
    """1 for a reply whose first word is yes, 0 for no ("No." too, not "Not" or "None");
    anything else is a ValueError."""
    word = re.match(r"[a-z]*", (text or "").strip().lower()).group()
    if word in ANSWER_WORDS:
        return ANSWER_WORDS[word]
    raise ValueError(f"{(text or '')[:20]!r} is neither yes nor no")


def make_judge(
    spec: Judge | str | None,
    *,
    base_url: str | None = None,
    api: str = "completions",
    api_key_env: str | None = "OPENAI_API_KEY",
) -> Judge | None:
    """A judge from a Judge object, an endpoint model name (with `base_url`) or a Hub id/path."""
    if spec is None or not isinstance(spec, str):
        return spec
    if base_url:
        return HTTPJudge(base_url, spec, api=api, api_key_env=api_key_env)
    return LocalJudge.load(spec)
