"""The checking helpers' messages: each failure says what was expected, what came, and where."""

from __future__ import annotations

import numpy
import pytest
import torch

from course_kit.checks import CheckFailed, check_cases, compare, error_text, failure_report, judge, run_case


def case(expected, *args, **kwargs):
    return {"case": "the case", "args": list(args), "kwargs": kwargs, "expected": expected, "atol": 1e-6, "rtol": 1e-6}


def failure(fn, *cases) -> str:
    with pytest.raises(CheckFailed) as info:
        check_cases(fn, list(cases), exercise="ex")
    return str(info.value)


def test_wrong_shape_names_both_shapes():
    assert compare(torch.zeros(2, 3), torch.zeros(3, 2), atol=0, rtol=0) == "output: expected shape (3, 2), got (2, 3)"


def test_wrong_dtype_names_both_dtypes():
    message = compare(torch.zeros(2), torch.zeros(2, dtype=torch.float64), atol=0, rtol=0)
    assert message == "output: expected dtype torch.float64, got torch.float32"


def test_non_tensor_result_says_what_came():
    assert compare([1.0], torch.zeros(1), atol=0, rtol=0) == "output: expected a torch.Tensor, got list of 1 items"


def test_unexpected_nan_is_counted_and_located():
    actual = torch.tensor([[0.5, 0.5], [float("nan"), float("nan")]])
    message = compare(actual, torch.tensor([[0.5, 0.5], [0.0, 0.0]]), atol=1e-6, rtol=0)
    assert message.startswith("output: 2 NaN value(s) where there should be none; first at index (1, 0)")


def test_value_error_reports_largest_error_with_its_index_and_values():
    expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    actual = torch.tensor([[1.0, 2.1], [3.0, 3.5]])
    message = compare(actual, expected, atol=1e-6, rtol=0)
    assert message.startswith("output: largest error 0.5 at index (1, 1): expected 4, got 3.5")


def test_boolean_mismatch_counts_entries_and_gives_the_first():
    expected = torch.ones(3, 3, dtype=torch.bool).tril()
    message = compare(expected.T.contiguous(), expected, atol=0, rtol=0)
    assert message == "output: 6 of 9 entries differ; first at index (0, 1): expected False, got True"


def test_matching_tensors_within_tolerance_pass():
    assert compare(torch.tensor([1.0 + 1e-7]), torch.tensor([1.0]), atol=1e-6, rtol=0) is None


def test_unimplemented_function_gets_one_clear_line():
    def stub(x):
        raise NotImplementedError()

    message = failure(stub, case(torch.zeros(1), torch.zeros(1)), case(torch.zeros(1), torch.ones(1)))
    assert message == "ex: not implemented yet: replace the `raise NotImplementedError()` line with your code"


def test_exception_in_student_code_is_reported_with_the_case():
    message = failure(lambda x: x @ x, case(torch.zeros(2), torch.zeros(2, 3)))
    assert "0 of 1 visible cases pass" in message and "✗ the case: raised RuntimeError" in message


def test_in_place_modification_of_an_input_is_reported():
    def in_place(x):
        x -= 1
        return x

    message = failure(in_place, case(torch.zeros(2), torch.ones(2)))
    assert "modified its input tensors in place" in message


def test_caller_inputs_are_not_touched_by_an_in_place_function():
    x = torch.ones(2)
    failure(lambda t: t.sub_(1), case(torch.zeros(2), x))
    assert torch.equal(x, torch.ones(2))


def test_report_details_at_most_three_failures_and_lists_every_case():
    cases = [case(torch.ones(1), torch.zeros(1)) for _ in range(5)]
    message = failure(lambda x: x, *cases)
    assert message.count("✗ the case: output") == 3 and message.count("✗ the case\n") + message.endswith(
        "✗ the case") == 2


def test_report_shows_which_cases_pass_as_well_as_which_fail():
    def ignores_scale(x, scale=1.0):
        return x * 2

    cases = [{**case(torch.tensor([2.0]), torch.tensor([1.0])), "case": "default scale"},
             {**case(torch.tensor([1.0]), torch.tensor([1.0]), scale=0.5), "case": "scale=0.5"}]
    message = failure(ignores_scale, *cases)
    assert "1 of 2 visible cases pass" in message
    assert "  ✓ default scale" in message and "  ✗ scale=0.5: output: largest error" in message


