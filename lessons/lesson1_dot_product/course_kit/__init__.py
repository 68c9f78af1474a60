"""course_kit: the student kit of "Attention, from dot-product to FlashAttention".

What a lesson's notebook imports besides torch: the checking helpers its test cells call
(``checks``), the recorder of answers for the grader (``answers``), heatmaps (``plotting``),
diagrams of the models (``diagrams``), the generated data sets (``data``), the training loop
(``training``), Lesson 2's encoder-decoder scaffolding (``seq2seq``), Lesson 4's
measurements (``measure``) and the launchers of its Triton kernels (``triton_launch``). It holds
no reference implementation of an exercise: those live in ``course_lib``, which the kit never
imports. The release copies this package beside every lesson's notebook, so it imports only the
standard library, torch, numpy and matplotlib (and Triton, where a launcher runs a kernel).
"""

__version__ = "0.2.0"
