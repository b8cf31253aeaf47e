"""The parent's file handling: unnamed output files, and removal that never follows or recurses."""
from __future__ import annotations

import os

from grader.sandbox.files import output_file, read_output, remove_tree


def test_output_files_are_unnamed_and_bounded(tmp_path):
    fd = output_file(tmp_path)
    try:
        assert list(tmp_path.iterdir()) == []  # nothing names it
        os.write(fd, b"x" * 20_000)
        text = read_output(fd, limit=100)
        assert text.startswith("x" * 100) and "19900 more bytes truncated" in text
    finally:
        os.close(fd)


def test_remove_tree_removes_links_fifos_and_deep_trees_without_touching_targets(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    job = tmp_path / "job"
    (job / "a" / "b").mkdir(parents=True)
    os.symlink(outside, job / "a" / "dirlink")
    os.symlink(outside / "keep.txt", job / "a" / "b" / "filelink")
    os.mkfifo(job / "a" / "fifo")
    os.symlink(".", job / "loop")
    fd = os.open(job, os.O_RDONLY)
    for _ in range(3000):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    remove_tree(job)
    assert not job.exists()
    assert (outside / "keep.txt").read_text() == "keep"
    remove_tree(job)  # a missing tree is fine
