"""The graded exercises: the reference passes, honest float32 answers pass, typical mistakes fail."""

from __future__ import annotations

import datetime
import io
import math
import re
from pathlib import Path

import pytest
import torch

from autograde.course import read_source_notebook
from autograde.exercises import EXERCISES, check_against_reference, exercises_of, hidden_cases, visible_cases
from autograde.lessons import LESSONS
from course_kit.checks import FUSED, CheckFailed, check_cases, compare

PROJECT = Path(__file__).resolve().parents[1]
SEEDS = range(10)


# Plain float32 answers, written as a student would: they must never be failed by a tolerance.
def plain_softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def plain_masked_softmax(scores, mask=None, dim=-1):
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    row_max = scores.amax(dim=dim, keepdim=True)
    e = torch.exp(scores - torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max))
    total = e.sum(dim=dim, keepdim=True)
    return torch.where(total > 0, e / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(e))


def plain_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    mask = torch.ones(scores.shape[-2:], dtype=torch.bool)
    if is_causal:
        mask = mask.tril()
    elif attn_mask is not None and attn_mask.dtype == torch.bool:
        mask = attn_mask
    elif attn_mask is not None:
        scores = scores + attn_mask
    mask = mask & ~torch.isneginf(scores)
    return plain_masked_softmax(scores, mask) @ value


def plain_nadaraya_watson(queries, keys, values, bandwidth=1.0):
    return plain_softmax(-((queries[:, None] - keys[None, :]) ** 2) / (2 * bandwidth**2)) @ values


def plain_additive_scores(query, key, W_q, W_k, v):
    q = torch.einsum("...qd,hd->...qh", query, W_q)
    k = torch.einsum("...kd,hd->...kh", key, W_k)
    return torch.einsum("...qkh,h->...qk", torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3)), v)


def plain_additive_attention(query, key, value, W_q, W_k, v, *, valid_lens=None):
    scores = plain_additive_scores(query, key, W_q, W_k, v)
    if valid_lens is not None:
        scores = scores.masked_fill(torch.arange(key.shape[-2]) >= valid_lens[:, None, None], -1e9)
    weights = torch.softmax(scores, dim=-1)
    return weights @ value, weights


def plain_decoder_step(embedded, hidden, annotations, source_lengths, params, query_from=None):
    cell = torch.nn.GRUCell(embedded.shape[-1] + annotations.shape[-1], hidden.shape[-1]).to(hidden.dtype)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(params[name.replace("weight", "W").replace("bias", "b")])
    query = hidden if query_from is None else query_from(embedded, hidden, cell, annotations)
    context, weights = plain_additive_attention(query[:, None], annotations, annotations, params["W_q"],
                                                params["W_k"], params["v"], valid_lens=source_lengths)
    with torch.no_grad():
        new_hidden = cell(torch.cat([embedded, context[:, 0]], dim=-1), hidden)
    logits = torch.cat([new_hidden, context[:, 0]], dim=-1) @ params["W_out"].T + params["b_out"]
    return logits, new_hidden, weights[:, 0]


def luong_order_step(embedded, hidden, annotations, source_lengths, params):
    """The mistake: query with the new state s_t (computed from a zero context), not s_{t-1}."""
    def new_state(embedded, hidden, cell, annotations):
        zeros = torch.zeros(len(annotations), annotations.shape[-1], dtype=annotations.dtype)
        with torch.no_grad():
            return cell(torch.cat([embedded, zeros], -1), hidden)
    return plain_decoder_step(embedded, hidden, annotations, source_lengths, params, query_from=new_state)


PLAIN = {"additive_scores": plain_additive_scores, "additive_attention": plain_additive_attention,
         "general_scores": lambda q, k, W: torch.einsum("...qd,de,...ke->...qk", q, W, k),
         "decoder_step": plain_decoder_step,
         "softmax": plain_softmax, "masked_softmax": plain_masked_softmax,
         "scaled_dot_product_attention": plain_attention, "nadaraya_watson": plain_nadaraya_watson}
