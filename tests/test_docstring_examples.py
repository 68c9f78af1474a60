"""The `>>>` examples in course_lib's docstrings run, and every public function has one."""

import doctest
import importlib
import inspect

import matplotlib
import pytest

import course_lib

matplotlib.use("Agg")  # plot_attention's example draws a figure

MODULES = [
    "course_lib.softmax",
    "course_lib.masks",
    "course_lib.dot_product",
    "course_lib.kernel_regression",
    "course_kit.plotting",
    "course_kit.diagrams",
    "course_kit.data.regression",
    "course_lib.additive",
    "course_lib.decoder",
    "course_kit.data.dates",
    "course_kit.seq2seq",
    "course_lib.multihead",
    "course_lib.positional",
    "course_lib.kv_cache",
    "course_lib.transformer",
    "course_kit.training",
    "course_kit.data.reversal",
    "course_lib.online_softmax",
    "course_lib.chunked",
    "course_lib.flash",
    "course_lib.flash_cpu",
    "course_lib.triton_attention",
    "course_kit.measure",
    "course_kit.diagrams",
]
PUBLIC_FUNCTIONS = [
    name for name in course_lib.__all__ if inspect.isfunction(getattr(course_lib, name))
]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run_and_print_what_they_show(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{module_name} has no >>> examples"
    assert result.failed == 0, f"{result.failed} docstring example(s) in {module_name} failed"


@pytest.mark.parametrize("name", PUBLIC_FUNCTIONS)
def test_public_function_documents_its_shapes_and_shows_an_example(name):
    doc = inspect.getdoc(getattr(course_lib, name)) or ""
    assert "Shapes:" in doc, f"course_lib.{name}'s docstring must list the shapes"
    assert ">>>" in doc, f"course_lib.{name}'s docstring must show a runnable >>> example"
