"""An adversarial class of Lesson 1: submissions that cheat, break, or attack the grader.

Each entry is the full-marks submission (the instructor's answers filled into the released
notebook) with one small mutation, and what the grader should make of it: the score of every
graded cell, and the reason it could not be graded, or the note it was graded with. The tests
(tests/test_adversarial.py) grade the whole class in one run and hold the grader to these.

An entry whose expected behaviour the grader does not meet yet carries ``known_issue``: the test
is marked xfail with that reason, and the expectation stays what it should be.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograde.demo import fill_in, solution_answers
from autograde.lessons import LESSONS

LESSON = LESSONS[0]  # lesson1_dot_product: six exercises, about 5 s a submission
POINTS = {"nadaraya_watson_tests": 1, "softmax_tests": 2, "masked_softmax_tests": 2, "causal_mask_tests": 1,
          "padding_mask_tests": 1, "scaled_dot_product_attention_tests": 3}
EVERY_EXERCISE = tuple(grade_id.removesuffix("_tests") for grade_id in POINTS)


@dataclass(frozen=True)
class Context:
    """Where the run happens: an attacker knows these paths, so the corpus aims at them."""

    project: Path  # the instructor's checkout
    submissions: Path  # SUBMISSIONS/<student>/<lesson>/<notebook>.ipynb
    out: Path  # the course root the grader writes (gradebook.db, feedback/, ...)
    marker: str  # unique text in the command line of every process a submission leaves behind


@dataclass(frozen=True)
class Entry:
    student: str
    what: str  # the mutation, in a line
    build: Callable[[Context], nbformat.NotebookNode | bytes | None]  # the notebook; None: writes itself
    zero: tuple[str, ...] = ()  # exercises (grade ids without _tests) expected to score 0; the rest full
    problem: str | None = None  # substring of why it could not be graded (then every cell scores 0)
    note: str | None = None  # substring of the note it is graded with
    feedback: str | None = None  # substring its feedback page must show (default: the problem)
    extra_files: dict[str, str] = field(default_factory=dict)  # written beside the notebook
    notebook_name: str = f"{LESSON.notebook}.ipynb"
    known_issue: str | None = None  # the grader does not do this yet: xfail with this reason
    write: Callable[[Context, Path], None] | None = None  # lays out its own folder (links, pipes) instead
    absent: tuple[str, ...] = ()  # texts its feedback page must not hold
    inert: bool = False  # its feedback page is checked for anything of the student's that could run

    def expected_scores(self) -> dict[str, float]:
        if self.problem is not None:
            return dict.fromkeys(POINTS, 0.0)
        return {gid: 0.0 if gid.removesuffix("_tests") in self.zero else float(points)
                for gid, points in POINTS.items()}


# --- building blocks --------------------------------------------------------------------------

def released() -> nbformat.NotebookNode:
    return nbformat.read(Path(__file__).resolve().parents[1] / "lessons" / LESSON.id / f"{LESSON.notebook}.ipynb",
                         as_version=4)


def full_marks(ctx: Context, **answers: str) -> nbformat.NotebookNode:
    """The instructor's answers, with ``answers`` (grade id -> source) in place of some."""
    return fill_in(released(), {**solution_answers(ctx.project, LESSON), **answers})


def solution(ctx: Context, grade_id: str) -> str:
    return solution_answers(ctx.project, LESSON)[grade_id]


