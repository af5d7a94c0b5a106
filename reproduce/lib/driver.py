"""One driver for the embedded-scale scripts: flags -> plan -> runs -> the runs file -> markdown / CSV -> figure ->
README blocks. A script is a `Spec`: its rows of runs, the paper's numbers, its table and its figure, each drawn from
the runs file alone (results/SCRIPT_runs.json), so the committed reference renders again byte for byte
(tests/test_driver.py). Think of big_vision: one config per experiment, one trainer.

    def rows(mode, seeds): return [("No distillation", [student_run(mode, s, None, teacher=False) for s in seeds]), ...]
    SPEC = driver.Spec("figure2", "Figure 2 (right): ...", __doc__, rows, table, figure=figure)
    main = SPEC.main
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from reproduce.lib import embedded, flags, records
from reproduce.lib.runner import finished_runs, run_all


def machine() -> dict[str, str]:
    """What ran where, as the header of every results file shows it (maskedkd.bench.machine)."""
    from maskedkd.bench import machine as described
    m = described()
    return {"machine": f"{m['cpu_model']}, {m['cores']} cores, {m['os']}" + (f", GPU {m['gpu']}" if "gpu" in m
                                                                            else ", no GPU"),
            "versions": f"python {m['python']}, torch {m['torch']}, numpy {m['numpy']}, einops {m['einops']}"}


def header(title: str, data: dict, extra: str = "") -> str:
    """The markdown header of a results file, from its runs file's `header` (machine, versions, wall time, date)."""
    h = data["header"]
    return "\n".join([f"# {title}", "", f"- machine: {h['machine']}", f"- versions: {h['versions']}",
                      f"- seeds: {list(data['seeds'])}; wall time {h['wall_s'] / 60:.1f} min (this invocation: runs "
                      f"reused from an earlier one add none); written {h['written']}",
                      *([f"- {extra}"] if extra else []), ""])


def csv_text(rows: list[list]) -> str:
    """rows (the header first) as csv.writer writes them."""
    f = io.StringIO(newline="")
    csv.writer(f).writerows(rows)
    return f.getvalue()


def by_row(data: dict) -> dict[str, list[dict]]:
    """Row id -> its runs in the runs file's order (seed order), rows in table order."""
    out = {r["id"]: [] for r in data["rows"]}
    for run in data["runs"]:
        out[run["row"]].append(run)
    return out


def accs(runs: list[dict]) -> list[float]:
    return [r["final_acc"] for r in runs]


def last_teacher(runs: list[dict]) -> list[float]:
    """The masked teacher's accuracy at each run's last evaluation."""
    return [r["history"][-1].get("teacher_acc_masked") for r in runs]


