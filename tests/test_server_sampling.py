"""Stop strings, stop token ids, logprobs and echo: the emulator against vLLM 0.33's behaviour.

The pure parts (where a stop falls, what a stream holds back, the answer distribution) are
tables; the rest goes through a live server with the official openai client, as
``tests/test_server.py`` starts one.
"""

from __future__ import annotations

import json
import math

import httpx
import openai
import pytest

from lab.server import questions
from lab.server.generation import plan_choice
from lab.server.logprobs import token_logprobs
from lab.server.stops import first_stop_string, stop_and_stream
from lab.server.tokenizer import FILLER_WORDS, Tokenizer, piece
from tests.test_server import MODEL, scrape, serving

FILLER_LOGPROB = -math.log(len(FILLER_WORDS))
VLLM = {("model_name", MODEL), ("engine", "0")}


@pytest.fixture(scope="module")
def emu():
    with serving("--seed", "0") as running:
        yield running


# --- the pure parts -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, new_chars, stop, expected",
    [
        pytest.param("the cat sat", 4, ["cat"], None, id="match-before-the-new-text"),
        pytest.param("the cat sat", 4, ["sat"], ("sat", 8), id="match-in-the-new-text"),
        pytest.param("the cat sat", 3, ["t s"], ("t s", 6), id="match-that-ends-in-the-new-text"),
        pytest.param("the cat sat", 2, ["t s"], None, id="match-that-ends-before-the-new-text"),
        pytest.param("ab cd", 5, ["cd", "ab"], ("ab", 0), id="earliest-end-wins-over-list-order"),
        pytest.param("abcd", 4, ["bcd", "cd"], ("bcd", 1), id="same-end-first-in-list"),
        pytest.param("abc", 0, ["c"], None, id="no-new-text"),
    ],
)
def test_first_stop_string_as_vllm_check_stop_strings(text, new_chars, stop, expected):
    assert first_stop_string(text, new_chars, stop) == expected


@pytest.mark.parametrize(
    "pieces, ids, stop, stop_ids, include, expected",
    [
        pytest.param([" one", " two", " three"], None, [], [], False,
                     (3, (" one", " two", " three"), None), id="no-stop"),
        pytest.param([" one", " two", " three"], None, ["two"], [], False,
                     (2, (" o", "ne "), "two"), id="stop-string-held-back-then-cut"),
        pytest.param([" one", " two", " three"], None, ["two"], [], True,
                     (2, (" one", " two"), "two"), id="stop-string-included-nothing-held"),
        pytest.param([" one", " two", " three"], None, ["e t"], [], False,
                     (2, (" o", "n"), "e t"), id="stop-string-across-two-tokens"),
        pytest.param([" one", " two", " three"], [5, 6, 7], [], [6], False,
                     (2, (" one", ""), 6), id="stop-token-left-out"),
        pytest.param([" one", " two", " three"], [5, 6, 7], [], [6], True,
                     (2, (" one", " two"), 6), id="stop-token-included"),
        pytest.param([" one", " two", " three"], [5, 6, 7], ["wo"], [6], True,
                     (2, (" one", " two"), "wo"), id="string-in-an-included-stop-token-wins"),
        pytest.param([" one", " two", " three"], None, ["xyzzy"], [], False,
                     (3, ("", " one", " two three"), None), id="no-match-flushed-at-the-end"),
    ],
)
def test_stop_and_stream(pieces, ids, stop, stop_ids, include, expected):
    """Tokens kept, the text each streams (vLLM holds back len(longest stop) - 1 characters
    until the end), and the stop reason."""
    assert stop_and_stream(pieces, ids, stop, stop_ids, include) == expected


@pytest.mark.parametrize(
    "stop, ids, stop_ids, min_tokens, expected",
    [
        pytest.param(["two"], None, [], 1, (2, (" o", "ne "), "two"), id="stop-string-on-token-min-plus-one"),
        pytest.param(["two"], None, [], 2, (3, (" o", "ne t", "wo three"), None),
                     id="stop-string-on-token-min-is-not-searched-again"),
        pytest.param(["e t"], None, [], 1, (2, (" o", "n"), "e t"), id="match-may-start-before-the-gate"),
        pytest.param(["ree"], None, [], 2, (3, (" o", "ne t", "wo th"), "ree"), id="later-stop-still-ends-it"),
        pytest.param([], [5, 6, 7], [6], 3, (2, (" one", ""), 6), id="a-stop-token-still-ends-it-as-check-stop"),
    ],
)
def test_min_tokens_gates_stop_strings_as_vllms_detokenizer(stop, ids, stop_ids, min_tokens, expected):
    """vLLM's detokenizer searches for stop strings only once more than ``min_tokens`` tokens
    have come, in the text after the first ``min_tokens`` (a match may start before it). Stop
    tokens are held off by the sampler's mask, not here (the planner never draws one there)."""
    assert stop_and_stream([" one", " two", " three"], ids, stop, stop_ids, False, min_tokens) == expected


QUESTION = "What is the capital of France?"
DOT = Tokenizer().token_id(".")


@pytest.mark.parametrize(
    "max_tokens, kwargs, first_words, n_tokens, finish, stop_reason",
    [
        pytest.param(8, {}, ("Paris", "."), 2, "stop", None, id="no-min-tokens"),
        pytest.param(8, {"min_tokens": 2}, ("Paris", "."), 2, "stop", None, id="natural-end-at-min-tokens"),
        pytest.param(8, {"min_tokens": 5}, ("Paris", "."), 5, "stop", None, id="natural-end-held-to-min-tokens"),
        pytest.param(5, {"min_tokens": 5}, ("Paris", "."), 5, "length", None, id="min-tokens-is-max-tokens"),
        pytest.param(8, {"min_tokens": 3, "ignore_eos": True}, ("Paris", "."), 8, "length", None,
                     id="ignore-eos-runs-to-max-tokens"),
        pytest.param(8, {"min_tokens": 1, "stop": ["."]}, ("Paris",), 2, "stop", ".", id="stop-string-after-min"),
        pytest.param(8, {"min_tokens": 2, "stop": ["."]}, ("Paris", "."), 2, "stop", None,
                     id="stop-string-on-token-min-does-not-count"),
        pytest.param(8, {"min_tokens": 1, "stop_token_ids": [DOT]}, ("Paris",), 2, "stop", DOT,
                     id="stop-token-after-min"),
    ],
)
def test_min_tokens_in_a_planned_answer(max_tokens, kwargs, first_words, n_tokens, finish, stop_reason):
    plan = plan_choice(tokenizer=Tokenizer(), prompt=QUESTION, index=0, max_tokens=max_tokens, seed=0, **kwargs)
    assert plan.words[:len(first_words)] == first_words
    assert (plan.max_tokens, len(plan.words), plan.finish_reason, plan.stop_reason) == (n_tokens, n_tokens,
                                                                                       finish, stop_reason)
    assert all(w in FILLER_WORDS for w in plan.words[2:])  # what follows the answer is filler