def test_passing_cases_print_one_tick_line(capsys):
    check_cases(lambda x: x * 2, [case(torch.tensor([2.0]), torch.tensor([1.0]))], exercise="double")
    assert capsys.readouterr().out == "✓ double: all 1 cases pass\n"


def test_check_failed_renders_without_a_traceback():
    rendered = CheckFailed("ex: 0 of 1 visible cases pass.")._render_traceback_()
    assert rendered == ["\x1b[31mCheckFailed\x1b[0m: ex: 0 of 1 visible cases pass."]


# --- outputs that are tuples of tensors (context, weights) ------------------------------------------

def test_tuple_output_reports_the_named_output_that_is_wrong():
    expected = (torch.zeros(2, 3), torch.ones(2, 4))
    message = compare((torch.zeros(2, 3), torch.ones(4, 2)), expected, atol=0, rtol=0, names=["context", "weights"])
    assert message == "weights: expected shape (2, 4), got (4, 2)"


def test_tuple_output_without_names_is_numbered():
    message = compare((torch.zeros(1), torch.zeros(1)), (torch.zeros(1), torch.ones(1)), atol=0, rtol=0)
    assert message.startswith("output[1]: largest error 1 at index (0,)")


def test_single_tensor_where_a_tuple_is_expected_says_what_to_return():
    message = compare(torch.zeros(2), (torch.zeros(2), torch.zeros(2)), atol=0, rtol=0, names=["context", "weights"])
    assert message == ("expected a tuple of 2 tensors (context, weights), got tensor of shape (2,), "
                       "dtype torch.float32")


def test_tuple_of_the_wrong_length_is_reported():
    message = compare((torch.zeros(2),), (torch.zeros(2), torch.zeros(2)), atol=0, rtol=0)
    assert message == "expected a tuple of 2 tensors (output[0], output[1]), got a tuple of 1"


def test_matching_tuple_or_list_passes():
    expected = (torch.zeros(2), torch.ones(3))
    assert compare(expected, expected, atol=0, rtol=0) is None
    assert compare(list(expected), expected, atol=0, rtol=0) is None


def test_case_names_reach_the_failure_message():
    named = case((torch.zeros(2), torch.ones(2)), torch.zeros(2))
    named["names"] = ["context", "weights"]
    assert "weights: largest error 1" in failure(lambda x: (x, x), named)


def test_in_place_change_of_a_tensor_inside_a_dict_argument_is_reported():
    def scale_in_place(params):
        params["W"] *= 2
        return params["W"]

    params = {"W": torch.ones(2)}
    assert "modified its input tensors in place" in failure(scale_in_place, case(torch.ones(2), params))
    assert torch.equal(params["W"], torch.ones(2))


# --- translations: the trained model's case carries the targets ------------------------------------

PAIRS = [("Mar 3 21", "2021-03-03"), ("3.3.21", "2021-03-03"), ("20210303", "2021-03-03"), ("1/2/03", "2003-01-02")]


def translation_case(min_accuracy, hidden=False):
    return {"case": "four dates", "hidden": hidden, "args": [[s for s, _ in PAIRS]], "kwargs": {},
            "method": "translate", "expected": [t for _, t in PAIRS], "min_accuracy": min_accuracy,
            "atol": 0.0, "rtol": 0.0}


class Translator:
    def translate(self, sources):
        return ["2021-03-03"] * len(sources)


def test_translations_above_the_threshold_pass(capsys):
    check_cases(Translator(), [translation_case(0.75)], exercise="model")
    assert capsys.readouterr().out == "✓ model: all 1 cases pass\n"


def test_translations_below_the_threshold_fail_with_examples_of_mistakes():
    message = failure(Translator(), translation_case(0.9))
    assert "75.0% of 4 translated exactly right, 90% needed" in message
    assert "'1/2/03': expected '2003-01-02', got '2021-03-03'" in message


def test_translations_from_an_unfinished_model_say_so():
    class Unfinished:
        def translate(self, sources):
            raise NotImplementedError()

    assert failure(Unfinished(), translation_case(0.9)).endswith("not implemented yet: replace the "
                                                                 "`raise NotImplementedError()` line with your code")


