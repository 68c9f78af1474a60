"""Student kit of course_lib, shipped with each lesson of the course.

It holds only what the lesson's visible tests and plots need: the checking helpers, the heatmap
plot, the toy data and the time and memory measurements. The reference implementations live in the full course_lib, which a student
does not need to work through the lesson.
"""