def plain_split_heads(x, num_heads):
    return x.unflatten(-1, (num_heads, -1)).transpose(-3, -2)


def plain_merge_heads(x):
    return x.transpose(-3, -2).flatten(-2)


def plain_multihead(query, key, value, W_q, W_k, W_v, W_o, num_heads, *, key_mask=None, is_causal=False,
                    head_scale=True):
    q, k, v = (plain_split_heads(t, num_heads) for t in (query @ W_q.T, key @ W_k.T, value @ W_v.T))
    mask = None if key_mask is None else key_mask[:, None, None, :]
    scale = None if head_scale else 1 / math.sqrt(W_q.shape[0])
    return plain_merge_heads(plain_attention(q, k, v, mask, is_causal, scale=scale)) @ W_o.T


def plain_packed_mha(query, key, value, in_w, in_b, out_w, out_b, num_heads, *, key_padding_mask=None):
    W_q, W_k, W_v = in_w.chunk(3)
    b_q, b_k, b_v = in_b.chunk(3) if in_b is not None else (0, 0, 0)
    q, k, v = (plain_split_heads(t, num_heads) for t in (query @ W_q.T + b_q, key @ W_k.T + b_k, value @ W_v.T + b_v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))  # torch: True = ignore
    weights = plain_softmax(scores)
    out = plain_merge_heads(weights @ v) @ out_w.T
    return (out if out_b is None else out + out_b), weights.mean(dim=1)


def plain_sinusoidal(length, d_model, exponent_step=2):  # in float32 throughout, as most students write it
    exponents = torch.arange(0, exponent_step * d_model // 2, exponent_step) / d_model
    angles = torch.arange(length)[:, None] / 10000 ** exponents
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def plain_rope(x, positions=None):  # frequencies and angles in x's dtype
    length, d = x.shape[-2:]
    positions = torch.arange(length) if positions is None else positions
    angles = positions.to(x.dtype)[:, None] * 10000 ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], -1).flatten(-2)


def neox_rope(x, positions=None):
    """GPT-NeoX's pairing (i, i + d/2) instead of the interleaved pairs."""
    halves_to_pairs = x.unflatten(-1, (2, -1)).transpose(-2, -1).flatten(-2)
    return plain_rope(halves_to_pairs, positions).unflatten(-1, (-1, 2)).transpose(-2, -1).flatten(-2)


def plain_cached_attention(x, W_q, W_k, W_v, W_o, num_heads, k_cache, v_cache, top_left=False, rope_from_zero=False):
    t_old, t_new = k_cache.shape[-2], x.shape[-2]
    positions = torch.arange(t_new) if rope_from_zero else torch.arange(t_old, t_old + t_new)
    q = plain_rope(plain_split_heads(x @ W_q.T, num_heads), positions)
    k = torch.cat([k_cache, plain_rope(plain_split_heads(x @ W_k.T, num_heads), positions)], dim=-2)
    v = torch.cat([v_cache, plain_split_heads(x @ W_v.T, num_heads)], dim=-2)
    mask = torch.ones(t_new, t_old + t_new, dtype=torch.bool).tril(diagonal=0 if top_left else t_old)
    return plain_merge_heads(plain_attention(q, k, v, mask)) @ W_o.T, k, v


class UntrainedReverser(torch.nn.Module):
    """A model that copies its input instead of reversing it."""

    def forward(self, tokens):
        return torch.nn.functional.one_hot(tokens, 10).float()  # copies instead of reversing


PLAIN |= {"split_heads": plain_split_heads, "merge_heads": plain_merge_heads, "multihead_attention": plain_multihead,
         "packed_multihead_attention": plain_packed_mha, "sinusoidal_encoding": plain_sinusoidal,
         "apply_rope": plain_rope, "cached_causal_attention": plain_cached_attention}
