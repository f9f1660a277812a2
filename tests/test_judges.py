"""Judges: the OpenAI-compatible HTTP judge against a local server (requests, retries, failures), the local judge, judged TruthfulQA generation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from trusttrace.errors import EvaluationError
from trusttrace.evaluation import evaluate
from trusttrace.evaluation.judges import HTTPJudge, LocalJudge, Verdict
from trusttrace.evaluation.scoring import choice_logprobs
from trusttrace.tiny import tiny_model, train_tokenizer

KEY = "sk-test-secret-123"


class Server:
    """A local OpenAI-compatible endpoint; `reply(body, attempt)` returns (status, payload or raw bytes, delay)."""

    def __init__(self, reply):
        self.reply = reply
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    attempt = sum(r["body"] == body for r in server.requests)
                status, payload, delay = server.reply(body, attempt)
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(text):
    return {"choices": [{"text": text, "index": 0}]}


@pytest.fixture
def key(monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("JUDGE_KEY", KEY)
    yield "JUDGE_KEY"


def judge_for(server, key, **options):
    return HTTPJudge(server.url, "gpt-judge", api_key_env=key, **{"backoff": 0.01, "timeout": 2.0, **options})


def test_http_judge_sends_the_protocol_and_scores_answers(key):
    answers = {"Q: a\nA: b\nTrue:": " yes", "Q: c\nA: d\nTrue:": " No.", "Q: e\nA: f\nTrue:": "Yes."}
    with Server(lambda body, _: (200, completion(answers[body["prompt"]]), 0)) as server:
        verdicts = judge_for(server, key).judge(list(answers))
    assert verdicts == [Verdict(1), Verdict(0), Verdict(1)]
    assert len(server.requests) == 3
    for request in server.requests:
        assert request["path"] == "/v1/completions" and request["auth"] == f"Bearer {KEY}"
        assert request["body"] == {"model": "gpt-judge", "prompt": request["body"]["prompt"], "max_tokens": 1, "temperature": 0}


def test_http_judge_chat_api_sends_messages(key):
    reply = {"choices": [{"message": {"role": "assistant", "content": "no"}}]}
    with Server(lambda body, _: (200, reply, 0)) as server:
        verdicts = judge_for(server, key, api="chat").judge(["Q: a\nA: b\nHelpful:"])
    assert verdicts == [Verdict(0)]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["body"] == {"model": "gpt-judge", "messages": [{"role": "user", "content": "Q: a\nA: b\nHelpful:"}], "max_tokens": 1, "temperature": 0}


def test_http_judge_retries_server_errors_then_succeeds(key):
    with Server(lambda body, attempt: (500, {"error": "busy"}, 0) if attempt < 3 else (200, completion(" yes"), 0)) as server:
        verdicts = judge_for(server, key, retries=3).judge(["p"])
    assert verdicts == [Verdict(1)] and len(server.requests) == 3


@pytest.mark.parametrize(
    "reply, attempts, reason",
    [
        ((500, {"error": "down"}, 0), 3, "HTTP 500"),
        ((200, completion(" maybe"), 0), 3, "neither yes nor no"),
        ((200, completion(" Not sure"), 0), 3, "neither yes nor no"),
        ((200, completion(None), 0), 3, "not text"),
        ((200, b"<html>not json", 0), 3, "unusable reply"),
        ((200, {"unexpected": True}, 0), 3, "no text in the reply"),
        ((401, {"error": "bad key"}, 0), 1, "HTTP 401"),
        ((200, completion(" yes"), 1.0), 3, "unreachable"),
    ],
)
def test_http_judge_failures_are_retried_then_recorded(reply, attempts, reason, key):
    with Server(lambda body, _: reply) as server:
        verdicts = judge_for(server, key, retries=2, timeout=0.3).judge(["p1", "p2"])
    assert all(v.answer is None and reason in v.error for v in verdicts)
    assert all(KEY not in v.error for v in verdicts)
    counts = pd.Series([r["body"]["prompt"] for r in server.requests]).value_counts()
    assert counts.to_dict() == {"p1": attempts, "p2": attempts}


def test_http_judge_unreachable_endpoint_is_recorded(key):
    with Server(lambda body, _: (200, completion(" yes"), 0)) as server:
        url = server.url
    verdicts = HTTPJudge(url, "m", api_key_env=key, retries=1, backoff=0.01, timeout=0.5).judge(["p"])
    assert verdicts[0].answer is None and "unreachable" in verdicts[0].error


def test_http_judge_configuration_errors(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(EvaluationError, match="NO_SUCH_KEY_VAR"):
        HTTPJudge("http://127.0.0.1:9/v1", "m", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(EvaluationError, match="base_url"):
        HTTPJudge("", "m", api_key_env=None)
    with pytest.raises(EvaluationError, match="no model name"):
        HTTPJudge("http://127.0.0.1:9/v1", "", api_key_env=None)
    with pytest.raises(EvaluationError, match="api 'responses'"):
        HTTPJudge("http://127.0.0.1:9/v1", "m", api="responses", api_key_env=None)


def test_http_judge_without_key_sends_no_authorization():
    with Server(lambda body, _: (200, completion(" yes"), 0)) as server:
        HTTPJudge(server.url, "local", api_key_env=None).judge(["p"])
    assert server.requests[0]["auth"] is None


# ----- local judge and judged generation ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    words = "the a red cat dog sees house river q a : true helpful yes no ? . where is what".split()
    tok = train_tokenizer([" ".join(words[i:] + words[:i]) for i in range(len(words))], vocab_size=120)
    return tiny_model("gpt_neox", len(tok), seed=4, context=512), tok


def test_local_judge_compares_yes_and_no(tiny):
    model, tok = tiny
    prompts = ["Q: where is the cat?\nA: the house.\nTrue:", "Q: what is red?\nA: the dog.\nHelpful:"]
    verdicts = LocalJudge(model, tok).judge(prompts)
    scores = choice_logprobs(model, tok, prompts, [[" no", " yes"]] * 2)
    assert [v.answer for v in verdicts] == [int(s[1] > s[0]) for s in scores]


@pytest.fixture
def questions(tmp_path):
    (tmp_path / "tracingllm").mkdir()
    texts = ["Where is the cat?", "What is red?", "Where is the river?"]
    pd.DataFrame({"Question": texts}).to_csv(tmp_path / "tracingllm" / "truthfulqa_test.csv", index=False)
    return tmp_path


def test_truthfulqa_generation_judged_over_http(tiny, questions, key):
    """Truth says yes except for the second question, info fails for the third: rates over judged answers."""
    model, tok = tiny

    def reply(body, _):
        prompt = body["prompt"]
        if body["model"] == "info" and "river" in prompt:
            return 500, {"error": "down"}, 0
        answer = " no" if body["model"] == "truth" and "What is red" in prompt else " yes"
        return 200, completion(answer), 0

    with Server(reply) as server:
        truth = HTTPJudge(server.url, "truth", api_key_env=key, retries=1, backoff=0.01)
        info = HTTPJudge(server.url, "info", api_key_env=key, retries=1, backoff=0.01)
        with pytest.warns(UserWarning, match="info judge .*1 of 3 calls failed"):
            result = evaluate(model, tok, "truthfulqa", data_dir=questions, mc=False, truth_judge=truth, info_judge=info, max_new_tokens=8)
    records = result.records
    truth_prompts = [r["body"]["prompt"] for r in server.requests if r["body"]["model"] == "truth"]
    assert sorted(truth_prompts) == sorted(f"Q: {q}\nA: {a}\nTrue:" for q, a in zip(records["question"], records["answer"]))
    assert all(p.endswith("\nHelpful:") for r in server.requests if r["body"]["model"] == "info" for p in [r["body"]["prompt"]])
    assert list(records["truth"]) == [1, 0, 1] and records["info"].isna().tolist() == [False, False, True]
    assert result.value("truth") == pytest.approx(2 / 3) and result.value("info") == 1.0
    assert result.value("truth_info") == 0.5 and result.value("info_judge_failures") == 1
    assert "mc1" not in set(result.table["metric"])


def test_truthfulqa_judges_from_names_need_their_configuration(tiny, questions, monkeypatch):
    model, tok = tiny
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EvaluationError, match="OPENAI_API_KEY"):
        evaluate(model, tok, "truthfulqa", data_dir=questions, mc=False, truth_judge="gpt-judge", judge_url="http://127.0.0.1:9/v1")
    with pytest.raises(EvaluationError, match="needs a truth_judge"):
        evaluate(model, tok, "truthfulqa", data_dir=questions, mc=False)