def test_min_tokens_redraws_a_stop_token_the_sampler_would_mask():
    """vLLM sets a stop token's logit to -inf while fewer than min_tokens tokens have come: the
    model says another word there. A built-in answer pushed off a word goes on as filler."""
    plan = plan_choice(tokenizer=Tokenizer(), prompt=QUESTION, index=0, max_tokens=8, seed=0, min_tokens=2,
                       stop_token_ids=[DOT])
    assert (plan.words[0], plan.max_tokens, plan.finish_reason, plan.stop_reason) == ("Paris", 2, "stop", None)
    assert plan.words[1] in FILLER_WORDS and plan.words[1] != "."
    assert plan.answer_words == 1  # "Paris" is still the answer's; the word after it is a filler draw
    assert [e.logprob for e in token_logprobs(plan, 0)] == [0.0, pytest.approx(FILLER_LOGPROB)]
    paris = Tokenizer().token_id("Paris")
    pushed = plan_choice(tokenizer=Tokenizer(), prompt=QUESTION, index=0, max_tokens=8, seed=0, min_tokens=1,
                         stop_token_ids=[paris])
    assert pushed.answer_words == 0 and "Paris" not in pushed.words and len(pushed.words) == 2
    assert all(w in FILLER_WORDS for w in pushed.words)
    cut = plan_choice(tokenizer=Tokenizer(), prompt=QUESTION, index=0, max_tokens=1, seed=0, min_tokens=1,
                      stop_token_ids=[paris])  # the answer cut by max_tokens, then pushed off its one word
    assert (len(cut.words), cut.max_tokens, cut.answer_words, cut.finish_reason) == (1, 1, 0, "length")
    assert cut.words[0] in FILLER_WORDS and cut.words[0] != "Paris"


def test_min_tokens_holds_off_a_filler_answers_end_and_its_stop_tokens():
    make = lambda **kw: plan_choice(tokenizer=Tokenizer(), prompt="Say something", index=0, max_tokens=4096,
                                    seed=0, **kw)
    natural = make()
    n = len(natural.words)
    assert natural.finish_reason == "stop" and 4 <= n < 4000
    longer = make(min_tokens=n + 7)
    assert (len(longer.words), longer.finish_reason) == (n + 7, "stop")
    assert longer.words[:n] == natural.words  # it goes on with the filler the plan draws next
    # A stop token among the first min_tokens is drawn again; the first one after them ends it.
    word = natural.words[3]
    ids = [Tokenizer().token_id(word)]
    m = natural.words.index(word) + 1
    later = next((k for k in range(m, n) if natural.words[k] == word), None)
    plan = make(stop_token_ids=ids, min_tokens=m)
    assert word not in plan.words[:m]
    assert [w for k, w in enumerate(plan.words[:m]) if natural.words[k] != word] == \
        [w for w in natural.words[:m] if w != word]  # only the masked words changed
    assert later is not None  # seed 0: the word comes again, and ends the answer there
    assert (len(plan.words), plan.finish_reason, plan.stop_reason) == (later + 1, "stop", ids[0])


def test_answer_distribution_is_the_draw_plan_choice_makes():
    q = questions.find_question("What is the capital of France?")
    assert questions.answer_distribution(q, 0.0) == [("Paris.", 1.0)]
    dist = dict(questions.answer_distribution(q, 0.5))
    assert dist["Paris."] == 0.5 and len(dist) == 16 and math.isclose(sum(dist.values()), 1.0)
    # 500,000 picks over 15 wrong capitals: the first 5 get one pick more.
    assert sorted(set(dist.values()) - {0.5}) == [0.033333, 0.033334]
    # Every answer plan_choice gives under the fault is one of them (draws over 200 seeds).
    texts = {Tokenizer().split(t)[0] for t in dist}
    for seed in range(200):
        plan = plan_choice(tokenizer=Tokenizer(), prompt=q.text, index=0, max_tokens=8, seed=seed, wrong_share=0.5)
        assert plan.words[0] in texts


def test_logprobs_of_a_planned_answer():
    plan = plan_choice(tokenizer=Tokenizer(), prompt="Say something", index=0, max_tokens=4, seed=0,
                       ignore_eos=True, previous="something")
    entries = token_logprobs(plan, 3)
    assert [e.token for e in entries] == list(plan.pieces)
    for k, (word, e) in enumerate(zip(plan.words, entries)):
        before = plan.words[k - 1] if k else "something"
        # The chosen token first, then the top three (ties: FILLER_WORDS' order), none twice.
        expected = [word] + [w for w in FILLER_WORDS[:3] if w != word]
        assert e.candidates == tuple((piece(w, before), FILLER_LOGPROB) for w in expected)
        assert e.logprob == FILLER_LOGPROB


# --- stop strings and stop token ids through the server --------------------------------------------

ASK = [{"role": "user", "content": "Tell me about caches"}]