class DateOracle:
    """A perfect date translator: every source string of every day of 1950-2049 in every style."""

    def __init__(self):
        from course_kit.data.dates import FIRST_DAY, FORMATS, LAST_DAY

        days = (FIRST_DAY + datetime.timedelta(days=i) for i in range((LAST_DAY - FIRST_DAY).days + 1))
        self.targets = {format_(d.day, d.month, d.year, d.weekday()): d.isoformat()
                        for d in days for format_ in FORMATS.values()}

    def translate(self, sources):
        return [self.targets[source] for source in sources]


# What passes an exercise when its reference is not itself an answer (the trained model's cases carry
# their targets; a model that knows every date's translation passes them).
ANSWERS = {"trained_model": DateOracle()}
def plain_flash_forward(query, key, value, is_causal=False, scale=None, block_q=16, block_k=16):
    """A student's tiled forward in the inputs' dtype: running max, sum and accumulator per tile."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    n_q, n_k = query.shape[-2], key.shape[-2]
    outs, lses = [], []
    for qs in range(0, n_q, block_q):
        q = query[..., qs:qs + block_q, :] * scale
        m = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)
        l = torch.zeros_like(m)
        acc = torch.zeros(*q.shape[:-1], value.shape[-1], dtype=q.dtype)
        for ks in range(0, min(n_k, qs + q.shape[-2]) if is_causal else n_k, block_k):
            s = q @ key[..., ks:ks + block_k, :].transpose(-2, -1)
            if is_causal:
                rows = torch.arange(qs, qs + q.shape[-2])[:, None]
                s = s.masked_fill(torch.arange(ks, ks + s.shape[-1]) > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1))
            p = torch.exp(s - m_new[..., None])
            alpha = torch.exp(m - m_new)
            l = alpha * l + p.sum(-1)
            acc = alpha[..., None] * acc + p @ value[..., ks:ks + block_k, :]
            m = m_new
        outs.append(acc / l[..., None])
        lses.append(m + torch.log(l))
    return torch.cat(outs, dim=-2), torch.cat(lses, dim=-1)


def plain_flash_backward(query, key, value, out, lse, grad_out, is_causal=False, scale=None, block_q=16,
                         block_k=16):
    """A student's backward in the inputs' dtype: P recomputed from lse, tile by tile, key tiles outside."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    delta = (grad_out * out).sum(-1, keepdim=True)
    dq, dk, dv = torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value)
    for ks in range(0, key.shape[-2], block_k):
        k, v = key[..., ks:ks + block_k, :], value[..., ks:ks + block_k, :]
        for qs in range(0, query.shape[-2], block_q):
            q, do = query[..., qs:qs + block_q, :], grad_out[..., qs:qs + block_q, :]
            if is_causal and ks > qs + q.shape[-2] - 1:
                continue
            s = q @ k.transpose(-2, -1) * scale
            if is_causal:
                s = s.masked_fill(torch.arange(ks, ks + k.shape[-2]) > torch.arange(qs, qs + q.shape[-2])[:, None],
                                  float("-inf"))
            p = torch.exp(s - lse[..., qs:qs + block_q, None])
            dv[..., ks:ks + block_k, :] += p.transpose(-2, -1) @ do
            ds = p * (do @ v.transpose(-2, -1) - delta[..., qs:qs + block_q, :]) * scale
            dq[..., qs:qs + block_q, :] += ds @ k
            dk[..., ks:ks + block_k, :] += ds.transpose(-2, -1) @ q
    return dq, dk, dv


def plain_chunked_attention(query, key, value, is_causal=False, scale=None, chunk_size=1024):
    """A student's chunked attention: plain attention on each chunk of queries, causal rows offset."""
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    outs = []
    for start in range(0, query.shape[-2], chunk_size):
        q = query[..., start:start + chunk_size, :]
        scores = q @ key.transpose(-2, -1) * scale
        if is_causal:
            rows = torch.arange(start, start + q.shape[-2])[:, None]
            scores = scores.masked_fill(torch.arange(key.shape[-2]) > rows, float("-inf"))
        outs.append(plain_softmax(scores) @ value)
    return torch.cat(outs, dim=-2)


