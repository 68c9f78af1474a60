"""Student kit of course_lib, shipped with each lesson of the course.

It holds only what the lesson's visible tests, plots and training need: the checking helpers, the
heatmap plot, and the lesson's data and training helpers. The reference implementations live in
the full course_lib, which a student does not need to work through the lesson.
"""
