"""The course's lessons: the one list every command (release, autograde, demo, README table) reads.

A lesson is an nbgrader *assignment*: ``solutions/<id>/<notebook>.py`` is its source, authored in
jupytext's percent format, and ``lessons/<id>/`` is the student release generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    id: str  # nbgrader assignment id and folder name
    notebook: str  # notebook id (file name without extension)
    title: str
    teaches: str  # one line for the README's table

    @property
    def source_path(self) -> str:
        """Path of the instructor's source, relative to the project root."""
        return f"solutions/{self.id}/{self.notebook}.py"


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        id="lesson1_dot_product",
        notebook="dot_product_attention",
        title="Dot-product attention",
        teaches="attention as soft lookup and kernel regression, stable softmax, masks, "
        "scaled dot-product attention, why 1/sqrt(d), heatmaps, permutation equivariance",
    ),
    Lesson(
        id="lesson4_flash",
        notebook="flash_attention",
        title="GPU-efficient attention",
        teaches="memory traffic and the roofline, naive attention's N^2 memory measured, chunked attention, "
        "the online softmax, FlashAttention-2's tiled forward and backward, the causal tile skip, a Triton "
        "kernel, which SDPA kernel PyTorch picks, benchmarks",
    ),
)


def get_lesson(lesson_id: str) -> Lesson:
    """The lesson called ``lesson_id``, with a clear error naming the lessons that exist."""
    for lesson in LESSONS:
        if lesson.id == lesson_id:
            return lesson
    known = ", ".join(lesson.id for lesson in LESSONS)
    raise KeyError(f"no lesson called {lesson_id!r}; the course has: {known}")