def test_a_model_never_built_says_so():
    assert failure(None, translation_case(0.9)).startswith("ex: not implemented yet")


# --- NaN, hidden cases, hints ---------------------------------------------------------------------

def test_nan_where_nan_is_expected_matches_and_a_number_there_does_not():
    expected = torch.tensor([1.0, float("nan")])
    assert compare(torch.tensor([1.0, float("nan")]), expected, atol=0, rtol=0) is None
    assert compare(torch.tensor([1.0, 0.0]), expected, atol=0, rtol=0) == \
        "output: NaN expected where the output has a number"


def test_a_hidden_case_failure_quotes_no_value_no_index_and_no_error_message():
    hidden = {**case(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.25, 0.5, 0.75])), "hidden": True}
    message = judge(run_case(lambda x: x * 4 + 1e-3, hidden), hidden)
    assert message.startswith("output: values differ; largest error") and "0.25" not in message
    assert "index" not in message and "expected 1" not in message
    secret = torch.tensor([12345.0])
    raising = {**case(torch.zeros(1), secret), "hidden": True}
    assert judge(run_case(lambda x: (_ for _ in ()).throw(ValueError(f"bad input {x}")), raising), raising) == \
        "raised ValueError"
    report = failure_report("ex", [(hidden, "output: values differ")])
    assert report == "ex: 0 of 1 hidden cases pass.\n  ✗ hidden: the case: output: values differ"


def test_an_output_off_by_a_constant_factor_is_named():
    expected = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    message = compare(expected * 2.8, expected, atol=1e-6, rtol=1e-6)
    assert message.endswith("The whole output is 2.8x the expected one: is a scale factor missing or applied twice?")


def test_a_forbidden_operator_fails_the_visible_check_however_it_is_spelled():
    softmax_case = case(torch.softmax(torch.tensor([1.0, 2.0]), -1), torch.tensor([1.0, 2.0]))
    for fn in (lambda x: torch.softmax(x, -1), lambda x: x.softmax(-1), lambda x: torch.nn.Softmax(-1)(x)):
        with pytest.raises(CheckFailed, match="calls torch.softmax .or log_softmax., which this exercise does not "
                                              "allow"):
            check_cases(fn, [softmax_case], exercise="softmax", forbidden=("softmax",))


def test_autograd_is_forbidden_however_it_is_asked():
    """A backward that must be written by hand may not ask autograd: grad, backward in both spellings, and
    what calls them (torch.autograd.functional.vjp); the profiler names the engine's work for the grader."""
    from torch.autograd.profiler import profile

    from course_kit.answers import _fused_ops_called

    x = torch.tensor([1.0, -2.0, 3.0])
    square_grad = case(2 * x, x)

    def by_grad(x):
        x = x.clone().requires_grad_()
        return torch.autograd.grad((x * x).sum(), x)[0]

    def by_tensor_backward(x):
        x = x.clone().requires_grad_()
        (x * x).sum().backward()
        return x.grad

    def by_autograd_backward(x):
        x = x.clone().requires_grad_()
        torch.autograd.backward((x * x).sum())
        return x.grad

    def by_vjp(x):
        return torch.autograd.functional.vjp(lambda t: (t * t).sum(), x)[1]

    for fn in (by_grad, by_tensor_backward, by_autograd_backward, by_vjp):
        assert torch.equal(fn(x), 2 * x)  # right without the rule
        with pytest.raises(CheckFailed, match=r"calls torch\.autograd\.grad \(or \.backward\(\)\), which this "
                                              "exercise does not allow"):
            check_cases(fn, [square_grad], exercise="ex", forbidden=("autograd",))
    with profile() as ops:
        by_tensor_backward(x)
    ran = {event.name() for event in ops.kineto_results.events()}
    assert _fused_ops_called(ran, ["autograd"]) == ["torch.autograd.grad (or .backward())"]
    with profile() as ops:
        (2 * x).sum()
    assert _fused_ops_called({event.name() for event in ops.kineto_results.events()}, ["autograd"]) == []


# --- outputs that are not a single tensor ---------------------------------------------------------

def test_tuple_output_names_the_element_that_is_wrong():
    expected = (torch.zeros(2), torch.ones(3))
    message = failure(lambda x: (torch.zeros(2), torch.zeros(3)), case(expected, torch.zeros(1)))
    assert "✗ the case: output[1]: largest error 1 at index (0,): expected 1, got 0" in message