def _answer(emu, chat: bool, **extra) -> tuple[str, str, object, int]:
    """(text, finish reason, stop reason, completion tokens) of one request."""
    if chat:
        r = emu.client.chat.completions.create(model=MODEL, messages=ASK, max_completion_tokens=40, **extra)
        text = r.choices[0].message.content
    else:
        r = emu.client.completions.create(model=MODEL, prompt="Tell me about caches", max_tokens=40, **extra)
        text = r.choices[0].text
    return text, r.choices[0].finish_reason, r.choices[0].stop_reason, r.usage.completion_tokens


def _streamed(emu, chat: bool, **extra) -> tuple[list[str], str, object, int]:
    """(each token chunk's text, finish reason, stop reason, completion tokens) of one stream."""
    kw = dict(stream=True, stream_options={"include_usage": True}, **extra)
    if chat:
        chunks = list(emu.client.chat.completions.create(model=MODEL, messages=ASK, max_completion_tokens=40, **kw))
        tokens = [c for c in chunks[1:] if c.choices]  # after the role chunk
        texts = [c.choices[0].delta.content for c in tokens]
    else:
        chunks = list(emu.client.completions.create(model=MODEL, prompt="Tell me about caches", max_tokens=40, **kw))
        tokens = [c for c in chunks if c.choices]
        texts = [c.choices[0].text for c in tokens]
    last = tokens[-1].choices[0]
    assert all(c.choices[0].finish_reason is None for c in tokens[:-1])
    return texts, last.finish_reason, last.stop_reason, chunks[-1].usage.completion_tokens


@pytest.mark.parametrize("include", [False, True], ids=["stop-left-out", "stop-included"])
@pytest.mark.parametrize("chat", [False, True], ids=["completion", "chat"])
def test_stop_string_ends_the_answer_streamed_or_not(emu, chat, include):
    """The answer ends where its text first contains the stop string; the engine generates only
    the tokens up to the one that completes it, so usage, the stream's chunks and /metrics agree."""
    full, finish, _, tokens = _answer(emu, chat, extra_body={"ignore_eos": True})
    assert finish == "length" and tokens == 40
    words = Tokenizer().split(full)
    stop = " " + next(w for w in words[12:] if w.isalpha())  # with its leading space; it may match earlier
    at = full.find(stop)
    end = at + len(stop)
    expected_text = full[:end] if include else full[:at]
    expected_tokens = len(Tokenizer().split(full[:end]))  # the words up to the one that completes it
    before = scrape(emu)
    extra = {"stop": [stop, "no such text"], "extra_body": {"ignore_eos": True, "include_stop_str_in_output": include}}
    assert _answer(emu, chat, **extra) == (expected_text, "stop", stop, expected_tokens)
    assert emu.engine.finished[-1].num_output_tokens == expected_tokens  # the engine saw the short length
    texts, finish, stop_reason, usage_tokens = _streamed(emu, chat, **extra)
    assert ("".join(texts), finish, stop_reason, usage_tokens) == (expected_text, "stop", stop, expected_tokens)
    assert len(texts) == expected_tokens  # one chunk a token, some of them "" while a stop might be coming
    emu.wait_idle()
    after = scrape(emu)
    stopped = ("vllm:request_success_total", frozenset(VLLM | {("finished_reason", "stop")}))
    assert after[stopped] - before[stopped] == 2
    generated = ("vllm:generation_tokens_total", frozenset(VLLM))
    assert after[generated] - before[generated] == 2 * expected_tokens


def test_stop_as_one_string_and_a_question_that_ends_first(emu):
    r = emu.client.completions.create(model=MODEL, prompt="What is the capital of France?", max_tokens=8,
                                      stop=".")
    assert (r.choices[0].text, r.choices[0].finish_reason, r.choices[0].stop_reason) == (" Paris", "stop", ".")
    assert r.usage.completion_tokens == 2
    r = emu.client.completions.create(model=MODEL, prompt="What is the capital of France?", max_tokens=8,
                                      stop=["Rome"])
    assert (r.choices[0].text, r.choices[0].finish_reason, r.choices[0].stop_reason) == (" Paris.", "stop", None)


@pytest.mark.parametrize("include", [False, True], ids=["token-left-out", "token-included"])
def test_stop_token_ids_end_the_answer_on_the_emulators_word_ids(emu, include):
    """A stop token is a word's id in the emulator's tokenizer (what /tokenize gives without
    --tokenizer); its text is left out unless include_stop_str_in_output, stop_reason is the id."""
    full = emu.client.completions.create(model=MODEL, prompt="Tell me about caches", max_tokens=40,
                                         extra_body={"ignore_eos": True}).choices[0].text
    words = Tokenizer().split(full)
    word = words[9]
    tokenized = httpx.post(f"{emu.base}/tokenize", json={"prompt": word, "add_special_tokens": False}).json()
    token_id = tokenized["tokens"][0]
    k = words.index(word)  # its first time
    pieces = [piece(w, words[i - 1] if i else "caches") for i, w in enumerate(words)]
    expected = "".join(pieces[:k + 1] if include else pieces[:k])
    r = emu.client.completions.create(model=MODEL, prompt="Tell me about caches", max_tokens=40,
                                      extra_body={"ignore_eos": True, "stop_token_ids": [token_id],
                                                  "include_stop_str_in_output": include})
    assert (r.choices[0].text, r.choices[0].finish_reason, r.choices[0].stop_reason) == (expected, "stop", token_id)
    assert r.usage.completion_tokens == k + 1


