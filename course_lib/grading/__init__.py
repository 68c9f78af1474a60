"""Release, checking and grading: from the instructor's notebooks to a graded class.

- ``checks``: the checking helpers every test cell calls (shipped to students in the release);
- ``exercises``: the graded exercises, their test cases and the live comparison with the reference;
- ``course``: the bridge to nbgrader (course root, configuration, API);
- ``release``, ``samples``, ``autograde``, ``validate``: the commands of ``attention-course``.
"""
