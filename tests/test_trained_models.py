"""The trained-model exercises: the instructor's own recipe passes the grader's check, a known-wrong model fails it.

The recipe is the solution notebook's, run from ``solutions/`` by the benchmark that measures it over
seeds and CPU paths (``benchmarks/trained_models.py``); these tests train seed 0 on this machine's path.
CI runs them a second time under ``ATEN_CPU_CAPABILITY=default`` (``.ci/run``).
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from pathlib import Path

import pytest
import torch

from autograde.exercises import check_against_reference
from autograde.exercises.lesson2_additive import MIN_TEST_ACCURACY
from autograde.exercises.lesson3_multihead import MIN_SEQUENCE_ACCURACY
from course_kit.checks import CheckFailed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import trained_models  # noqa: E402  (the benchmark: runs a solution notebook up to its training cell)

pytestmark = pytest.mark.slow  # each trains a model: 5 to 20 s


@pytest.fixture(autouse=True)
def one_thread():
    """As the notebooks set it: tiny models train faster on one thread than on threads sharing 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def solution_model(lesson: str, edit=None):
    """The notebook's namespace and the model its solution trains with seed 0 (``edit``: see trained)."""
    (namespace, _, model, _), = trained_models.trained(lesson, [0], edit)
    return namespace, model


def test_lesson2_solution_translates_above_the_threshold_on_both_fixed_sets_and_passes_the_grader():
    namespace, model = solution_model("lesson2_additive")
    visible, hidden = trained_models.lesson2_scores(namespace, model)
    assert min(visible, hidden) >= MIN_TEST_ACCURACY
    assert trained_models.graded("lesson2_additive", model)


def test_lesson3_solution_reverses_above_the_threshold_and_passes_the_grader():
    namespace, model = solution_model("lesson3_multihead")
    visible, other = trained_models.lesson3_scores(namespace, model)
    assert min(visible, other) >= MIN_SEQUENCE_ACCURACY
    assert trained_models.graded("lesson3_multihead", model)


def test_a_transformer_scaling_by_sqrt_E_learns_to_reverse_yet_fails_the_graders_check():
    """Scores divided by sqrt(E) instead of sqrt(D = E / H): the same as the queries divided by sqrt(H)."""
    def scaled_by_sqrt_e(namespace):
        right = namespace["multihead_attention"]

        def multihead_attention(query, key, value, W_q, W_k, W_v, W_o, num_heads, **options):
            return right(query, key, value, W_q / math.sqrt(num_heads), W_k, W_v, W_o, num_heads, **options)

        namespace["multihead_attention"] = multihead_attention

    namespace, model = solution_model("lesson3_multihead", edit=scaled_by_sqrt_e)
    visible, _ = trained_models.lesson3_scores(namespace, model)
    assert visible >= MIN_SEQUENCE_ACCURACY  # it learned the task: accuracy alone cannot tell it apart
    with pytest.raises(CheckFailed, match="does not compute what the notebook's TinyTransformer computes"):
        with contextlib.redirect_stdout(io.StringIO()):
            check_against_reference("reversal_model", model, seed=0)
