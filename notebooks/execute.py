"""Regenerate the notebooks' committed outputs: `python notebooks/execute.py` (all) or `... 02` (names or prefixes).

Each notebook is executed top to bottom in a fresh kernel (offline, a fresh data cache; the shipped teachers come from
maskedkd/assets through `cached_teacher`), its figures captured as image/png by the inline backend, and written back
in place with the SHA-256 of its cells' sources in `metadata["maskedkd"]["source_sha256"]`, so tests/test_notebooks.py
can tell when a notebook's committed outputs are stale against its source. Per-cell timing metadata is not recorded,
so a regeneration on the same machine changes only what the code prints differently (notebook 03's timings).

Each notebook ends with a cell that prints its key figures as one line, `key figures: {json}`; `key_figures(nb)`
reads them back from the outputs, for the tests to check against independent sources.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
MARKER = "key figures: "


def source_sha256(nb) -> str:
    """SHA-256 of the notebook's cells (type and source, in order): what its outputs were made from."""
    cells = [[c.cell_type, c.source] for c in nb.cells]
    return hashlib.sha256(json.dumps(cells, ensure_ascii=False).encode()).hexdigest()


def execute(nb, timeout: int = 600):
    """Execute `nb` (a NotebookNode, changed in place and returned) in a fresh kernel in a scratch folder. The kernel
    gets HF_HUB_OFFLINE=1, a fresh MASKEDKD_CACHE and matplotlib's inline backend whatever MPLBACKEND the caller has
    (with Agg the figures would not reach the outputs)."""
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
        c.metadata.pop("execution", None)
    with tempfile.TemporaryDirectory(prefix="maskedkd-notebook-") as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MASKEDKD_CACHE": str(Path(tmp) / "cache"),
               "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": tmp}}).execute(env=env)
    nb.metadata["maskedkd"] = {"source_sha256": source_sha256(nb)}
    return nb


def key_figures(nb) -> dict:
    """The `key figures: {json}` line the notebook's outputs print (exactly one)."""
    lines = [line[len(MARKER):] for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type == "stream" for line in o.text.splitlines() if line.startswith(MARKER)]
    if len(lines) != 1:
        raise ValueError(f"expected one '{MARKER}...' line in the outputs, found {len(lines)}")
    return json.loads(lines[0])


def regenerate(path: Path) -> dict:
    nb = execute(nbformat.read(path, as_version=4))
    nb.metadata["maskedkd"]["regenerate"] = f"python notebooks/execute.py {path.stem[:2]}"
    nbformat.write(nb, path)
    return key_figures(nb)


def main(argv: list[str]) -> None:
    chosen = [p for p in NOTEBOOKS if not argv or any(p.stem.startswith(a) or p.name == a for a in argv)]
    if not chosen:
        raise SystemExit(f"no notebook matches {argv}; the notebooks: {[p.stem for p in NOTEBOOKS]}")
    for p in chosen:
        print(f"{p.name}: {MARKER}{json.dumps(regenerate(p))}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
