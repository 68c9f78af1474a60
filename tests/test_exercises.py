"""The graded exercises: the reference passes, honest float32 answers pass, typical mistakes fail."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest
import torch

from course_lib.grading.checks import CheckFailed, check_cases
from course_lib.grading.exercises import EXERCISES, check_against_reference, exercises_of, hidden_cases, visible_cases
from course_lib.lessons import LESSONS

PROJECT = Path(__file__).resolve().parents[1]
SEEDS = range(10)


# Plain float32 answers, written as a student would: they must never be failed by a tolerance.
def plain_softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def plain_masked_softmax(scores, mask, dim=-1):
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
    """A student's backward: autograd through plain attention (the answer an honest float32 check must pass)."""
    q, k, v = (t.detach().requires_grad_() for t in (query, key, value))
    o = plain_attention(q, k, v, is_causal=is_causal, scale=scale)
    return torch.autograd.grad(o, (q, k, v), grad_out)


PLAIN = {"softmax": plain_softmax, "masked_softmax": plain_masked_softmax,
         "scaled_dot_product_attention": plain_attention, "nadaraya_watson": plain_nadaraya_watson,
         "flash_attention_forward": plain_flash_forward, "flash_attention_backward": plain_flash_backward,
         "chunked_attention": lambda q, k, v, is_causal=False, scale=None, chunk_size=1024:
             plain_attention(q, k, v, is_causal=is_causal, scale=scale)}

# A typical mistake per exercise, each of which the visible cases must catch.
MISTAKES = {
    "softmax": lambda x, dim=-1: torch.exp(x) / torch.exp(x).sum(dim=dim, keepdim=True),
    "masked_softmax": lambda scores, mask, dim=-1: plain_masked_softmax(scores, ~mask, dim),
    "causal_mask": lambda n_q, n_k=None: torch.ones(n_q, n_k or n_q, dtype=torch.bool).triu(),
    "padding_mask": lambda lengths, max_len: torch.arange(max_len)[None, :] <= lengths[:, None],
    "scaled_dot_product_attention": lambda q, k, v, attn_mask=None, is_causal=False, scale=None:
        plain_attention(q, k, v, attn_mask, is_causal, scale=1.0 if scale is None else scale),
    "nadaraya_watson": lambda q, k, v, bandwidth=1.0: torch.exp(-((q[:, None] - k[None, :]) ** 2) / 2) @ v,
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
        tuple(g * 2 for g in plain_flash_backward(q, k, v, out, lse, do, is_causal, scale)),
}


@pytest.mark.parametrize("name", EXERCISES)
def test_reference_passes_its_visible_and_hidden_cases(name, capsys):
    reference = EXERCISES[name].reference
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
    checked = set(re.findall(r'check_exercise\("(\w+)"', source))
    hidden = set(re.findall(r'check_against_reference\("(\w+)"', source))
    names = {e.name for e in exercises_of(lesson.id)}
    assert checked == names and hidden == names
