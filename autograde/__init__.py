"""autograde: the grader of "Attention, from dot-product to FlashAttention", and its command line.

From the instructor's notebooks to a graded class, in nbgrader's own workflow:

- ``lessons``: the course's lessons, the one list every command reads;
- ``course``: the bridge to nbgrader (course root, configuration, API);
- ``release``: ``lessons/`` generated from ``solutions/``, with each lesson's visible cases and the
  student kit (``course_kit``);
- ``exercises``: every graded exercise, its cases and the reference (``course_lib``) that answers them;
- ``sandbox``, ``execution``, ``verdict``, ``grade``: a class graded in sandboxes and judged outside
  them (``THREAT_MODEL.md``); ``demo``: the bundled sample class; ``validate``: a student's check;
- ``cli``: ``attention-course``, the single entry point; ``bench``: the attention benchmark.

It imports the reference library and the student kit; neither imports it.
"""
