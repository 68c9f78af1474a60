"""``attention-course release``: generate the student version of every lesson into ``lessons/``.

For each lesson, nbgrader's ``generate_assignment`` turns the instructor's notebook into the
student's (solutions replaced by stubs, hidden tests removed, outputs cleared, checksums recorded).
The release then adds the *student kit*: the few ``course_lib`` modules the notebook imports that
hold no reference implementation (checking, plotting, toy data, measuring). With only a lesson's folder and
the public packages (torch, numpy, matplotlib, jupyterlab) a student can run every visible test.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from course_lib.grading.course import materialise_source, nbgrader_api, nbgrader_failure
from course_lib.lessons import LESSONS, Lesson

PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The modules of course_lib a release carries, relative to the package: those every lesson needs,
# then each lesson's own (Lesson.kit). They import nothing from course_lib but each other and hold
# no reference solution; tests/test_release.py checks both.
COMMON_KIT = ("plotting.py", "grading/checks.py", "grading/answers.py")
STUDENT_KIT = tuple(dict.fromkeys(COMMON_KIT + tuple(m for lesson in LESSONS for m in lesson.kit)))


def student_kit(lesson: Lesson) -> tuple[str, ...]:
    """The kit modules released with ``lesson``."""
    return COMMON_KIT + lesson.kit


KIT_INIT = '''"""Student kit of course_lib, shipped with each lesson of the course.

It holds only what the lesson's visible tests, plots and training need: the checking helpers, the
heatmap plot, and the lesson's data and training helpers. The reference implementations live in
the full course_lib, which a student does not need to work through the lesson.
"""


def __getattr__(name):
    import importlib
    import pathlib

    here = pathlib.Path(__file__).parent
    if name.startswith("__"):
        raise AttributeError(name)
    if (here / f"{name}.py").is_file() or (here / name / "__init__.py").is_file():
        return importlib.import_module(f"{__name__}.{name}")  # a module of the kit
    raise ImportError(f"{__name__}.{name} is not in the student kit: the course's reference library is "
                      "not available to your notebook (nor while grading). Write it yourself.")
'''


class ReleaseError(RuntimeError):
    pass


def write_student_kit(lesson_dir: Path, lesson: Lesson) -> None:
    """Copy the student kit of ``lesson`` into ``lesson_dir/course_lib``."""
    kit = lesson_dir / "course_lib"
    for module in student_kit(lesson):
        target = kit / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE_DIR / module, target)
        package = target.parent
        while package != lesson_dir:  # e.g. course_lib/grading, then course_lib
            (package / "__init__.py").write_text(KIT_INIT)
            package = package.parent


def release(project: Path, dest: Path, lessons: tuple[Lesson, ...] = LESSONS) -> list[Path]:
    """Regenerate ``dest/<lesson>/`` for ``lessons``; return the lesson folders written."""
    written = []
    with tempfile.TemporaryDirectory(prefix="attention-release-") as tmp:
        course_root = Path(tmp)
        api = nbgrader_api(project, course_root)
        for lesson in lessons:
            materialise_source(project, lesson, course_root)
            result = api.generate_assignment(lesson.id, force=True, create=True)
            if not result["success"]:
                raise ReleaseError(f"nbgrader generate_assignment failed for {lesson.id}: {nbgrader_failure(result)}")
            target = dest / lesson.id
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(course_root / "lessons" / lesson.id, target)
            for path in target.rglob("*"):
                if path.is_file():
                    path.chmod(0o644)  # nbgrader makes released files read-only; git keeps them plain
            write_student_kit(target, lesson)
            written.append(target)
    return written
