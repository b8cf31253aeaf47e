"""The convnet autograder: runs a submission in sandboxed children and scores it (``python -m grader``)."""
