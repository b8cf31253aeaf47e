"""Running untrusted student code: submissions, sandboxed children, and the wire between them.

The parent (the grader) is trusted; every child runs student code and is
trusted with nothing. :mod:`~grader.sandbox.submission` reads a submission
without importing it; :mod:`~grader.sandbox.runner` assembles each child's
package, starts it locked in (:mod:`~grader.sandbox.isolation` lists what
each layer guarantees) and exchanges frames with it over pipes
(:mod:`~grader.sandbox.wire`, :mod:`~grader.sandbox.process`); the child's
side is :mod:`~grader.sandbox.child`. Model checks get the reference layers
served by the parent (:mod:`~grader.sandbox.oracle`), never their code.
"""
from grader.sandbox.isolation import layers_available
from grader.sandbox.runner import Answer, ChildRun, Sandbox, ServeChild, check_answer
from grader.sandbox.submission import (STUDENT_FILES, Submission, graded_files, load_submission, reference_dir,
                                       reference_submission, source_for)

__all__ = ["Sandbox", "ServeChild", "ChildRun", "Answer", "check_answer", "Submission", "load_submission",
           "reference_submission", "reference_dir", "graded_files", "source_for", "STUDENT_FILES",
           "layers_available"]
