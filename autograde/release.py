"""``attention-course release``: generate the student version of every lesson into ``lessons/``.

For each lesson, nbgrader's ``generate_assignment`` turns the instructor's notebook into the
student's (solutions replaced by stubs, hidden tests removed, outputs cleared, checksums recorded).
The release then adds, beside the notebook, the expected outputs of its visible tests
(``visible_cases.pt``) and the student kit, the package ``course_kit`` (checking, plotting, data,
training and measuring helpers; no reference implementation). With only a lesson's folder and the
public packages (torch, numpy, matplotlib, jupyterlab) a student can run every visible test.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import course_kit
from autograde.course import materialise_source, nbgrader_api, nbgrader_failure
from autograde.lessons import LESSONS, Lesson

KIT_DIR = Path(course_kit.__file__).resolve().parent


def kit_files() -> list[Path]:
    """The student kit's files, relative to its folder: every module of ``course_kit``."""
    return sorted(path.relative_to(KIT_DIR) for path in KIT_DIR.rglob("*.py") if "__pycache__" not in path.parts)


def write_student_kit(folder: Path) -> None:
    """Copy the student kit into ``folder/course_kit``."""
    for relative in kit_files():
        target = folder / KIT_DIR.name / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(KIT_DIR / relative, target)


class ReleaseError(RuntimeError):
    pass


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
            write_student_kit(target)
            written.append(target)
    return written