@dataclass(frozen=True)
class Spec:
    """An embedded-scale script: `rows(mode, seeds, args)` -> [(label, [config per seed]), ...] in table order (a row
    id first where it is not the runs' own, embedded.row_id);
    `table(data)` -> (markdown body lines, CSV rows with the header first or None[, lines after the claims]), from the
    runs file alone; `head(data)` the header's last line; `figure(data, path)` draws SCRIPT.png; `paper(row id, label)`
    the paper's cell of a row, under `paper_column`; `extra(mode, seeds, configs, summaries, out)` adds fields to the
    runs file after the runs; `full(argv)` the --full (ImageNet) mode (reproduce/lib/full.py); `options(parser)` the
    script's own flags; `outputs(data)` renders further files (name -> text). A script whose steps differ (table 1)
    overrides the methods below main: task_of, out_dir, before, runs_files, render, finish."""
    script: str
    title: str
    doc: str
    rows: Callable
    table: Callable | None = None
    head: Callable = lambda data: f"mode: {data['mode']}"
    figure: Callable | None = None
    paper: Callable | None = None
    paper_column: str | None = None
    task: str = "digits"
    extra: Callable | None = None
    full: Callable | None = None
    options: Callable | None = None
    outputs: Callable | None = None
    regimes: bool = False  # --regime: the script runs on any embedded image regime (rows get it as args.regime)

    def task_of(self, args) -> str:
        if not self.regimes:
            return self.task
        if args.update_reference and args.regime != "digits":
            raise SystemExit(f"--update-reference records the default regime; a stress regime's record is its own "
                             f"results folder (results/{args.regime}/), kept under reproduce/reference/{args.regime}/")
        return args.regime

    def out_dir(self, args) -> Path:
        return Path(args.out) if not self.regimes or args.regime == "digits" else Path(args.out) / args.regime

    def before(self, args, mode: str) -> dict:
        """Runs-file fields measured before the runs (table 1: its teacher, trained and timed first)."""
        return {}

    def claims(self, data: dict) -> list[dict]:
        return data["claims"]

    def runs_files(self, data: dict) -> dict[str, dict]:
        """Runs-file name -> content, written to the results folder."""
        return {f"{self.script}_runs.json": data}

    def render(self, data: dict) -> dict[str, str]:
        """File name -> text of the script's markdown and CSV (and `outputs`), from its runs file."""
        body, rows, *tail = self.table(data)
        out = {f"{self.script}.md": "\n".join([header(self.title, data, self.head(data)), *body,
                                                "", records.claims_sentence(data), *(tail[0] if tail else [])]) + "\n"}
        if rows is not None:
            out[f"{self.script}.csv"] = csv_text(rows)
        return {**out, **(self.outputs(data) if self.outputs else {})}

    def finish(self, args, out: Path, files: tuple[str, ...]) -> None:
        """With --update-reference: the default run's files into reproduce/reference/, README blocks regenerated."""
        records.finish(args, self.script, files)

    def main(self, argv=None) -> dict | None:
        ap = flags.parser(self.doc)
        if self.options:
            self.options(ap)
        if self.regimes:
            flags.regime_option(ap)
        args = flags.parse_or_full(ap, argv, self.full) if self.full else ap.parse_args(argv)
        if args is None:
            return None
        mode, task = flags.mode_of(args), self.task_of(args)
        seeds, _ = embedded.plan(mode, task)
        t0, out = time.time(), self.out_dir(args)
        pre = self.before(args, mode)
        rows = [r if len(r) == 3 else (None, *r) for r in self.rows(mode, seeds, args)]  # (row id or None, label, cfgs)
        cfgs, ids, labels = [c for *_, cs in rows for c in cs], [], {}
        for rid, label, cs in rows:
            for c in cs:
                ids.append(rid or embedded.row_id(c))
                labels[ids[-1]] = label
        done_before = finished_runs(cfgs, out / "runs", args.fresh)
        sums = run_all(cfgs, root=out / "runs", jobs=args.jobs, fresh=args.fresh, desc=self.script)
        extra = self.extra(mode, seeds, cfgs, sums, out) if self.extra else {}
        if self.regimes:
            extra = {"regime": task, **extra}
        data = records.runs_data(self.script, mode, seeds, [(rid, c.seed, c, s) for rid, c, s in
                                                             zip(ids, cfgs, sums)], labels,
                                  paper={k: self.paper(k, v) for k, v in labels.items()} if self.paper else None,
                                  **({"paper_column": self.paper_column} if self.paper_column else {}),
                                  trained_now=len(cfgs) - done_before, **pre, **extra,
                                  header={**machine(), "wall_s": time.time() - t0,
                                          "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
        data["claims"] = self.claims(data)
        out.mkdir(parents=True, exist_ok=True)
        for name, d in self.runs_files(data).items():
            (out / name).write_text(json.dumps(d, indent=1) + "\n")
        records.write_claims_page(out)
        files = self.render(data)
        for name, text in files.items():
            (out / name).write_text(text)
        if self.figure:
            self.figure(data, out / f"{self.script}.png")
        print(files[f"{self.script}.md"])
        self.finish(args, out, tuple(files))
        return data


def plot():
    """matplotlib's pyplot on the file backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