def test_tuple_output_of_the_wrong_length_says_what_came():
    message = failure(lambda x: torch.zeros(2), case((torch.zeros(2), torch.zeros(2)), torch.zeros(1)))
    assert "expected a tuple of 2 tensors (output[0], output[1]), got tensor of shape (2,)" in message


def test_right_tuple_output_passes(capsys):
    check_cases(lambda x: (x, 2 * x), [case((torch.ones(2), 2 * torch.ones(2)), torch.ones(2))], exercise="pair")
    assert capsys.readouterr().out == "✓ pair: all 1 cases pass\n"


class FixedLogits(torch.nn.Module):
    """A 'model' that predicts given tokens (one-hot logits), recording the mode it was called in."""

    def __init__(self, predictions: torch.Tensor) -> None:
        super().__init__()
        self.predictions = predictions
        self.calls = []

    def forward(self, tokens):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return torch.nn.functional.one_hot(self.predictions, 10).float()


def model_case(targets, min_accuracy):
    return {**case(targets, torch.zeros_like(targets)), "argmax": True, "min_row_accuracy": min_accuracy}


def test_a_model_passes_when_enough_rows_are_entirely_right_and_runs_in_eval_mode_without_gradients(capsys):
    targets = torch.randint(0, 10, (200, 5), generator=torch.Generator().manual_seed(0))
    predictions = targets.clone()
    predictions[0, 3] = (predictions[0, 3] + 1) % 10  # 199 of 200 rows right: 99.5%
    model = FixedLogits(predictions)
    check_cases(model, [model_case(targets, 0.99)], exercise="model")
    assert model.calls == [(False, False)] and model.training  # put back in training mode afterwards


def test_a_model_below_the_accuracy_threshold_fails_with_its_accuracy_and_a_wrong_row():
    targets = torch.randint(0, 10, (100, 4), generator=torch.Generator().manual_seed(0))
    predictions = targets.clone()
    predictions[7:9, 0] = (predictions[7:9, 0] + 1) % 10  # 98 of 100 rows right
    message = failure(FixedLogits(predictions), model_case(targets, 0.99))
    assert "output: 98.0% of the 100 rows are entirely right, 99% needed; first wrong row 7" in message


def test_a_model_that_returns_tokens_instead_of_logits_is_told_so():
    targets = torch.zeros(3, 4, dtype=torch.long)
    message = failure(lambda tokens: tokens, model_case(targets, 0.99))
    assert ("expected logits, a floating-point tensor (..., vocab), "
            "got tensor of shape (3, 4), dtype torch.int64") in message


def test_tuple_result_is_compared_element_by_element_and_names_the_element():
    expected = (torch.zeros(2), torch.ones(3))
    assert compare((torch.zeros(2), torch.ones(3)), expected, atol=0, rtol=0) is None
    assert compare([torch.zeros(2), torch.ones(3)], expected, atol=0, rtol=0) is None  # a list is fine too
    assert compare((torch.zeros(2), torch.ones(2)), expected, atol=0, rtol=0) == \
        "output[1]: expected shape (3,), got (2,)"
    message = compare((torch.zeros(2), torch.tensor([1.0, 1.0, 1.5])), expected, atol=1e-6, rtol=0)
    assert message.startswith("output[1]: largest error 0.5 at index (2,)")


def test_tuple_expected_but_a_tensor_or_the_wrong_count_came():
    expected = (torch.zeros(2), torch.ones(3))
    assert compare(torch.zeros(2), expected, atol=0, rtol=0) == \
        "expected a tuple of 2 tensors (output[0], output[1]), got tensor of shape (2,), dtype torch.float32"
    assert compare((torch.zeros(2),), expected, atol=0, rtol=0) == \
        "expected a tuple of 2 tensors (output[0], output[1]), got a tuple of 1"


def test_a_stub_raising_inside_another_error_still_reads_not_implemented():
    def kernel_stub(x):  # what Triton's interpreter does with a stub's NotImplementedError
        try:
            raise NotImplementedError()
        except NotImplementedError as error:
            raise RuntimeError("interpreter failed") from error

    message = failure(kernel_stub, case(torch.zeros(1), torch.zeros(1)))
    assert message == "ex: not implemented yet: replace the `raise NotImplementedError()` line with your code"