PLAIN |= {"flash_attention_forward": plain_flash_forward, "flash_attention_backward": plain_flash_backward,
         "chunked_attention": plain_chunked_attention}

# A typical mistake per exercise, each of which the visible cases must catch.
MISTAKES = {
    "softmax": lambda x, dim=-1: torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True),
    "masked_softmax": lambda scores, mask, dim=-1: plain_masked_softmax(scores, ~mask, dim),
    "causal_mask": lambda n_q, n_k=None: torch.ones(n_q, n_k or n_q, dtype=torch.bool).triu(),
    "padding_mask": lambda lengths, max_len: torch.arange(max_len)[None, :] <= lengths[:, None],
    "scaled_dot_product_attention": lambda q, k, v, attn_mask=None, is_causal=False, scale=None:
        plain_attention(q, k, v, attn_mask, is_causal, scale=1.0 if scale is None else scale),
    "nadaraya_watson": lambda q, k, v, bandwidth=1.0: torch.exp(-((q[:, None] - k[None, :]) ** 2) / 2) @ v,
    "additive_scores": lambda q, k, W_q, W_k, v: ((q @ W_q.T).unsqueeze(-2) + (k @ W_k.T).unsqueeze(-3)) @ v,
    "general_scores": lambda q, k, W: q @ k.transpose(-2, -1),  # forgets W: only runs when d_q = d_k
    "additive_attention": lambda q, k, value, W_q, W_k, v, *, valid_lens=None:
        plain_additive_attention(q, k, value, W_q, W_k, v),  # ignores the padding
    "decoder_step": luong_order_step,
    # heads cut along the sequence instead of the features
    "split_heads": lambda x, num_heads: x.reshape(*x.shape[:-2], num_heads, x.shape[-2], -1),
    "merge_heads": lambda x: x.reshape(*x.shape[:-3], x.shape[-2], -1),
    # scaled by sqrt(E), the model width, instead of sqrt(D), the head width
    "multihead_attention": lambda *args, **kwargs: plain_multihead(*args, **kwargs, head_scale=False),
    # torch's key_padding_mask taken in the course's polarity (True = takes part)
    "packed_multihead_attention": lambda q, k, v, in_w, in_b, out_w, out_b, num_heads, key_padding_mask=None:
        plain_packed_mha(q, k, v, in_w, in_b, out_w, out_b, num_heads,
                         key_padding_mask=None if key_padding_mask is None else ~key_padding_mask),
    # 10000^(i/d) instead of 10000^(2i/d)
    "sinusoidal_encoding": lambda length, d_model: plain_sinusoidal(length, d_model, exponent_step=1),
    "apply_rope": neox_rope,
    # the causal mask aligned top-left (is_causal=True) when the cache is not empty
    "cached_causal_attention": lambda *args: plain_cached_attention(*args, top_left=True),
    "reversal_model": UntrainedReverser(),
    # Lesson 4: the sums merged without rescaling; the causal tile skip compared with the tile's first
    # query; a forward that never rescales its accumulator; a softmax backward summed over one tile.
    "merge_softmax_states": lambda m_a, l_a, acc_a, m_b, l_b, acc_b: (
        torch.maximum(m_a, m_b), l_a + l_b, acc_a + acc_b),
    "causal_tile_mask": lambda n_q, n_k, block_q, block_k:
        torch.arange(0, n_k, block_k)[None, :] <= torch.arange(0, n_q, block_q)[:, None],
    "chunked_attention": lambda q, k, v, is_causal=False, scale=None, chunk_size=1024:
        plain_attention(q, k, v, is_causal=False, scale=scale),  # ignores is_causal
    "flash_attention_forward": lambda q, k, v, is_causal=False, scale=None, block_q=16, block_k=16: (
        plain_attention(q, k, v, is_causal=is_causal, scale=scale),
        torch.logsumexp(q @ k.transpose(-2, -1), dim=-1)),  # lse without the scale
    "flash_attention_backward": lambda q, k, v, out, lse, do, is_causal=False, scale=None, block_q=16, block_k=16:
        tuple(g * 2 for g in plain_flash_backward(q, k, v, out, lse, do, is_causal, scale, block_q, block_k)),
}


