"""The lab: scripts that regenerate the paper's tables and figures (reproduce/NAME.py, run as `bash reproduce/NAME.sh`
or `python -m reproduce.NAME` from the repository root) and their helpers (reproduce/lib)."""
