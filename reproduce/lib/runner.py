"""The lab's runner: many training configs in parallel subprocesses (`python -m maskedkd.train RUN_DIR/launch.json`,
each run's whole config written as a file), each finished run cached by its config hash; seed aggregates."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from maskedkd import checks
from maskedkd.experiments import TrainConfig, config_diff, config_hash, write_config


def run_dir(root: Path, cfg: TrainConfig) -> Path:
    return Path(root) / f"{cfg.name}-{config_hash(cfg)}"


def expected_cost(cfg: TrainConfig) -> float:
    """Relative cost of a run, for scheduling only: its MACs per image (maskedkd.teachers.run_macs) over its
    images."""
    from maskedkd.teachers import run_macs
    return sum(run_macs(cfg).values()) * cfg.epochs * cfg.train_size


def prepare_cached_models(cfgs: list[TrainConfig]) -> list[Path]:
    """Train (once, here, with the teacher config's own threads) every missing "cache:NAME" teacher or scorer the
    runs need, so that parallel runs load it instead of each training it; returns the weight paths."""
    from maskedkd.experiments import get_config
    from maskedkd.train import train_cached_teacher
    refs = dict.fromkeys(r for c in cfgs for r in (c.teacher, c.scorer) if r.startswith("cache:"))
    return [train_cached_teacher(get_config(r[len("cache:"):])) for r in refs]


def check_cached_run(d: Path, cfg: TrainConfig) -> None:
    """A finished run is reused only if the config it recorded trains the same weights as cfg."""
    path = d / "config.json"
    if not path.is_file():
        raise ValueError(f"cached run {d} has a summary but no config.json: delete it or pass --fresh")
    diff = config_diff(json.loads(path.read_text()), cfg)
    if diff:
        raise ValueError(f"cached run {d} was trained with a different config (field: (ran, wanted)) {diff}: "
                         f"delete it or pass --fresh")


def check_criteria(cfgs: list[TrainConfig]) -> None:
    """The runs start in subprocesses, which know the built-in criteria and those named 'module:name' (select
    imports the module); a plug-in registered only in this process is refused, naming the spelling that works."""
    from maskedkd.select import BUILTIN_CRITERIA, check_criterion
    for c in cfgs:
        if c.criterion in BUILTIN_CRITERIA or ":" in c.criterion:
            continue
        mod = check_criterion(c.criterion).__module__
        where = ("the running script (__main__), which a subprocess cannot import: move it to a module and name it "
                 f"'module:{c.criterion}'" if mod == "__main__" else f"{mod}: name it '{mod}:{c.criterion}'")
        raise ValueError(f"criterion {c.criterion!r} of run {c.name!r} is a plug-in registered in {where}, so that "
                         f"the run's own process imports it")


def finished_runs(cfgs: list[TrainConfig], root: str | Path, fresh: bool = False) -> int:
    """How many of cfgs run_all would reuse (a finished summary in root) rather than train; 0 with fresh."""
    return 0 if fresh else sum((run_dir(Path(root), c) / "summary.json").is_file() for c in cfgs)


def run_all(cfgs: list[TrainConfig], *, root: str | Path = "results/runs", jobs: int = 2, fresh: bool = False,
            desc: str = "runs") -> list[dict]:
    """Train every config (skipping those with a finished summary unless fresh), `jobs` at a time, one thread
    each; returns their summaries in order. A failed run raises with the tail of its log."""
    from tqdm.auto import tqdm
    jobs = checks.as_int(jobs, "jobs", "[1, inf)", "parallel runs")
    root = Path(root)
    todo, out = {}, [None] * len(cfgs)  # todo: run dir -> indices of the configs that train into it
    for i, c in enumerate(cfgs):
        d = run_dir(root, c)
        if not fresh and (d / "summary.json").is_file():
            check_cached_run(d, c)
            out[i] = json.loads((d / "summary.json").read_text())
        else:  # a run listed twice (keep 64 of 64 is full KD) trains once, not twice into one directory at once
            todo.setdefault(d, []).append(i)
    check_criteria([cfgs[ix[0]] for ix in todo.values()])
    prepare_cached_models([cfgs[ix[0]] for ix in todo.values()])
    from maskedkd.reproducible import pinned_env
    env = {**pinned_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one kernel branch, one thread

    def one(i: int) -> dict:
        # an interrupted run resumes; fresh deletes its files first (overwrite, a user's flag, would contradict resume)
        c = cfgs[i].replace(out_dir=str(run_dir(root, cfgs[i])), threads=1, resume=not fresh, overwrite=False)
        d = Path(c.out_dir)
        d.mkdir(parents=True, exist_ok=True)
        if fresh:
            for f in ("summary.json", "checkpoint.pt", "log.jsonl"):
                (d / f).unlink(missing_ok=True)
        spec = write_config(c, d / "launch.json")  # the run's whole config, as the subprocess reads it
        with open(d / "stdout.log", "w") as log:
            r = subprocess.run([sys.executable, "-m", "maskedkd.train", str(spec)], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
        if r.returncode != 0:
            tail = (d / "stdout.log").read_text()[-2000:]
            raise RuntimeError(f"run {c.name} failed (exit {r.returncode}), log {d / 'stdout.log'}:\n{tail}")
        return json.loads((d / "summary.json").read_text())

    cached = len(cfgs) - sum(map(len, todo.values()))
    with tqdm(total=len(cfgs), initial=cached, desc=desc, dynamic_ncols=True) as bar:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            # longest first: with a few workers this ends sooner than config order (KD runs cost ~2x no KD)
            futures = {pool.submit(one, ix[0]): ix
                       for ix in sorted(todo.values(), key=lambda ix: -expected_cost(cfgs[ix[0]]))}
            for f in as_completed(futures):
                for j in futures[f]:
                    out[j] = f.result()
                bar.update(len(futures[f]))
                bar.set_postfix_str(cfgs[futures[f][0]].name, refresh=True)
    return out


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [float(x) for x in xs]
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt_pm(xs: list[float], scale: float = 100.0) -> str:
    m, s = mean_std(xs)
    return f"{scale * m:.1f} ± {scale * s:.1f}" if len(xs) > 1 else f"{scale * m:.1f}"