@pytest.mark.parametrize("chat", [False, True], ids=["completion", "chat"])
def test_min_tokens_holds_the_answer_open_through_the_server(emu, chat):
    """A built-in answer (2 tokens) with min_tokens 6 goes on with filler to 6 tokens; the
    engine generates 6, and the stream carries the same text. A stop string on token
    min_tokens does not count; on the token after, it does."""
    def ask(**extra):
        if chat:
            return emu.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                                      max_completion_tokens=16, **extra)
        return emu.client.completions.create(model=MODEL, prompt=QUESTION, max_tokens=16, **extra)

    def text(r):
        return r.choices[0].message.content if chat else r.choices[0].text

    answer = "Paris." if chat else " Paris."
    r = ask(extra_body={"min_tokens": 6})
    assert text(r).startswith(answer + " ") and len(Tokenizer().split(text(r))) == 6
    assert (r.choices[0].finish_reason, r.choices[0].stop_reason, r.usage.completion_tokens) == ("stop", None, 6)
    assert emu.engine.finished[-1].num_output_tokens == 6
    chunks = [c for c in ask(extra_body={"min_tokens": 6}, stream=True) if c.choices]
    pieces = [c.choices[0].delta.content if chat else c.choices[0].text for c in chunks]
    assert "".join(p or "" for p in pieces) == text(r) and chunks[-1].choices[0].finish_reason == "stop"
    held = ask(stop=["."], extra_body={"min_tokens": 2})
    assert (text(held), held.choices[0].stop_reason, held.usage.completion_tokens) == (answer, None, 2)
    cut = ask(stop=["."], extra_body={"min_tokens": 1})
    assert (text(cut), cut.choices[0].stop_reason, cut.usage.completion_tokens) == (answer[:-1], ".", 2)


def test_min_tokens_with_stop_token_ids_through_the_server(emu):
    """The stop token cannot come among the first min_tokens tokens (vLLM masks it); the answer
    ends on its first time after them."""
    full = emu.client.completions.create(model=MODEL, prompt="Tell me about caches", max_tokens=40,
                                         extra_body={"ignore_eos": True}).choices[0].text
    words = Tokenizer().split(full)
    word = words[9]
    token_id = Tokenizer().token_id(word)
    m = words.index(word) + 1
    later = next((k for k in range(m, 40) if words[k] == word), None)
    r = emu.client.completions.create(model=MODEL, prompt="Tell me about caches", max_tokens=40,
                                      extra_body={"ignore_eos": True, "stop_token_ids": [token_id], "min_tokens": m})
    got = Tokenizer().split(r.choices[0].text)
    assert word not in got[:m]
    assert later is not None  # --seed 0: the word comes again, and ends the answer there
    assert (r.choices[0].finish_reason, r.choices[0].stop_reason, r.usage.completion_tokens) == \
        ("stop", token_id, later + 1)
    assert got[m:] == words[m:later]  # after the masked part, the planned words, the stop token left out


# --- logprobs ---------------------------------------------------------------------------------------

def test_completion_logprobs_shape_values_and_stream(emu):
    ask = dict(model=MODEL, prompt="Tell me about caches", max_tokens=6, logprobs=2, extra_body={"ignore_eos": True})
    r = emu.client.completions.create(**ask)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.tokens) == 6
    assert lp.token_logprobs == [pytest.approx(FILLER_LOGPROB)] * 6
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    for token, top in zip(lp.tokens, lp.top_logprobs):
        assert list(top)[0] == token and len(top) in (2, 3)  # the chosen token, then the top 2
        assert list(top.values()) == [pytest.approx(FILLER_LOGPROB)] * len(top)  # every filler word ties
    streamed = [c.choices[0].logprobs for c in emu.client.completions.create(stream=True, **ask) if c.choices]
    assert [s.tokens[0] for s in streamed] == lp.tokens
    assert [s.text_offset[0] for s in streamed] == lp.text_offset
    assert [s.top_logprobs[0] for s in streamed] == lp.top_logprobs
    question = emu.client.completions.create(model=MODEL, prompt="What is 7 times 8?", max_tokens=8, logprobs=3)
    qlp = question.choices[0].logprobs
    assert (qlp.tokens, qlp.token_logprobs, qlp.top_logprobs) == ([" 56", "."], [0.0, 0.0], [{" 56": 0.0}, {".": 0.0}])


def test_chat_logprobs_shape_and_stream(emu):
    ask = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me about caches"}], max_completion_tokens=5,
               logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    r = emu.client.chat.completions.create(**ask)
    content = r.choices[0].logprobs.content
    assert "".join(e.token for e in content) == r.choices[0].message.content and len(content) == 5
    for e in content:
        assert e.logprob == pytest.approx(FILLER_LOGPROB) and e.bytes == list(e.token.encode())
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token  # vLLM lists the chosen one first
        assert all(t.logprob == pytest.approx(FILLER_LOGPROB) and t.bytes == list(t.token.encode())
                   for t in e.top_logprobs)
    chunks = [c for c in emu.client.chat.completions.create(stream=True, **ask) if c.choices and c.choices[0].logprobs]
    assert [c.choices[0].logprobs.content[0].model_dump() for c in chunks] == [e.model_dump() for e in content]
    plain = emu.client.chat.completions.create(model=MODEL, logprobs=True,
                                               messages=[{"role": "user", "content": "What is 6 times 7?"}])
    assert [(e.token, e.logprob, e.top_logprobs) for e in plain.choices[0].logprobs.content] == [("42", 0.0, []),
                                                                                               (".", 0.0, [])]


def test_logprobs_under_the_quality_fault_are_the_draws():
    """Under quality=-0.5 the first word of an answer is the right one with probability 0.5 and
    each of the 15 other capitals with about 0.033: the candidates' probabilities add up to 1."""
    with serving("--fault", "quality=-0.5") as emu:
        for seed in range(4):
            r = emu.client.completions.create(model=MODEL, prompt="What is the capital of France?", max_tokens=4,
                                              logprobs=20, seed=seed)
            lp = r.choices[0].logprobs
            first = lp.top_logprobs[0]
            assert len(first) == 16 and first[" Paris"] == pytest.approx(math.log(0.5))
            assert sum(math.exp(v) for v in first.values()) == pytest.approx(1.0)
            chosen = lp.tokens[0]
            assert lp.token_logprobs[0] == first[chosen]
            assert lp.token_logprobs[1] == 0.0  # "." always follows


# --- echo -------------------------------------------------------------------------------------------

