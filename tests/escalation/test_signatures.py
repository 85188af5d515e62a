"""Error signatures: the same error in any job or repository normalises to one signature; different errors don't."""

import pytest

from escalation.services.signatures import error_line, error_signature, signature_normalise


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (  # numbers and addresses
            'psycopg.OperationalError: connection to server at "10.0.3.7", port 5432 failed: Connection refused',
            'psycopg.OperationalError: connection to server at "10.0.9.12", port 5433 failed: Connection refused',
        ),
        (  # hex ids: container ids and commit shas
            "Error response from daemon: container 4f2a9c81d0e3 is not running",
            "Error response from daemon: container 9bd01c7e55fa is not running",
        ),
        (  # timestamps, GitHub's line prefix included
            "2024-05-14T09:12:33.1234567Z ERROR 2024-05-14 09:12:33,481 worker timed out after 30s",
            "2024-06-01T17:40:02.0000000Z ERROR 2024-06-01 17:40:02,907 worker timed out after 45s",
        ),
        (  # temporary paths
            "FileNotFoundError: [Errno 2] No such file or directory: /tmp/pytest-of-runner/pytest-3/test_a0/out.json",
            "FileNotFoundError: [Errno 2] No such file or directory: /tmp/pytest-of-ci/pytest-17/test_b1/out.json",
        ),
        (  # quoted values
            'django.db.utils.ProgrammingError: relation "cart_item" does not exist',
            'django.db.utils.ProgrammingError: relation "orders" does not exist',
        ),
        (  # CI workspace paths differ per repository
            "/home/runner/work/shop/shop/src/cart.ts(12,5): error TS2322: Type 'string' is not assignable",
            "/builds/acme/billing/src/invoice.ts(80,1): error TS2322: Type 'number' is not assignable",
        ),
        (  # colours and UUIDs
            "\x1b[31mERROR\x1b[0m request 3f0c1d1e-8a4b-4f7e-9a51-6b1f2f0c9d11 failed: 503 Service Unavailable",
            "ERROR request 8d9e7f6a-1b2c-4d3e-8f4a-5b6c7d8e9f00 failed: 503 Service Unavailable",
        ),
    ],
)
def test_the_same_error_with_different_details_has_one_signature(first, second):
    assert error_signature(first) == error_signature(second) != ""


def test_different_errors_have_different_signatures():
    assert error_signature("FATAL:  sorry, too many clients already") != error_signature(
        "redis.exceptions.ConnectionError: Error 111 connecting to localhost:6379. Connection refused."
    )


def test_the_signature_strips_what_varies_and_keeps_the_words():
    line = "ERROR 2002 (HY000): Can't connect to local MySQL server through socket '/var/run/mysqld/mysqld.sock' (2)"
    assert (
        signature_normalise(line) == "error <n> (hy<n>): can't connect to local mysql server through socket <str> (<n>)"
    )


def test_the_last_specific_error_line_is_the_one_signed_not_the_runner_summary():
    log = "\n".join(
        [
            "collected 42 items",
            "tests/test_cart.py::test_total FAILED",
            "FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4",
            "========== 1 failed, 41 passed in 3.10s ==========",
        ]
    )
    assert error_line(log) == "FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4"
    assert error_signature(log) == "failed tests/test_cart.py::test_total - assertionerror: assert <n> == <n>"


def test_a_log_whose_only_error_lines_are_summaries_is_signed_by_the_last_summary():
    log = "Tests run: 12, Failures: 2\n  Tests run: 3, Failures: 1\nBUILD STEP DONE\n  \n"
    assert error_line(log) == "Tests run: 3, Failures: 1"
    assert error_line("   \n\t\n") == ""


def test_a_log_with_no_error_word_is_signed_by_its_last_line_and_an_empty_log_has_no_signature():
    assert error_signature("step 1\nstep 2\nexit status 2\n\n") == "exit status <n>"
    assert error_signature("") == ""
    assert len(error_signature("error: " + "x" * 5000)) == 255