# A trained model's pass is tests/test_trained_models.py's: Lesson 3's check recomputes the model's logits
# from its weights, which only a TinyTransformer of the notebook's has.
@pytest.mark.parametrize("name", [name for name in EXERCISES if name != "reversal_model"])
def test_reference_passes_its_visible_and_hidden_cases(name, capsys):
    reference = ANSWERS.get(name, EXERCISES[name].reference)
    check_cases(reference, visible_cases(name), exercise=name)
    for seed in SEEDS:
        check_against_reference(name, reference, seed=seed)


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_an_honest_float32_answer_is_never_failed_by_the_tolerance(name, capsys):
    check_cases(PLAIN[name], visible_cases(name), exercise=name)
    for seed in range(40):
        check_against_reference(name, PLAIN[name], seed=seed)


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_typical_mistake_fails_the_visible_test(name):
    with pytest.raises(CheckFailed, match=rf"^{name}: \d+ of \d+ visible cases pass"):
        check_cases(MISTAKES[name], visible_cases(name), exercise=name)


@pytest.mark.parametrize("name", [name for name, e in EXERCISES.items() if e.mistakes])
def test_every_known_mistake_is_named_by_some_visible_case(name):
    named = {m["hint"] for case in visible_cases(name) for m in case.get("mistakes", ())}
    assert named == {m.hint for m in EXERCISES[name].mistakes}, "a mistake no visible case can tell from the rest"


@pytest.mark.parametrize("name", [name for name, e in EXERCISES.items() if e.mistakes])
def test_a_case_names_only_mistakes_it_tells_apart_from_the_right_answer_and_from_each_other(name):
    for case in visible_cases(name):
        mistakes = case.get("mistakes", ())
        outputs = [case["expected"], *(m["expected"] for m in mistakes if "expected" in m)]
        for i, a in enumerate(outputs):
            for b in outputs[i + 1:]:
                assert compare(a, b, atol=case["atol"], rtol=case["rtol"]) is not None, case["case"]
        errors = [m["error"] for m in mistakes if "error" in m]  # a mistake that raises is told by its error
        assert len(errors) == len(set(errors)), case["case"]


@pytest.mark.parametrize("name", ["chunked_attention", "flash_attention_forward", "flash_attention_backward"])
def test_lesson4_long_cases_hold_the_inputs_and_outputs_and_not_the_score_matrix(name):
    """A long case's limit fits every input and output, and the whole score matrix is at least ten times it;
    a causal case's limit on products is below what computing every tile takes."""
    from autograde.exercises.lesson4_flash import SPARE, tile_products

    cases = visible_cases(name) + [case for seed in SEEDS for case in hidden_cases(name, seed)]
    long = [case for case in cases if "max_tensor_elements" in case]
    assert sum(not case["hidden"] for case in long) == 2 and len(long) == 2 + 2 * len(SEEDS)  # one causal each
    for case in long:
        query, key, value = case["args"][:3]
        outputs = case["expected"] if isinstance(case["expected"], tuple) else (case["expected"],)
        assert max(t.numel() for t in (*case["args"], *outputs)) <= case["max_tensor_elements"], case["case"]
        assert query.shape[-2] * key.shape[-2] >= 10 * case["max_tensor_elements"], case["case"]
        if case["kwargs"].get("is_causal") and name != "chunked_attention":
            per_pair = (query.shape[-1] + value.shape[-1] if name == "flash_attention_forward"
                        else 3 * query.shape[-1] + 2 * value.shape[-1])
            every_tile = tile_products(query.shape[-2], key.shape[-2], per_pair, is_causal=False)
            assert every_tile > (1 + SPARE) * case["max_matmul_flops"], case["case"]


