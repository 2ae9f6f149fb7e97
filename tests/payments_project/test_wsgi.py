"""The WSGI module gunicorn loads (payments_project.wsgi)."""

import gc

import payments_project.wsgi  # noqa: F401 - what a web process loads


def test_the_loaded_project_is_kept_out_of_the_garbage_collectors_scans() -> None:
    # A full collection would otherwise walk every object of the loaded project, stopping every thread of
    # the worker for about half a second (issue 17's webhook p99).
    assert gc.get_freeze_count() > 100_000