def test_echo_puts_the_prompt_before_the_answer(emu):
    prompt = "Tell me about caches"
    plain = emu.client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, extra_body={"ignore_eos": True})
    r = emu.client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, echo=True,
                                      extra_body={"ignore_eos": True})
    assert r.choices[0].text == prompt + plain.choices[0].text and r.usage == plain.usage
    chunks = [c for c in emu.client.completions.create(model=MODEL, prompt=prompt, max_tokens=5, echo=True, stream=True,
                                                       extra_body={"ignore_eos": True}) if c.choices]
    assert len(chunks) == 5 and chunks[0].choices[0].text.startswith(prompt)
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text


def test_echo_with_max_tokens_zero_shows_the_prompt_only(emu):
    """vLLM still runs one token, which usage counts and the text leaves out."""
    prompt = "Tell me about caches"
    r = emu.client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True)
    assert (r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens) == (prompt, "length", 1)
    chunks = [c for c in emu.client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True,
                                                       stream=True) if c.choices]
    assert [(c.choices[0].text, c.choices[0].finish_reason) for c in chunks] == [(prompt, "length")]


# --- errors -----------------------------------------------------------------------------------------

CHAT = [{"role": "user", "content": "hi"}]
NOT_SIMULATED = "The ServeLab emulator does not simulate prompt logprobs"


