# nbgrader configuration of the course, read by every `attention-course` command that runs nbgrader
# (release, autograde, demo). An instructor who drives nbgrader by hand can copy it to a course root.
#
# The course keeps nbgrader's layout (source -> release -> submitted -> autograded -> feedback) and
# renames two steps so that the repository reads as a course: the instructor's notebooks live in
# solutions/ and the student release in lessons/.
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "attention-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "lessons"
# Never copy a student's own `course_kit/` (the student kit that ships with the release) into the
# grading folder: grading uses the instructor's copy of the kit.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "course_kit", "course_lib"]

# What a student sees in place of each solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Limits of each submission's run under `attention-course autograde`, in seconds of CPU time, not of
# the clock, so that a busy grading server costs no student a point (autograde/kernel.py): a cell is
# interrupted past the first (an endless loop scores 0 on what it breaks, the rest runs on), the
# notebook stops past the second. The longest cell of a lesson uses about 20 s (Lesson 2's training).
c.SandboxedExecute.cell_cpu_seconds = 60
c.SandboxedExecute.notebook_cpu_seconds = 600
# Plain nbgrader (run by hand on this course root) limits each cell by the clock instead.
c.Execute.timeout = 120
# Kernel arguments: no history file (nbgrader's default for Python) and no start-up warning about
# TCP transport on every kernel, which would bury the grading summary.
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR"]

# Feedback shows every test cell's output, the failure messages of hidden tests included, but not
# the hidden tests' code: nbgrader's default feedback prints the autograded cell source verbatim.
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import ClearHiddenTests, GetGrades  # noqa: E402

c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]

# A test cell the student deleted is added back (nbgrader's OverwriteCells), so it is graded, and
# reported in the class summary (attention-course autograde).
c.OverwriteCells.add_missing_cells = True
