"""The checking helpers' messages: each failure says what was expected, what came, and where."""

from __future__ import annotations

import pytest
import torch

from course_lib.grading.checks import CheckFailed, check_cases, compare


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
    assert compare([1.0], torch.zeros(1), atol=0, rtol=0) == "output: expected a torch.Tensor, got list [1.0]"


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
    assert "0 of 1 visible cases pass" in message and "case 'the case': raised RuntimeError" in message


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


def test_report_lists_at_most_three_failures():
    cases = [case(torch.ones(1), torch.zeros(1)) for _ in range(5)]
    message = failure(lambda x: x, *cases)
    assert message.count("• case") == 3 and "… and 2 more failing cases." in message


def test_passing_cases_print_one_tick_line(capsys):
    check_cases(lambda x: x * 2, [case(torch.tensor([2.0]), torch.tensor([1.0]))], exercise="double")
    assert capsys.readouterr().out == "✓ double: all 1 visible cases pass\n"


def test_check_failed_renders_without_a_traceback():
    rendered = CheckFailed("ex: 0 of 1 visible cases pass.")._render_traceback_()
    assert rendered == ["\x1b[31mCheckFailed\x1b[0m: ex: 0 of 1 visible cases pass."]


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
        "output: expected a tuple of 2 tensors, got tensor of shape (2,), dtype torch.float32"
    assert compare((torch.zeros(2),), expected, atol=0, rtol=0) == "output: expected a tuple of 2 tensors, got 1 values"


def test_a_stub_raising_inside_another_error_still_reads_not_implemented():
    def kernel_stub(x):  # what Triton's interpreter does with a stub's NotImplementedError
        try:
            raise NotImplementedError()
        except NotImplementedError as error:
            raise RuntimeError("interpreter failed") from error

    message = failure(kernel_stub, case(torch.zeros(1), torch.zeros(1)))
    assert message == "ex: not implemented yet: replace the `raise NotImplementedError()` line with your code"
