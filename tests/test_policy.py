"""What submitted code may use: every way around the grader is refused by name and line; honest code passes."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from autograde.course import read_source_notebook
from autograde.demo import fill_in, sample_students
from autograde.lessons import LESSONS
from autograde.policy import check_notebook, instructor_sources

PROJECT = Path(__file__).resolve().parents[1]
SETUP = ("import torch\nimport torch.nn.functional as F\nimport numpy as np\n"
         "from course_kit.checks import check_exercise")


def notebook(*sources: str, locked_setup: bool = True) -> nbformat.NotebookNode:
    setup = nbformat.v4.new_code_cell(SETUP, metadata={"nbgrader": {"locked": locked_setup}})
    return nbformat.v4.new_notebook(cells=[setup, *(nbformat.v4.new_code_cell(s) for s in sources)])


def violations(*sources: str) -> list[str]:
    return [str(v) for v in check_notebook(notebook(*sources), set())]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda l: l.id)
def test_the_sample_class_and_the_instructors_cells_pass(lesson):
    released = nbformat.read(PROJECT / "lessons" / lesson.id / f"{lesson.notebook}.ipynb", as_version=4)
    instructors = instructor_sources(read_source_notebook(PROJECT, lesson))
    for student, answers in sample_students(PROJECT, lesson).items():
        submitted = released if answers is None else fill_in(released, answers)
        assert check_notebook(submitted, instructors) == [], student


@pytest.mark.parametrize("code, named", [
    ("import ctypes\nctypes.CDLL(None)", "`import ctypes`"),
    ("import os\nos.listdir('.')", "`import os`"),
    ("import threading", "`import threading`"),
    ("import subprocess", "`import subprocess`"),
    ("from torch._refs import softmax", "`torch._refs.softmax` is not allowed"),
    ("y = torch._masked_softmax(x, m, 1, 0)", "`._masked_softmax`: private parts"),
    ("t = torch\ny = t._C._nn", "`._C`: private parts"),
    ("d = F.__dict__", "`.__dict__`: special attributes"),
    ("f = getattr(torch, 'soft' + 'max')", "`getattr` is not allowed"),
    ("exec('import os')", "`exec` is not allowed"),
    ("x = open('/etc/passwd').read()", "`open` is not allowed"),
    ("k = vars(torch)", "`vars` is not allowed"),
    ("x = torch.load('inputs.pt')", "`torch.load` is not allowed"),
    ("a = np.load('x.npy')", "`numpy.load` is not allowed"),
    ("fut = torch.jit.fork(lambda: 1)", "`torch.jit.fork` is not allowed"),
    ("from torch.utils.data import DataLoader", "`torch.utils.data.DataLoader` is not allowed"),
    ("import course_kit.answers as a", "`course_kit.answers` is not allowed"),
    ("torch.softmax = lambda x, d: x", "changes a module"),
    ("F.softmax.__code__", "`.__code__`: special attributes"),
    ("%timeit 1", "IPython magics"),
    ("!ls", "IPython magics"),
    ("import triton\nimport triton.language as tl\nimport math\n@triton.jit\ndef k(x):\n    y = math.exp(x)\n",
     "the Triton kernel `k` calls `math.exp`"),
    ("import triton\nimport triton.language as tl\nhelper = torch\n@triton.jit\ndef k(x):\n    y = helper.exp(x)\n",
     "the Triton kernel `k` calls `helper.exp`"),
])
def test_a_way_around_the_grader_is_refused_with_its_cell_and_line(code, named):
    found = violations(code)
    assert found and any(named in v for v in found), found
    assert all(v.startswith("cell 2, line ") for v in found)


def test_plain_code_on_torch_numpy_and_math_passes():
    honest = '''
import math
from functools import partial
class Attention(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self._scale = 1 / math.sqrt(d)
    def forward(self, q, k, v):
        scores = q @ k.transpose(-2, -1) * self._scale
        weights = (scores - scores.amax(-1, keepdim=True)).exp()
        return (weights / weights.sum(-1, keepdim=True)) @ v
def softmax(x, dim=-1):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)
print(np.mean([1, 2]), F.relu(torch.ones(2)))
'''
    assert violations(honest) == []


def test_a_triton_kernel_may_call_triton_its_tensors_methods_and_other_kernels():
    kernel = '''
import triton
import triton.language as tl
@triton.jit
def helper(x):
    return tl.exp(x)
@triton.jit
def kernel(X, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(X + offsets, mask=offsets < n)
    y = helper(x).to(tl.float32)
    for i in range(2):
        y = tl.maximum(y, 0.0)
    raise NotImplementedError()
'''
    assert violations(kernel) == []


def test_the_instructors_own_cells_are_not_the_students_code():
    instructor = "import inspect\nprint(inspect.getsource(F.softmax))"
    submitted = notebook(instructor, "import inspect")
    assert [str(v) for v in check_notebook(submitted, {instructor})] == [
        "cell 3, line 1: `import inspect`: submitted code may import only IPython, abc, bisect, cmath, collections, "
        "copy, course_kit, dataclasses, enum, functools, heapq, itertools, math, matplotlib, numbers, numpy, random, "
        "statistics, string, textwrap, time, torch, tqdm, triton, typing, warnings"]