# --- constraints measured on the call, and known mistakes named ------------------------------------

def test_a_tensor_larger_than_the_constraint_allows_is_named_with_its_shape():
    q = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    limited = {**case((q * q).sum(-1), q), "max_tensor_elements": 4 * 64, "constraint": "four rows of scores at a time"}

    def full_scores(x):
        return (x @ x.T).diagonal().clone()  # (64, 64) scores: the whole matrix at once

    def row_blocks(x):
        return torch.cat([(x[i:i + 4] @ x.T).diagonal(offset=i) for i in range(0, 64, 4)])

    message = judge(run_case(full_scores, limited), limited)
    assert message == ("allocated a 64 x 64 tensor; at most 256 elements are allowed here "
                       "(four rows of scores at a time)")
    assert judge(run_case(row_blocks, limited), limited) is None


def test_a_score_matrix_built_in_numpy_or_python_lists_is_measured_as_memory_outside_torch():
    q = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
    limited = {**case((q * q).sum(-1), q), "max_tensor_elements": 4 * 512,
               "constraint": "four rows of scores at a time"}

    def numpy_scores(x):
        scores = x.numpy() @ x.numpy().T  # (512, 512) in numpy: no torch operator sees it
        return torch.from_numpy(scores.diagonal().copy())

    def list_scores(x):
        rows = x.tolist()
        scores = [[sum(a * b for a, b in zip(r, c)) for c in rows] for r in rows]  # 262,144 Python floats
        return torch.tensor([scores[i][i] for i in range(len(rows))])

    def row_blocks_in_numpy(x):
        a = x.numpy()
        # each block freed once its diagonal is copied (a view would keep the whole block alive)
        blocks = [(a[i:i + 4] @ a.T).diagonal(offset=i).copy() for i in range(0, 512, 4)]
        return torch.from_numpy(numpy.concatenate(blocks))

    for whole in (numpy_scores, list_scores):
        message = judge(run_case(whole, limited), limited)
        assert message.startswith("held ") and message.endswith(
            " bytes in numpy arrays or Python objects at once; at most 131,072 are allowed here, where torch's "
            "tensors may hold 2,048 elements (four rows of scores at a time)")
    assert judge(run_case(row_blocks_in_numpy, limited), limited) is None


def test_matrix_products_beyond_the_allowed_count_are_reported_with_the_ratio():
    x = torch.ones(8, 8)
    limited = {**case(x @ x, x), "max_matmul_flops": 2 * 8 * 8 * 8, "constraint": "one product"}
    assert judge(run_case(lambda t: t @ t, limited), limited) is None
    message = judge(run_case(lambda t: (t @ t) @ torch.eye(8), limited), limited)
    assert message.startswith("its matrix products took 2,048 multiply-adds x 2, 2.00x the most allowed (one product)")


def test_an_output_that_matches_a_known_mistake_gets_its_hint():
    x = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    right = {**case(x / 2.0, x), "mistakes": [{"hint": "Did you divide by d instead of sqrt(d)?", "expected": x / 4.0}]}
    message = judge(run_case(lambda t: t / 4.0, right), right)
    assert message.endswith("Did you divide by d instead of sqrt(d)?")
    assert "sqrt" not in judge(run_case(lambda t: t * 3.0, right), right)


def test_an_answer_that_raises_the_error_of_a_known_mistake_gets_its_hint_and_no_other_error_does():
    x = torch.ones(2, 3)
    W = torch.ones(4, 3)  # (out, in): x @ W.T is right, x @ W raises
    try:
        x @ W
    except RuntimeError as error:
        untransposed = error_text(error)
    right = {**case(x @ W.T, x, W), "mistakes": [{"hint": "Is W applied untransposed?", "error": untransposed}]}
    assert judge(run_case(lambda a, b: a @ b, right), right).endswith(". Is W applied untransposed?")
    assert "untransposed" not in judge(run_case(lambda a, b: a @ b[:2], right), right)  # another shape error
    assert "untransposed" not in judge(run_case(lambda a, b: a @ b.T * 2, right), right)  # an output, not an error
    assert judge(run_case(lambda a, b: a @ b.T, right), right) is None
