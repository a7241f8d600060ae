"""nbgrader configuration: ``autograder/`` is the nbgrader course root.

``python -m autograder release`` runs ``nbgrader generate_assignment`` with this file on a
temporary copy of the course (so no ``gradebook.db`` or ``release/`` lands in the repository).
Instructors who prefer nbgrader's own tools (formgrader, ``nbgrader autograde``) can run them
from this folder; ``python -m autograder grade`` is the supported grading path.
"""

c = get_config()  # noqa: F821 (injected by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "pruning-quant-lab"
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"

# What a student sees in place of a solution region.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.begin_solution_delimeter = "BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "END SOLUTION"
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"

# For plain `nbgrader autograde`: the smoke profile keeps a lab under two minutes.
c.Execute.timeout = 300
c.Execute.interrupt_on_timeout = True