@pytest.mark.parametrize("name", ["trained_model", "reversal_model"])
def test_a_trained_models_hidden_cases_are_the_same_at_every_grading(name):
    """A trained model's grade must not depend on a draw: its hidden cases ignore the grading seed."""
    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return a == b

    first, second = hidden_cases(name, 1), hidden_cases(name, 2**30 + 7)
    assert same([(c["case"], c["args"], c.get("expected")) for c in first],
                [(c["case"], c["args"], c.get("expected")) for c in second])


def test_hidden_failure_names_the_seed_to_reproduce_it():
    with pytest.raises(CheckFailed, match=r"hidden cases drawn with seed 7\)$"):
        check_against_reference("softmax", MISTAKES["softmax"], seed=7)


@pytest.mark.parametrize("name", EXERCISES)
def test_visible_cases_are_deterministic(name):
    first, second = io.BytesIO(), io.BytesIO()
    torch.save(visible_cases(name), first)
    torch.save(visible_cases(name), second)
    assert first.getvalue() == second.getvalue()


@pytest.mark.parametrize("name", EXERCISES)
def test_cases_load_back_with_weights_only(name):
    buffer = io.BytesIO()
    torch.save([*visible_cases(name), *hidden_cases(name, 0)], buffer)
    buffer.seek(0)
    assert len(torch.load(buffer, weights_only=True)) == len(visible_cases(name)) + len(hidden_cases(name, 0))


def test_hidden_cases_include_non_contiguous_inputs():
    cases = hidden_cases("scaled_dot_product_attention", 0)
    assert any(not arg.is_contiguous() for c in cases for arg in c["args"] if isinstance(arg, torch.Tensor))


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.id)
def test_every_exercise_of_a_lesson_is_checked_in_its_notebook(lesson):
    source = (PROJECT / lesson.source_path).read_text()
    checked = set(re.findall(r'check_exercise\("(\w+)"', source)) | set(re.findall(r'exercise="(\w+)"', source))
    recorded = set(re.findall(r'record_answers\("(\w+)"', source))
    names = {e.name for e in exercises_of(lesson.id)}
    assert checked == names and recorded == names


def exercise_texts(lesson) -> dict[str, str]:
    """Each exercise's own text: the markdown from its '### Exercise' heading (or, without one, from
    the previous solution cell) to its solution cell, by the name its test cell checks (a trained
    model's solution cell has a grade id of its own, e.g. train_model for trained_model)."""
    texts, markdown, text = {}, [], ""
    for cell in read_source_notebook(PROJECT, lesson).cells:
        nbgrader = cell.metadata.get("nbgrader", {})
        if nbgrader.get("solution"):
            text = "\n".join(markdown)
            text, markdown = text[text.rfind("### Exercise"):] if "### Exercise" in text else text, []
        elif nbgrader.get("grade"):
            texts |= {name: text for name in re.findall(r'check_exercise\("(\w+)"', cell.source)}
        elif cell.cell_type == "markdown":
            markdown.append(cell.source)
    return texts


def names_a_student_reads(fused: str) -> tuple[str, ...]:
    """How a notebook may name the operator ``fused`` (a key of FUSED): in full, or as `F.` / `nn.` spell it."""
    full = FUSED[fused][0].split(" ")[0]  # e.g. torch.nn.functional.scaled_dot_product_attention
    return full, full.replace("torch.nn.functional.", "F."), full.replace("torch.nn.", "nn.")


RULES_STATED = ("lesson1_dot_product", "lesson2_additive", "lesson3_multihead")  # the lessons held to it so far


@pytest.mark.parametrize("exercise", [e for lesson in RULES_STATED for e in exercises_of(lesson)],
                         ids=lambda e: f"{e.lesson}: {e.name}")