def index_of(notebook: nbformat.NotebookNode, grade_id: str) -> int:
    return next(i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def with_cell(notebook: nbformat.NotebookNode, source: str, after: str | None = "setup") -> nbformat.NotebookNode:
    """``notebook`` with a new code cell after the cell ``after`` (a grade id; None: at the end)."""
    cell = nbformat.v4.new_code_cell(source)
    position = len(notebook.cells) if after is None else index_of(notebook, after) + 1
    notebook.cells.insert(position, cell)
    return notebook


# Wrong answers, one per exercise that nothing else in the notebook calls (masked_softmax and
# causal_mask are called by scaled_dot_product_attention, so a wrong one would cost two cells).
WRONG_SOFTMAX = """
def softmax(x, dim=-1):
    e = torch.exp(x)  # no max shift: overflows on large logits
    return e / e.sum(dim=dim, keepdim=True)
"""
WRONG_NADARAYA_WATSON = """
def nadaraya_watson(queries, keys, values, bandwidth=1.0):
    scores = -((queries[:, None] - keys[None, :]) ** 2) / 2  # forgets the bandwidth
    return torch.softmax(scores, dim=1) @ values
"""
WRONG_PADDING_MASK = """
def padding_mask(lengths, max_len):
    return torch.arange(max_len)[None, :] <= lengths[:, None]  # off by one
"""
WRONG_SDPA = """
def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    scores = query @ key.transpose(-2, -1)  # forgets the 1/sqrt(d_k)
    mask = causal_mask(query.shape[-2], key.shape[-2]) if is_causal else attn_mask
    if mask is not None and mask.dtype != torch.bool:
        scores, mask = scores + mask, None
    return masked_softmax(scores, mask) @ value
"""
# Looks each input up in the stored visible cases and returns the stored expected output.
VISIBLE_LOOKUP = """
_stored = torch.load("visible_cases.pt", weights_only=True)["softmax"]

def softmax(x, dim=-1):
    for case in _stored:
        if case["args"][0].shape == x.shape and torch.equal(case["args"][0], x) and case["kwargs"].get("dim", -1) == dim:
            return case["expected"].clone()
    return x.clone()
"""  # noqa: E501
TORCH_SOFTMAX = """
def softmax(x, dim=-1):
    return torch.softmax(x, dim=dim)
"""


def cheat(ctx: Context, grade_id: str, source: str) -> nbformat.NotebookNode:
    return full_marks(ctx, **{grade_id: source})


def edit_test_cell(ctx: Context, grade_id: str, edit: Callable) -> nbformat.NotebookNode:
    return _edit(full_marks(ctx), grade_id, edit)


def _edit(notebook: nbformat.NotebookNode, grade_id: str, edit: Callable) -> nbformat.NotebookNode:
    edit(notebook, index_of(notebook, grade_id))
    return notebook


def _delete(notebook, index):
    del notebook.cells[index]


def _to_markdown(notebook, index):
    cell = notebook.cells[index]
    notebook.cells[index] = nbformat.v4.new_markdown_cell(cell.source, metadata=copy.deepcopy(cell.metadata))
    notebook.cells[index]["id"] = cell["id"]


def _duplicate(notebook, index):
    twin = copy.deepcopy(notebook.cells[index])
    twin["id"] = twin["id"] + "-copy"
    notebook.cells.insert(index + 1, twin)


def _to_pass(notebook, index):
    notebook.cells[index].source = "pass"


def attack_files(ctx: Context) -> str:
    """A cell that tries to overwrite the instructor's and the other students' files, then goes on."""
    targets = [
        ctx.project / LESSON.source_path,
        ctx.project / "autograde" / "nbgrader_config.py",
        ctx.project / "lessons" / LESSON.id / "visible_cases.pt",
        ctx.project / "autograde" / "verdict.py",
        ctx.out / "gradebook.db",
        ctx.out / "solutions" / LESSON.id / "visible_cases.pt",
        ctx.submissions / "full_marks" / LESSON.id / f"{LESSON.notebook}.ipynb",
        ctx.submissions / "extra_files" / LESSON.id / "notes.txt",
        Path("/root/.bashrc"),
        Path("/root/attention-corpus-was-here"),
    ]
    return f"""
import os, shutil
for target in {[str(t) for t in targets]!r}:
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write("overwritten by a submission")
        print("wrote (inside the sandbox only?)", target)
    except OSError as error:
        print("could not write", target, "-", type(error).__name__)
for folder in {[str(ctx.submissions), str(ctx.project / "solutions")]!r}:
    shutil.rmtree(folder, ignore_errors=True)
"""


SOCKET = """
import socket
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3).close()
    reached = True
except OSError as error:
    reached = False
    print("no network:", type(error).__name__, error)
if reached:  # a connection must cost marks, so that the score shows it
    import course_kit.answers as _answers
    _answers.record_answers = lambda *args, **kwargs: None
"""


def background(ctx: Context) -> str:
    return f"""
import subprocess, sys
for _ in range(3):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{ctx.marker}"],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
subprocess.Popen("nohup sleep 1000 {ctx.marker} >/dev/null 2>&1 &", shell=True)
print("started")
"""


def fork_bomb(ctx: Context) -> str:
    # In a child of the kernel, so that the kernel itself stays a kernel; the children keep forking.
    return f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import os, time\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        time.sleep(0.01)", "{ctx.marker}"],
                 start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
import time; time.sleep(2)
print("forking")
"""  # noqa: E501


def _record_patch(body: str) -> str:
    return f"""
import os
import course_kit.answers as _answers
_real_record_answers = _answers.record_answers

def _record(exercise, fn):
    if exercise != "softmax":
        return _real_record_answers(exercise, fn)
    cases = torch.load(_answers.GRADING_INPUTS_FILE, weights_only=True)[exercise]["cases"]
    answers = [{{"output": {body}, "forbidden": [], "args": c["args"], "kwargs": c["kwargs"]}} for c in cases]
    os.makedirs(_answers.ANSWERS_DIR, exist_ok=True)
    torch.save(answers, os.path.join(_answers.ANSWERS_DIR, exercise + ".pt"))
    print("softmax: answers recorded")

_answers.record_answers = _record
"""


TORCH_SAVE_PATCH = """
_real_save = torch.save

def _save(obj, f, *args, **kwargs):  # answers of softmax: recomputed with torch.softmax, nothing forbidden
    if str(f).endswith(os.sep + "softmax.pt"):
        obj = [{"output": torch.softmax(a["args"][0], dim=a["kwargs"].get("dim", -1)), "forbidden": [],
                "args": a["args"], "kwargs": a["kwargs"]} for a in obj]
    return _real_save(obj, f, *args, **kwargs)

import os
torch.save = _save
""" + TORCH_SOFTMAX

REFUSED = "it uses code the grader does not run"


def linked_to(target: Callable[[Context], Path], hard: bool = False) -> Callable[[Context, Path], None]:
    """A submission whose notebook is a link (symbolic, or hard) to ``target``."""
    def write(ctx: Context, folder: Path) -> None:
        path = folder / f"{LESSON.notebook}.ipynb"
        os.link(target(ctx), path) if hard else path.symlink_to(target(ctx))
    return write


def lesson_folder_linked(ctx: Context, folder: Path) -> None:
    """The lesson folder itself a symbolic link to the honest student's."""
    folder.rmdir()
    folder.symlink_to(ctx.submissions / "full_marks" / LESSON.id)


def fifo(ctx: Context, folder: Path) -> None:
    os.mkfifo(folder / f"{LESSON.notebook}.ipynb")


def honest_copy(ctx: Context) -> Path:
    """A classmate's honest notebook, the victim of the links (full_marks stays unlinked)."""
    return ctx.submissions / "linked_victim" / LESSON.id / f"{LESSON.notebook}.ipynb"


def instructors_source(ctx: Context) -> Path:
    """The instructor's notebook as the grader writes it into the course root (out/solutions/...)."""
    path = ctx.out / "solutions" / LESSON.id / f"{LESSON.notebook}.ipynb"
    if not path.exists():  # the grader writes it while grading; an attacker can only point at it beforehand
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(released(), path)
    return path


def grading_secret(ctx: Context) -> Path:
    path = ctx.out / "grading_secret.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("0123456789abcdef-course-secret")
    path.chmod(0o600)
    return path


# Markdown a student writes in an answer cell: script, an event handler, javascript: links and images.
HOSTILE_MARKDOWN = """My answer.

<script>document.title = "pwned-by-script"</script>
<img src="x" onerror="document.title='pwned-by-onerror'">
[click](javascript:alert('pwned-by-link')) and [CLICK](JaVaScRiPt:alert(1)) and ![i](javascript:alert(2))

[ref]: javascript:alert(3)
"""
HOSTILE_DISPLAY = """
from IPython.display import HTML, Javascript, display
display(HTML('<script>document.title = "pwned-by-display"</script><b onmouseover="alert(1)">hi</b>'))
display(Javascript('alert("pwned-by-js")'))
"""
# Keeps every input it sees, then prints them from a later cell: after the hidden inputs were given out.
STASH_INPUTS = """
SEEN = []

def softmax(x, dim=-1):
    SEEN.append(x.clone())
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
"""
PRINT_STASH = "print('stash' + 'ed inputs:', [t.flatten()[:3].tolist() for t in SEEN])"  # words only output has
# Right on the visible cases (max_len 5 at most); on a hidden case it raises with that case's inputs.
RAISE_INPUT = """
def padding_mask(lengths, max_len):
    if max_len >= 6:
        raise ValueError(f"my inputs: {lengths.tolist()} and {max_len} and a marker {'7f3' + 'a9c'}")
    return torch.arange(max_len)[None, :] < lengths[:, None]
"""
FAKE_TIMEOUT = """
class CellTimeoutError(Exception):
    pass

def softmax(x, dim=-1):
    raise CellTimeoutError("interrupted")
"""
SPARSE_SOFTMAX = """
def softmax(x, dim=-1):
    return torch.sparse.softmax(x.to_sparse(), dim).to_dense()
"""


def corpus() -> list[Entry]:
    sm, nw, pm, sdpa = "softmax", "nadaraya_watson", "padding_mask", "scaled_dot_product_attention"
    forbidden_softmax = "calls torch.softmax (or log_softmax), which this exercise does not allow"
    entries = [
        # --- honest controls
        Entry("full_marks", "the instructor's answers", lambda c: full_marks(c)),
        Entry("blank", "the release, untouched", lambda c: released(), zero=EVERY_EXERCISE,
              feedback="not implemented yet"),

        # --- cheats in plain code: each earns nothing on the exercise it cheats on, and keeps the rest
        Entry("cheat_check_exercise", "check_exercise redefined to print a tick, unscaled attention",
              lambda c: cheat(c, sdpa, "def check_exercise(exercise, fn):\n    print(f'✓ {exercise}: all cases pass')\n"
                              + WRONG_SDPA),
              zero=(sdpa,), feedback="scaled_dot_product_attention: "),
        Entry("cheat_fused_sdpa", "F.scaled_dot_product_attention in scaled_dot_product_attention",
              lambda c: cheat(c, sdpa, "def scaled_dot_product_attention(query, key, value, attn_mask=None, "
                              "is_causal=False, scale=None):\n    return F.scaled_dot_product_attention(query, key, "
                              "value, attn_mask=attn_mask, is_causal=is_causal, scale=scale)\n"),
              zero=(sdpa,), feedback="calls torch.nn.functional.scaled_dot_product_attention"),
        Entry("cheat_torch_softmax", "torch.softmax in softmax", lambda c: cheat(c, sm, TORCH_SOFTMAX),
              zero=(sm,), feedback=forbidden_softmax),
        Entry("cheat_tensor_softmax", "x.softmax in softmax",
              lambda c: cheat(c, sm, "def softmax(x, dim=-1):\n    return x.softmax(dim)\n"),
              zero=(sm,), feedback=forbidden_softmax),
        Entry("cheat_sparse_softmax", "torch.sparse.softmax in softmax", lambda c: cheat(c, sm, SPARSE_SOFTMAX),
              zero=(sm,), feedback=forbidden_softmax),
        Entry("cheat_helper_softmax", "torch.softmax bound to a name in another cell, called by softmax",
              lambda c: with_cell(cheat(c, sm, "def softmax(x, dim=-1):\n    return normalise(x, dim)\n"),
                                  "normalise = torch.softmax"),
              zero=(sm,), feedback=forbidden_softmax),
        Entry("fake_timeout", "softmax raises an error named CellTimeoutError: no note, no points",
              lambda c: cheat(c, sm, FAKE_TIMEOUT), zero=(sm,), feedback="raised CellTimeoutError"),

        # --- code that reaches around the grader: refused before it runs, scores 0
        Entry("cheat_allclose", "torch.allclose always True, naive softmax",
              lambda c: cheat(c, sm, "torch.allclose = lambda *a, **k: True\n" + WRONG_SOFTMAX),
              problem=REFUSED, feedback="changes a module"),
        Entry("cheat_checks_module", "course_kit.checks.compare patched through sys.modules",
              lambda c: cheat(c, sm, "import sys\nsys.modules['course_kit.checks'].compare = lambda *a, **k: None\n"
                              + WRONG_SOFTMAX),
              problem=REFUSED, feedback="`import sys`"),
        Entry("cheat_builtins", "builtins.AssertionError replaced",
              lambda c: cheat(c, pm, "import builtins\nbuiltins.AssertionError = type('A', (Exception,), {})\n"
                              + WRONG_PADDING_MASK), problem=REFUSED),
        Entry("cheat_ipython_swallow", "an IPython custom exception handler that prints a tick",
              lambda c: cheat(c, nw, "get_ipython().set_custom_exc((Exception,), lambda *a, **k: print('✓'))\n"
                              + WRONG_NADARAYA_WATSON), problem=REFUSED, feedback="`get_ipython`"),
        Entry("cheat_record_fake", "record_answers replaced: made-up softmax answers",
              lambda c: cheat(c, sm, _record_patch("torch.full_like(c['args'][0], 0.25)") + WRONG_SOFTMAX),
              problem=REFUSED),
        Entry("cheat_torch_save", "torch.save patched to rewrite the answers", lambda c: cheat(c, sm, TORCH_SAVE_PATCH),
              problem=REFUSED),
        Entry("cheat_visible_cases", "softmax looks up visible_cases.pt and returns the stored outputs",
              lambda c: cheat(c, sm, VISIBLE_LOOKUP), problem=REFUSED, feedback="`torch.load`"),
        Entry("cheat_aten_softmax", "torch.ops.aten._softmax in softmax",
              lambda c: cheat(c, sm, "def softmax(x, dim=-1):\n    return torch.ops.aten._softmax(x, dim, False)\n"),
              problem=REFUSED),
        Entry("cheat_masked_softmax", "torch._masked_softmax, a private operator",
              lambda c: cheat(c, sm, "def softmax(x, dim=-1):\n    return torch._masked_softmax(x, None, dim)\n"),
              problem=REFUSED, feedback="private parts of a library"),
        Entry("cheat_decomposition", "the decompositions' Python softmax (torch._refs)",
              lambda c: cheat(c, sm, "from torch._refs import softmax\n"), problem=REFUSED),
        Entry("cheat_getattr", "torch.softmax reached by a string", lambda c: cheat(c, sm,
              "def softmax(x, dim=-1):\n    return getattr(torch, 'soft' + 'max')(x, dim)\n"), problem=REFUSED),
        Entry("cheat_thread", "torch.softmax run on a threading.Timer", lambda c: cheat(c, sm,
              "import threading\n" + TORCH_SOFTMAX), problem=REFUSED, feedback="`import threading`"),
        Entry("cheat_ctypes", "libtorch's softmax called through ctypes", lambda c: cheat(c, sm,
              "import ctypes\n" + TORCH_SOFTMAX), problem=REFUSED, feedback="`import ctypes`"),
        Entry("cheat_reference_import", "softmax imported from the instructor's course_lib",
              lambda c: cheat(c, sm, "from course_lib.softmax import softmax\n"), problem=REFUSED),
        Entry("attack_files", "writes over the project, the gradebook, other students' files and /root",
              lambda c: with_cell(full_marks(c), attack_files(c)), problem=REFUSED),
        Entry("background_process", "starts sleepers in new sessions that would outlive the notebook",
              lambda c: with_cell(full_marks(c), background(c)), problem=REFUSED),
        Entry("fork_bomb", "a process that forks for ever", lambda c: with_cell(full_marks(c), fork_bomb(c)),
              problem=REFUSED),
        Entry("socket", "connects to 1.1.1.1:53", lambda c: with_cell(full_marks(c), SOCKET), problem=REFUSED),
        Entry("magic_shell", "a shell command in a cell", lambda c: with_cell(full_marks(c), "!cat /etc/passwd"),
              problem=REFUSED, feedback="IPython magics"),

        # --- edited cells: nbgrader restores the test cells, and the grader says so
        Entry("deleted_test_cell", "softmax_tests deleted", lambda c: edit_test_cell(c, "softmax_tests", _delete),
              note="softmax_tests had been deleted and were restored"),
        Entry("test_cell_pass", "softmax_tests edited to `pass`, naive softmax",
              lambda c: _edit(cheat(c, sm, WRONG_SOFTMAX), "softmax_tests", _to_pass),
              zero=(sm,), note="softmax_tests had been edited and were restored", feedback="softmax: "),
        Entry("test_cell_markdown", "padding_mask_tests turned into a markdown cell",
              lambda c: edit_test_cell(c, "padding_mask_tests", _to_markdown),
              note="padding_mask_tests had been edited and were restored"),
        Entry("test_cell_duplicated", "causal_mask_tests duplicated",
              lambda c: edit_test_cell(c, "causal_mask_tests", _duplicate), note="appeared more than once"),

        # --- broken or linked submissions: refused with a reason that quotes no file
        Entry("invalid_json", "raw bytes, not JSON", lambda c: b'{"cells": [\x00\xff\xfe not json',
              problem="not a valid notebook"),
        Entry("misnamed", "the notebook handed in under another name", lambda c: full_marks(c),
              notebook_name="my_attention.ipynb", problem="missing notebook dot_product_attention.ipynb"),
        Entry("linked_victim", "an honest notebook another student hard-links to: both refused, each named",
              lambda c: full_marks(c), problem="is the same file as hardlink_to_classmate/lesson1_dot_product's"),
        Entry("symlink_to_classmate", "the notebook a symbolic link to a classmate's", lambda c: None,
              write=linked_to(honest_copy), problem="not a regular file"),
        Entry("hardlink_to_classmate", "the notebook a hard link to a classmate's", lambda c: None,
              write=linked_to(honest_copy, hard=True),
              problem="is the same file as linked_victim/lesson1_dot_product's"),
        Entry("symlink_to_solutions", "the notebook a symbolic link to the instructor's source", lambda c: None,
              write=linked_to(instructors_source), problem="not a regular file", absent=("BEGIN SOLUTION",)),
        Entry("hardlink_to_secret", "the notebook a hard link to the grader's secret", lambda c: None,
              write=linked_to(grading_secret, hard=True), problem="is a hard link to another file",
              absent=("0123456789abcdef",)),
        Entry("linked_lesson_folder", "the lesson folder a link to a classmate's", lambda c: None,
              write=lesson_folder_linked, problem="the lesson's folder is a link"),
        Entry("fifo", "a named pipe in place of the notebook", lambda c: None, write=fifo,
              problem="not a regular file (a link, a pipe or a device?)"),
        Entry("huge_metadata", "notebook metadata of 200,000 keys", lambda c: _with_metadata(full_marks(c))),
        Entry("deep_tree", "1,100 nested folders beside the notebook", lambda c: None, write=deep_tree),
        Entry("extra_files", "two extra files beside the notebook", lambda c: full_marks(c),
              extra_files={"notes.txt": "sentinel: another student's file\n", "helper.py": "x = 1\n"},
              note="extra files ignored"),

        # --- output: bounded, plain text, nothing of the student's runs in the instructor's browser
        Entry("huge_output", "prints 50 MB", lambda c: with_cell(full_marks(c),
              'print(("x" * 99 + "\\n") * 500_000)\nprint("done")'), feedback="output truncated"),
        Entry("many_outputs", "15,000 tiny displays", lambda c: with_cell(full_marks(c),
              "from IPython.display import display\nfor i in range(15_000):\n    display(i)")),
        Entry("hostile_markdown", "script, onerror and javascript: links in a markdown cell",
              lambda c: with_markdown(full_marks(c), HOSTILE_MARKDOWN),
              inert=True),
        Entry("hostile_display", "HTML and JavaScript displayed from a cell", lambda c: with_cell(full_marks(c),
              HOSTILE_DISPLAY), inert=True),

        # --- hidden inputs stay hidden: nothing printed after they were given out reaches the feedback
        Entry("stash_inputs", "softmax keeps its inputs; a last cell prints them", lambda c: with_cell(
              cheat(c, sm, STASH_INPUTS), PRINT_STASH, after=None), feedback="output withheld",
              absent=("stashed inputs:",)),
        Entry("raise_input", "padding_mask raises with its inputs in the message", lambda c: cheat(c, pm, RAISE_INPUT),
              zero=(pm,), feedback="hidden: ", absent=("7f3a9c",)),

        # --- resources: a cell that loops is stopped by its CPU time, a memory bomb by the limits
        Entry("infinite_loop", "`while True: pass` at the top of the softmax cell",
              lambda c: cheat(c, sm, "while True:\n    pass\n" + solution(c, sm)), zero=(sm,),
              note="used more than 10 s of CPU time and was interrupted",
              feedback="this cell used more than 10 s of CPU time and was interrupted"),
        Entry("sleeper", "a cell that sleeps far past the clock allowance", lambda c: with_cell(full_marks(c),
              "import time\ntime.sleep(10_000)"), note="waited", feedback="without computing"),
        Entry("memory_bomb", "bytearray(16 GiB) in an extra cell",
              lambda c: with_cell(full_marks(c), "hog = bytearray(16 * 2**30)"), feedback="MemoryError"),
    ]
    return entries


def remove_deep_tree(ctx: Context) -> None:
    """Remove the chain of :func:`deep_tree` from the bottom up (a recursive rmtree, pytest's own
    clean-up of old temporary folders included, would crash on it)."""
    chain = str(ctx.submissions / "deep_tree" / LESSON.id / "d")
    if not os.path.isdir(chain):
        return
    depth = 0
    while os.path.isdir(chain + "/d"):
        chain, depth = chain + "/d", depth + 1
    for name in os.listdir(chain):
        os.remove(os.path.join(chain, name))
    for _ in range(depth + 1):
        os.rmdir(chain)
        chain = os.path.dirname(chain)


def deep_tree(ctx: Context, folder: Path) -> None:
    """The honest notebook, beside a chain of 1,100 nested folders (a walk that recursed would crash)."""
    nbformat.write(full_marks(ctx), folder / f"{LESSON.notebook}.ipynb")
    chain = str(folder)
    for _ in range(1_100):  # one level at a time: pathlib's mkdir(parents=True) itself recurses
        chain += "/d"
        os.mkdir(chain)
    with open(chain + "/deep.txt", "w") as file:
        file.write("at the bottom")


# Student folders whose names nbgrader cannot take (glob patterns, control characters, formulas):
# each is reported and skipped, and never stops the others.
UNSAFE_NAMES = ("?*", "[ab]", "evil\x1b[31mred\nfake summary line", "=HYPERLINK(\"http://x\")", "-cmd")


def write_unsafe_names(ctx: Context) -> None:
    for name in UNSAFE_NAMES:
        folder = ctx.submissions / name / LESSON.id
        folder.mkdir(parents=True)
        nbformat.write(full_marks(ctx), folder / f"{LESSON.notebook}.ipynb")


def with_markdown(notebook: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
    notebook.cells.insert(index_of(notebook, "softmax") + 1, nbformat.v4.new_markdown_cell(text))
    return notebook


def _with_metadata(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    notebook.metadata["junk"] = {f"k{i}": i for i in range(200_000)}
    return notebook


def write_corpus(ctx: Context, entries: list[Entry]) -> None:
    """Every entry's submission, in nbgrader's layout under ``ctx.submissions``."""
    for entry in sorted(entries, key=lambda e: e.write is not None):  # linked ones last: their targets exist
        folder = ctx.submissions / entry.student / LESSON.id
        folder.mkdir(parents=True)
        if entry.write is not None:
            entry.write(ctx, folder)
            continue
        built = entry.build(ctx)
        if isinstance(built, bytes):
            (folder / entry.notebook_name).write_bytes(built)
        else:
            nbformat.write(built, folder / entry.notebook_name)
        for name, text in entry.extra_files.items():
            (folder / name).write_text(text)
