"""Helpers of the reproduce scripts: the runner (many training runs), the paper's numbers, the claims and their
statistics, the embedded and full-scale plans."""
