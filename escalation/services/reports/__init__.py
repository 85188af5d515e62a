"""Report uploads: JUnit XML, SARIF, Trivy JSON and secret-scanner reports, one module per kind.

``upload`` holds what they share: the spooled body, the run and job it reports on, the Report row,
the receipt, and the way failing items (tests, findings) become failures through the failure service.
"""