def test_an_exercise_says_in_its_own_text_every_operator_the_grader_forbids_it(exercise):
    text = exercise_texts(next(lesson for lesson in LESSONS if lesson.id == exercise.lesson))[exercise.name]
    unsaid = [fused for fused in exercise.forbidden if not any(name in text for name in names_a_student_reads(fused))]
    assert not unsaid, (f"the grader forbids {unsaid} in {exercise.name}, but its text never names them: say what "
                        f"it may not call (e.g. {names_a_student_reads(unsaid[0])[1]!r}) above its solution cell")


@pytest.mark.parametrize("lesson", [lesson for lesson in LESSONS if lesson.id in RULES_STATED[1:]], ids=lambda l: l.id)
def test_the_introduction_states_the_graders_rules_for_submitted_code(lesson):
    """autograde/policy.py's rules, in the words of the lesson's first cell, and the command that checks them."""
    introduction = read_source_notebook(PROJECT, lesson).cells[0].source
    for rule in ("plain Python on `torch`, `numpy` and `math`", "no other imports", "files", "`eval`, `exec` or "
                 "`getattr`", "private parts of torch", f"`attention-course validate {lesson.notebook}.ipynb`"):
        assert rule in introduction, f"{lesson.id}'s introduction does not say {rule!r}"


def test_parity_exercise_reference_is_what_nn_multiheadattention_computes():
    for case in visible_cases("packed_multihead_attention"):
        query, key, value, in_w, in_b, out_w, out_b, num_heads = case["args"]
        module = torch.nn.MultiheadAttention(query.shape[-1], num_heads, bias=in_b is not None, batch_first=True,
                                             dtype=query.dtype)
        with torch.no_grad():
            module.in_proj_weight.copy_(in_w)
            module.out_proj.weight.copy_(out_w)
            if in_b is not None:
                module.in_proj_bias.copy_(in_b)
                module.out_proj.bias.copy_(out_b)
        expected = module(query, key, value, key_padding_mask=case["kwargs"].get("key_padding_mask"))
        assert case["names"] == ["attn_output", "attn_weights"]
        for ours, theirs in zip(case["expected"], expected):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_cached_attention_cases_decode_a_sequence_token_by_token_into_its_one_causal_pass():
    cases = visible_cases("cached_causal_attention")
    one_pass = next(c for c in cases if c["case"].startswith("one causal pass"))
    steps = [c for c in cases if c["case"].startswith("token by token")]
    assert len(steps) == one_pass["args"][0].shape[1]
    torch.testing.assert_close(torch.cat([c["expected"][0] for c in steps], dim=1), one_pass["expected"][0])
    for step, following in zip(steps, steps[1:]):  # each step's input cache is what the step before returned
        torch.testing.assert_close(following["args"][6], step["expected"][1])
        torch.testing.assert_close(following["args"][7], step["expected"][2])
    torch.testing.assert_close(steps[-1]["expected"][1], one_pass["expected"][1])  # the same rotated keys


def test_cached_attention_rotating_new_tokens_from_position_zero_fails_the_visible_test():
    with pytest.raises(CheckFailed, match=r"cached_causal_attention: \d+ of \d+ visible cases pass"):
        check_cases(lambda *args: plain_cached_attention(*args, rope_from_zero=True),
                    visible_cases("cached_causal_attention"), exercise="cached_causal_attention")


def test_trained_model_check_fails_a_model_that_has_not_learned_the_task_in_its_hidden_cases_too():
    with pytest.raises(CheckFailed, match=r"0.0% of the 1000 rows are entirely right, 90% needed"):
        check_against_reference("reversal_model", UntrainedReverser(), seed=0)


@pytest.mark.parametrize("name, outputs", [("additive_attention", ["context", "weights"]),
                                           ("decoder_step", ["logits", "hidden", "weights"])])
def test_lesson2_references_are_the_library_functions_and_name_their_outputs(name, outputs):
    import course_lib

    library = {"additive_attention": course_lib.additive_attention,
               "decoder_step": course_lib.attention_decoder_step}[name]
    assert EXERCISES[name].reference is library  # no adapter between the exercise and the library
    assert all(case["names"] == outputs for case in visible_cases(name) + hidden_cases(name, 0))