@pytest.mark.parametrize(
    "path, body, err_type, param, message",
    [
        pytest.param("/v1/completions", {"prompt": "hi", "logprobs": 21}, "BadRequestError", "logprobs",
                     "Requested sample logprobs of 21, which is greater than max allowed: 20 "
                     "(parameter=logprobs, value=21)", id="completion-logprobs-past-max"),
        pytest.param("/v1/completions", {"prompt": "hi", "logprobs": -1}, "BadRequestError", "logprobs",
                     "Requested sample logprobs of 128256, which is greater than max allowed: 20 "
                     "(parameter=logprobs, value=128256)", id="completion-logprobs-whole-vocabulary"),
        pytest.param("/v1/completions", {"prompt": "hi", "logprobs": -2}, "BadRequestError", "logprobs",
                     "`logprobs` must be a positive value or -1. (parameter=logprobs, value=-2)",
                     id="completion-logprobs-negative"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": 21},
                     "BadRequestError", "logprobs", "Requested sample logprobs of 21, which is greater than max "
                     "allowed: 20 (parameter=logprobs, value=21)", id="chat-top-logprobs-past-max"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2}, "BadRequestError",
                     "top_logprobs", "when using `top_logprobs`, `logprobs` must be set to true. "
                     "(parameter=top_logprobs)", id="chat-top-logprobs-without-logprobs"),
        pytest.param("/v1/completions", {"prompt": "hi", "prompt_logprobs": 1}, "BadRequestError",
                     "prompt_logprobs", NOT_SIMULATED, id="prompt-logprobs-refused"),
        pytest.param("/v1/completions", {"prompt": "hi", "prompt_logprobs": 21}, "BadRequestError",
                     "prompt_logprobs", "Requested prompt logprobs of 21, which is greater than max allowed: 20 "
                     "(parameter=prompt_logprobs, value=21)", id="prompt-logprobs-past-max-vllms-error-first"),
        pytest.param("/v1/completions", {"prompt": "hi", "prompt_logprobs": 1, "stream": True}, "BadRequestError",
                     "prompt_logprobs", "`prompt_logprobs` are not available when `stream=True`. "
                     "(parameter=prompt_logprobs)", id="prompt-logprobs-streamed-vllms-error-first"),
        pytest.param("/v1/completions", {"prompt": "hi", "echo": True, "logprobs": 1}, "BadRequestError",
                     "prompt_logprobs", NOT_SIMULATED, id="echo-with-logprobs-refused"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "echo": True}, "BadRequestError",
                     "prompt_logprobs", NOT_SIMULATED, id="chat-echo-refused"),
        pytest.param("/v1/completions", {"prompt": "hi", "stop": ["a", ""]}, "BadRequestError", None,
                     "stop cannot contain an empty string.", id="empty-stop-string"),
        pytest.param("/v1/completions", {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "Bad Request",
                     "body.stop", "2 validation errors:\n  {'type': 'string_type', 'loc': 'body.stop'",
                     id="five-stop-strings"),
        pytest.param("/v1/completions", {"prompt": "hi", "stop_token_ids": [5, 200000]}, "BadRequestError",
                     "stop_token_ids", "token_id(s) [200000] in stop_token_ids contain out-of-vocab token ids. "
                     "Vocabulary size: 128256 (parameter=stop_token_ids, value=[200000])",
                     id="stop-token-out-of-vocab"),
        # min_tokens: SamplingParams._verify_args, against the max_tokens that prompt gets.
        pytest.param("/v1/completions", {"prompt": "hi", "min_tokens": -1}, "BadRequestError", None,
                     "min_tokens must be greater than or equal to 0, got -1.", id="min-tokens-negative"),
        pytest.param("/v1/completions", {"prompt": "hi", "min_tokens": 17}, "BadRequestError", None,
                     "min_tokens must be less than or equal to max_tokens=16, got 17.",
                     id="min-tokens-past-the-default-max-tokens"),
        pytest.param("/v1/completions", {"prompt": "hi", "echo": True, "max_tokens": 0, "min_tokens": 2},
                     "BadRequestError", None, "min_tokens must be less than or equal to max_tokens=1, got 2.",
                     id="min-tokens-past-echos-one-token"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "max_completion_tokens": 4, "min_tokens": 5},
                     "BadRequestError", None, "min_tokens must be less than or equal to max_tokens=4, got 5.",
                     id="chat-min-tokens-past-max-completion-tokens"),
        pytest.param("/v1/completions", {"prompt": "hi", "max_tokens": 0, "min_tokens": -1}, "BadRequestError",
                     "max_tokens", "max_tokens must be at least 1, got 0.", id="max-tokens-checked-before-min-tokens"),
        pytest.param("/v1/completions", {"prompt": "hi", "min_tokens": None}, "Bad Request", "body.min_tokens",
                     "1 validation error:\n  {'type': 'int_type', 'loc': 'body.min_tokens'", id="min-tokens-null"),
        # n with greedy sampling: SamplingParams._verify_greedy_sampling, after _verify_args.
        pytest.param("/v1/completions", {"prompt": "hi", "n": 2, "temperature": 0}, "BadRequestError", None,
                     "n must be 1 when using greedy sampling, got 2.", id="n-with-greedy"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "n": 3, "temperature": 0.0}, "BadRequestError",
                     None, "n must be 1 when using greedy sampling, got 3.", id="chat-n-with-greedy"),
        pytest.param("/v1/completions", {"prompt": "hi", "n": 2, "temperature": 0, "min_tokens": -1},
                     "BadRequestError", None, "min_tokens must be greater than or equal to 0, got -1.",
                     id="verify-args-before-greedy"),
        pytest.param("/v1/completions", {"prompt": "hi", "n": 16385}, "BadRequestError", None,
                     "n must be at most 16384, got 16385. To increase this limit, set the VLLM_MAX_N_SEQUENCES "
                     "environment variable.", id="n-past-vllm-max-n-sequences"),
        pytest.param("/v1/completions", {"prompt": "hi", "max_tokens": 200_000, "n": 0}, "BadRequestError",
                     "max_tokens", "max_tokens=200000 cannot be greater than max_model_len=131072.",
                     id="prompt-lengths-before-sampling-params"),
        # Logprobs that are not numbers: vLLM's check_logprobs, on the raw body, before pydantic.
        pytest.param("/v1/completions", {"prompt": "hi", "logprobs": "2"}, "BadRequestError", "logprobs",
                     "`logprobs` must be an integer. (parameter=logprobs, value=2)", id="logprobs-a-string"),
        pytest.param("/v1/completions", {"prompt": "hi", "logprobs": [1]}, "BadRequestError", "logprobs",
                     "`logprobs` must be an integer. (parameter=logprobs, value=[1])", id="logprobs-a-list"),
        pytest.param("/v1/completions", {"prompt": "hi", "logprobs": 1.5}, "Bad Request", "body.logprobs",
                     "1 validation error:\n  {'type': 'int_from_float', 'loc': 'body.logprobs'",
                     id="logprobs-a-fraction-is-pydantics"),
        pytest.param("/v1/completions", {"prompt": "hi", "logprobs": -1.5}, "BadRequestError", "logprobs",
                     "`logprobs` must be a positive value or -1. (parameter=logprobs, value=-1.5)",
                     id="logprobs-a-negative-fraction-is-vllms"),
        pytest.param("/v1/completions", {"prompt": "hi", "prompt_logprobs": "x", "logprobs": -5}, "BadRequestError",
                     "prompt_logprobs", "`prompt_logprobs` must be an integer. (parameter=prompt_logprobs, value=x)",
                     id="prompt-logprobs-a-string-first"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": "2"},
                     "BadRequestError", "top_logprobs", "`top_logprobs` must be an integer. "
                     "(parameter=top_logprobs, value=2)", id="chat-top-logprobs-a-string"),
        # The order of the raw checks: a completion's prompt, stream_options, then logprobs; a
        # chat's logprobs, then stream_options; all before pydantic reads a field.
        pytest.param("/v1/completions", {"logprobs": "x", "n": "x"}, "BadRequestError", "prompt",
                     "Either prompt or prompt_embeds must be provided and non-empty.", id="prompt-before-logprobs"),
        pytest.param("/v1/completions", {"prompt": "hi", "logprobs": "x", "stream_options": {"include_usage": True}},
                     "BadRequestError", "stream_options", "Stream options can only be defined when `stream=True`.",
                     id="stream-options-before-logprobs"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2,
                                              "stream_options": {"include_usage": True}},
                     "BadRequestError", "top_logprobs", "when using `top_logprobs`, `logprobs` must be set to true.",
                     id="chat-logprobs-before-stream-options"),
        pytest.param("/v1/chat/completions", {"top_logprobs": "x"}, "BadRequestError", "top_logprobs",
                     "`top_logprobs` must be an integer.", id="chat-top-logprobs-before-missing-messages"),
    ],
)
def test_sampling_errors_as_vllm_answers_them(emu, path, body, err_type, param, message):
    r = httpx.post(f"{emu.base}{path}", json={"model": MODEL, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (err_type, param, 400)
    assert error["message"].startswith(message), error["message"]


# The sampling parameters that change no word here: refused as vLLM 0.33 refuses them, and in its
# order. Each row's body was also answered by vLLM's own request models and SamplingParams.
BAD_WORDS = [f"w{i}" for i in range(129)]  # one token each with the built-in tokenizer
PROMPTS_PAST_LIMIT = ("prompt list length 1025 exceeds the maximum allowed count of 1024. To increase this limit, set "
                      "the VLLM_MAX_COMPLETION_PROMPTS environment variable. (parameter=prompt)")
EXTRA_ARGS = "extra_args integers must be between -2**63 and 2**64 - 1. (parameter=extra_args)"
TOO_MANY_BAD_WORDS = ("Too many bad words after tokenization: 129. The max number is 128. "
                      "(parameter=bad_words, value=['w0', 'w1', ")
UNTOKENIZED_BAD_WORD = "bad_words entries must tokenize to at least one token. (parameter=bad_words, value=[' '])"


@pytest.mark.parametrize(
    "path, body, err_type, param, message",
    [
        # SamplingParams._verify_args: no `param`, the value as Python prints the float.
        pytest.param("/v1/completions", {"presence_penalty": 2.5}, "BadRequestError", None,
                     "presence_penalty must be in [-2, 2], got 2.5.", id="presence-penalty-past-2"),
        pytest.param("/v1/completions", {"presence_penalty": float("nan")}, "BadRequestError", None,
                     "presence_penalty must be in [-2, 2], got nan.", id="presence-penalty-nan"),
        pytest.param("/v1/completions", {"frequency_penalty": -3}, "BadRequestError", None,
                     "frequency_penalty must be in [-2, 2], got -3.0.", id="frequency-penalty-below-minus-2"),
        pytest.param("/v1/completions", {"repetition_penalty": 0}, "BadRequestError", None,
                     "repetition_penalty must be greater than zero, got 0.0.", id="repetition-penalty-zero"),
        pytest.param("/v1/completions", {"repetition_penalty": float("inf")}, "BadRequestError", None,
                     "repetition_penalty must be a finite number, got inf.", id="repetition-penalty-infinite"),
        pytest.param("/v1/completions", {"top_k": -2}, "BadRequestError", None,
                     "top_k must be 0 (disable), or at least 1, got -2.", id="top-k-below-minus-1"),
        pytest.param("/v1/completions", {"min_p": 1.5}, "BadRequestError", None,
                     "min_p must be in [0, 1], got 1.5.", id="min-p-past-1"),
        pytest.param("/v1/completions", {"bad_words": ["a", "a", ""]}, "BadRequestError", None,
                     "bad_words cannot contain an empty string. Got bad_words=['a', '']",
                     id="bad-words-empty-string-listed-once-each"),
        pytest.param("/v1/completions", {"vllm_xargs": {"a": [1, 2**64]}}, "BadRequestError", "extra_args",
                     EXTRA_ARGS, id="vllm-xargs-past-uint64"),
        pytest.param("/v1/completions", {"kv_transfer_params": {"x": [{"y": -2**63 - 1}]}}, "BadRequestError",
                     "extra_args", EXTRA_ARGS, id="kv-transfer-params-below-int64"),
        # the engine's input processor, update_from_tokenizer: after the SamplingParams checks
        pytest.param("/v1/completions", {"bad_words": [" "]}, "BadRequestError", "bad_words", UNTOKENIZED_BAD_WORD,
                     id="bad-word-of-spaces-tokenizes-to-nothing"),
        pytest.param("/v1/completions", {"bad_words": BAD_WORDS}, "BadRequestError", "bad_words", TOO_MANY_BAD_WORDS,
                     id="bad-words-past-128"),
        # pydantic's field types, as vLLM declares them
        pytest.param("/v1/completions", {"seed": 2**63}, "Bad Request", "body.seed",
                     "1 validation error:\n  {'type': 'less_than_equal', 'loc': 'body.seed', 'msg': 'Input should be "
                     "less than or equal to 9223372036854775807'", id="seed-past-int64"),
        pytest.param("/v1/completions", {"stream_interval": 0}, "Bad Request", "body.stream_interval",
                     "1 validation error:\n  {'type': 'greater_than_equal', 'loc': 'body.stream_interval', 'msg': "
                     "'Input should be greater than or equal to 1'", id="stream-interval-0"),
        pytest.param("/v1/completions", {"top_k": 1.5}, "Bad Request", "body.top_k",
                     "1 validation error:\n  {'type': 'int_from_float', 'loc': 'body.top_k'", id="top-k-a-fraction"),
        pytest.param("/v1/completions", {"bad_words": "cat"}, "Bad Request", "body.bad_words",
                     "1 validation error:\n  {'type': 'list_type', 'loc': 'body.bad_words'", id="bad-words-a-string"),
        # the raw body: more than VLLM_MAX_COMPLETION_PROMPTS prompts, the first of vLLM's checks
        pytest.param("/v1/completions", {"prompt": ["hi"] * 1025}, "BadRequestError", "prompt", PROMPTS_PAST_LIMIT,
                     id="prompts-past-1024"),
        pytest.param("/v1/completions", {"prompt": [[5, 6]] * 1025, "stream_options": {"include_usage": True},
                                         "n": "x"}, "BadRequestError", "prompt", PROMPTS_PAST_LIMIT,
                     id="token-id-prompts-past-1024-before-the-other-checks"),
        # vLLM's order
        pytest.param("/v1/completions", {"n": 0, "vllm_xargs": {"a": 2**64}}, "BadRequestError", None,
                     "n must be at least 1, got 0.", id="n-before-extra-args"),
        pytest.param("/v1/completions", {"vllm_xargs": {"a": 2**64}, "presence_penalty": 3}, "BadRequestError",
                     "extra_args", EXTRA_ARGS, id="extra-args-before-penalties"),
        pytest.param("/v1/completions", {"frequency_penalty": 3, "presence_penalty": 3}, "BadRequestError", None,
                     "presence_penalty must be in [-2, 2], got 3.0.", id="presence-before-frequency"),
        pytest.param("/v1/completions", {"repetition_penalty": 0, "temperature": 3}, "BadRequestError", None,
                     "repetition_penalty must be greater than zero, got 0.0.", id="repetition-before-temperature"),
        pytest.param("/v1/completions", {"top_k": -5, "top_p": 0}, "BadRequestError", "top_p",
                     "top_p must be in (0, 1], got 0.0. (parameter=top_p, value=0.0)", id="top-p-before-top-k"),
        pytest.param("/v1/completions", {"max_tokens": 0, "min_p": 2}, "BadRequestError", None,
                     "min_p must be in [0, 1], got 2.0.", id="min-p-before-max-tokens"),
        pytest.param("/v1/completions", {"stop": [""], "bad_words": [""]}, "BadRequestError", None,
                     "stop cannot contain an empty string.", id="stop-before-bad-words"),
        pytest.param("/v1/completions", {"top_k": -5, "temperature": 0, "n": 2}, "BadRequestError", None,
                     "top_k must be 0 (disable), or at least 1, got -5.", id="top-k-before-greedy"),
        pytest.param("/v1/completions", {"bad_words": [" "], "stop_token_ids": [200000]}, "BadRequestError",
                     "stop_token_ids", "token_id(s) [200000] in stop_token_ids", id="stop-token-ids-before-bad-words"),
        pytest.param("/v1/completions", {"bad_words": [" "], "prompt_logprobs": 1}, "BadRequestError", "bad_words",
                     UNTOKENIZED_BAD_WORD, id="bad-words-before-servelabs-prompt-logprobs-refusal"),
        # chat: the same checks
        pytest.param("/v1/chat/completions", {"messages": CHAT, "presence_penalty": -3}, "BadRequestError", None,
                     "presence_penalty must be in [-2, 2], got -3.0.", id="chat-presence-penalty"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "top_k": -10}, "BadRequestError", None,
                     "top_k must be 0 (disable), or at least 1, got -10.", id="chat-top-k"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "bad_words": BAD_WORDS}, "BadRequestError",
                     "bad_words", TOO_MANY_BAD_WORDS, id="chat-bad-words-past-128"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "seed": -2**63 - 1}, "Bad Request", "body.seed",
                     "1 validation error:\n  {'type': 'greater_than_equal', 'loc': 'body.seed'",
                     id="chat-seed-below-int64"),
        pytest.param("/v1/chat/completions", {"messages": CHAT, "max_completion_tokens": 0, "min_p": -1},
                     "BadRequestError", None, "min_p must be in [0, 1], got -1.0.", id="chat-min-p-before-max-tokens"),
    ],
)
def test_unsimulated_sampling_parameters_refused_as_vllm_refuses_them(emu, path, body, err_type, param, message):
    body = {"model": MODEL, **({"prompt": "hi"} if path == "/v1/completions" else {}), **body}
    # json.dumps, not httpx's json=, which refuses NaN and Infinity (vLLM's json.loads reads them)
    r = httpx.post(f"{emu.base}{path}", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (err_type, param, 400)
    assert error["message"].startswith(message), error["message"]


def test_unsimulated_sampling_parameters_vllm_accepts_change_no_word(emu):
    """Values at vLLM's bounds pass, and the answer is the one without them: the emulator draws
    its filler words the same way whatever the penalties, top_k, min_p or bad words."""
    ask = lambda **extra: httpx.post(f"{emu.base}/v1/completions", json={
        "model": MODEL, "prompt": "Tell me about caches", "max_tokens": 12, "ignore_eos": True, **extra})
    plain = ask()
    assert plain.status_code == 200, plain.text
    for extra in ({"presence_penalty": 2, "frequency_penalty": -2, "repetition_penalty": 1e9},
                  {"repetition_penalty": 0.01, "top_k": -1, "min_p": 0}, {"top_k": 0, "min_p": 1},
                  {"top_k": 50, "bad_words": BAD_WORDS[:128] + ["w0"]},  # 128 once duplicates go
                  {"bad_words": ["the", " of", "two words", "!!"], "stream_interval": 1},
                  {"vllm_xargs": {"a": 2**64 - 1, "b": [-2**63, "s", 1.5]}, "kv_transfer_params": {"k": {"v": 1}}}):
        r = ask(**extra)
        assert r.status_code == 200, (extra, r.text)
        assert r.json()["choices"][0]["text"] == plain.json()["choices"][0]["text"], extra
    for seed in (-2**63, 2**63 - 1):
        assert ask(seed=seed).status_code == 200
    r = httpx.post(f"{emu.base}/v1/completions", json={"model": MODEL, "prompt": ["hi"] * 1024, "max_tokens": 1})
    assert r.status_code == 200 and len(r.json()["choices"]) == 1024


def test_raw_checks_accept_what_vllm_accepts_and_count_what_they_refuse(emu):
    """An empty stream_options, a bool or a whole float as logprobs, and a greedy request with
    n 1 pass as in vLLM; a refusal raised while the body is read still counts in /metrics."""
    for body in ({"prompt": "hi", "stream_options": {}}, {"prompt": "hi", "logprobs": True},
                 {"prompt": "hi", "logprobs": 2.0}, {"prompt": "hi", "temperature": 0, "n": 1},
                 {"prompt": "hi", "temperature": 1e-6, "n": 2}):  # vLLM raises 1e-6 to 0.01: not greedy
        r = httpx.post(f"{emu.base}/v1/completions", json={"model": MODEL, "max_tokens": 2, **body})
        assert r.status_code == 200, (body, r.text)
    refused = ("http_requests_total", frozenset({("service", "ai-api"), ("status", "400")}))
    before = scrape(emu).get(refused, 0.0)
    r = httpx.post(f"{emu.base}/v1/completions", json={"model": MODEL, "prompt": "hi", "logprobs": "x"})
    assert r.status_code == 400 and scrape(emu)[refused] == before + 1


def test_logprobs_limit_through_the_openai_client(emu):
    with pytest.raises(openai.BadRequestError) as caught:
        emu.client.completions.create(model=MODEL, prompt="hi", logprobs=25)
    assert caught.value.status_code == 400
    assert caught.value.body["message"] == ("Requested sample logprobs of 25, which is greater than max allowed: 20 "
                                            "(parameter=logprobs, value=25)")


def test_seed_minus_one_is_no_seed_and_chat_n_null_is_one(emu):
    """vLLM's SamplingParams turns a seed of -1 into no seed (the answer of a request without
    one), and its chat request reads "n": null as 1."""
    ask = lambda **extra: httpx.post(f"{emu.base}/v1/completions", json={
        "model": MODEL, "prompt": "Tell me about caches", "max_tokens": 12, "ignore_eos": True, **extra}).json()
    text = lambda answer: answer["choices"][0]["text"]
    assert text(ask(seed=-1)) == text(ask()) != text(ask(seed=7))
    r = httpx.post(f"{emu.base}/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "n": None})
    assert r.status_code == 200 and len(r.json()["choices"]) == 1, r.text


def test_prompt_token_ids_outside_the_vocabulary_are_refused_as_vllm_refuses_them(emu):
    """A negative id fails the prompt's type with the body (vLLM's Field(ge=0)); an id past the
    model's vocabulary (128,256 for Llama 3.1) is the renderer's validate_token_ids error."""
    post = lambda prompt: httpx.post(f"{emu.base}/v1/completions",
                                     json={"model": MODEL, "prompt": prompt, "max_tokens": 2})
    for prompt in ([-1, 5], [[3, -2]]):
        r = post(prompt)
        assert r.status_code == 400 and r.json()["error"]["type"] == "Bad Request", r.text
        assert "greater_than_equal" in r.json()["error"]["message"], r.text
    r = post([5, 128256])
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["message"], r.json()["error"]["param"]) == ("Token id 128256 is out of vocabulary", None)
    assert post([0, 128255]).status_code == 200
