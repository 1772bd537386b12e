"""Reports: a comparison table of variants (Markdown, HTML, terminal) and plots."""

from edgequant.report.table import Row, markdown_table
from edgequant.report.write import Section, write_report

__all__ = ["Row", "Section", "markdown_table", "write_report"]
