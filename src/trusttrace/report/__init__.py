"""The report: plots and one self-contained HTML page of a workspace's results."""

from trusttrace.report.build import write_report

__all__ = ["write_report"]
