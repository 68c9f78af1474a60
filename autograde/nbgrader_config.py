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

# Per-cell limit while grading: the longest cell of a lesson takes a few seconds; a student's
# infinite loop is interrupted after this and the cell scores 0.
c.Execute.timeout = 60
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
