"""The reference for ``core.quality.no_rows``: the same suite with GX's own ``UnexpectedRowsExpectation``
(which counts each query and then fetches up to 200 of its rows). Used by the parity test in
``tests/test_validate.py`` and by ``benchmarks/validate_query_checks.py`` as the time to beat."""

from __future__ import annotations

from core.quality import Suite


def gx_reference(suite: Suite) -> Suite:
    """``suite`` with every ``no_rows`` check replaced by GX's ``UnexpectedRowsExpectation`` on the same
    query and description; the other expectations as they are."""
    import great_expectations.expectations as gxe

    return Suite(suite.table, [gxe.UnexpectedRowsExpectation(unexpected_rows_query=e.unexpected_rows_query,
                                                             description=e.description)
                               if hasattr(e, "unexpected_rows_query") else e for e in suite.expectations],
                 suite.needs, suite.where)
