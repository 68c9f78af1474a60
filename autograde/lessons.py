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
        id="lesson2_additive",
        notebook="additive_attention",
        title="Additive attention",
        teaches="Bahdanau's additive score and Luong's multiplicative ones, masking padded keys, "
        "a GRU encoder-decoder with attention trained on dates, alignment heatmaps, the fixed-vector bottleneck",
    ),
    Lesson(
        id="lesson3_multihead",
        notebook="multihead_attention",
        title="Multi-head attention and positions",
        teaches="why several heads and what they cost, splitting and merging heads (drawn), multi-head self- "
        "and cross-attention checked against nn.MultiheadAttention, self-attention against recurrence and "
        "convolution (measured), permutation equivariance, sinusoidal and rotary positions, the causal "
        "mask, decoding with a KV cache and RoPE at absolute positions, the cache's memory (GQA), a tiny "
        "pre-LN transformer trained to reverse sequences, a layer-by-head grid of attention maps",
    ),
    Lesson(
        id="lesson4_flash",
        notebook="flash_attention",
        title="GPU-efficient attention",
        teaches="memory traffic and the roofline, naive attention's N^2 memory measured, chunked attention, "
        "the online softmax, FlashAttention-2's tiled forward and backward, the causal tile skip, Triton "
        "kernels from a vector operation, a row-wise softmax and a tiled matmul to FlashAttention's forward, "
        "which SDPA kernel PyTorch picks, benchmarks",
    ),
)


class UnknownLesson(ValueError):
    """A lesson id that is not one of the course's (a user's mistake, reported without a traceback)."""


def get_lesson(lesson_id: str) -> Lesson:
    """The lesson called ``lesson_id``, with a clear error naming the lessons that exist."""
    for lesson in LESSONS:
        if lesson.id == lesson_id:
            return lesson
    known = ", ".join(lesson.id for lesson in LESSONS)
    raise UnknownLesson(f"no lesson called {lesson_id!r}; the course has: {known}")
