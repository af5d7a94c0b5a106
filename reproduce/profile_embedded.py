"""Where one embedded table-1 run's time goes (profile one run before speeding anything up). Measures only; it
changes nothing the runs compute.

    bash reproduce/profile_embedded.sh [--iters 15] [--json results/profile_embedded.json]
    bash reproduce/profile_embedded.sh --reference   # rewrite reproduce/reference/profile_embedded.*

With 1 torch thread (as runner.run_all's subprocesses use), the digits student recipe (64-wide 3-block student,
the shipped 128-wide 4-block teacher, 32x32 digits, 64 patches, batch 32) and maskedkd.bench.interleaved
(round-robin, median) it measures:
  1. one training step of no KD, logit KD (full teacher) and MaskedKD 50% (32 of 64), eager and compiled;
     and a run-like loop of consecutive eager steps (mean ms/step, one variant at a time);
  2. the teacher forward alone, full and 32 kept, fp32 and bf16 autocast (matmul weights cast once);
  3. the evaluation pass on the 2000 test images (train.evaluate without a view, with the full and the 32-kept view);
  4. data: DigitsData.epoch_data for epoch 0 (the clean epoch where a recipe has one) and the fixed set, and the
     test set;
  5. a torch.profiler top-15 table (self CPU time) of 20 MaskedKD 50% eager steps;
  6. checks behind the candidate speed-ups: is a sample's full-teacher logit row independent of its batch
     (bitwise, on 2 batches), and does eval_every change any training number (two short runs, bitwise);
then estimates each table-1 row's time (steps x step time + evaluations x evaluation time + data) beside the
measured wall_s of reproduce/reference/table1_runs.json (those ran 2 at a time on the 2 cores).
`render(numbers)` writes them as markdown; `--reference` commits both (reproduce/reference/profile_embedded.json and
.md, which a test keeps equal), and docs/benchmarks.md points there instead of restating numbers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]

from maskedkd.bench import Clock, interleaved, machine, run_sections
from maskedkd.checkpoint import load_checkpoint, read_state_dict
from maskedkd.data.loaders import DigitsData
from maskedkd.experiments import get_config, model_config
from maskedkd.model import init_params, student_forward, teacher_forward
from maskedkd.optim import make_optimizer
from maskedkd.precision import cast_matmul_weights
from maskedkd.step import make_train_step
from maskedkd.train import train_cached_teacher
from maskedkd.train import evaluate
from maskedkd.view import TeacherView
from reproduce.lib import flags

CPU = torch.device("cpu")


def setup() -> SimpleNamespace:
    """The digits student recipe, the shipped teacher, its full and 32-kept views, the fixed set and one batch."""
    torch.set_num_threads(1)
    cfg, tcfg = get_config("digits_student_maskedkd50"), get_config("digits_teacher")
    data = DigitsData(cfg)
    s_model, t_model = model_config(cfg.model, data.num_classes), model_config(tcfg.model, data.num_classes)
    t_params = load_checkpoint(read_state_dict(train_cached_teacher(tcfg)), t_model)
    x_all, y_all = data.epoch_data(1)  # the fixed set
    c = SimpleNamespace(cfg=cfg, data=data, s_model=s_model, t_model=t_model, t_params=t_params, keep=32,
                        x_all=x_all, y_all=y_all, x=x_all[:32], y=y_all[:32])
    c.full_view = TeacherView(t_model, t_params).for_student(s_model)
    c.mask_view = TeacherView(t_model, t_params, c.keep).for_student(s_model)
    c.variants = {"nokd": None, "kd": c.full_view, "keep50": c.mask_view}
    return c


def runner(c, view, compile: bool):
    """A fresh student's training step on the fixed batch."""
    params = init_params(c.s_model, seed=0)
    opt = make_optimizer(params, lr=c.cfg.lr * c.cfg.batch_size / 512)
    step = make_train_step(c.s_model, view=view, drop_path=c.cfg.drop_path, compile=compile)
    return lambda: step(params, opt, c.x, c.y)


def steps(c, args) -> dict:
    """1. One training step per variant, eager and compiled (first call timed apart: compilation)."""
    fns, first = {}, {}
    for name, v in c.variants.items():
        for comp in (False, True):
            key = f"{name}_{'compiled' if comp else 'eager'}"
            fns[key] = runner(c, v, comp)
            t = time.perf_counter()
            fns[key]()
            first[key] = time.perf_counter() - t
    return {"step_ms": {k: 1e3 * v for k, v in interleaved(fns, args.iters, CPU).items()}, "step_first_call_s": first}


def teacher(c, args) -> dict:
    """2. The teacher forward alone, full and 32 kept, fp32 and bf16 autocast (matmul weights cast once)."""
    idx = torch.topk(student_forward(init_params(c.s_model, seed=0), c.x, c.s_model)[1], c.keep, dim=1).indices
    t_bf16 = cast_matmul_weights(c.t_params)

    def tf(params, keep_idx, bf16):
        def f():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                teacher_forward(params, c.x, c.t_model, keep_idx, check=False)
        return f
    tt = interleaved({"full_fp32": tf(c.t_params, None, False), "keep32_fp32": tf(c.t_params, idx, False),
                      "full_bf16": tf(t_bf16, None, True), "keep32_bf16": tf(t_bf16, idx, True)}, 2 * args.iters, CPU)
    return {"teacher_ms": {k: 1e3 * v for k, v in tt.items()}}


def evaluation(c, args) -> dict:
    """3. The evaluation pass on the test images, without a view and with each view; 4. the data's generation."""
    params = init_params(c.s_model, seed=0)
    t0 = time.perf_counter()
    batches = c.data.eval_batches()
    test_gen = time.perf_counter() - t0
    ev = interleaved({"student_only": lambda: evaluate(params, c.s_model, batches, CPU),
                      "with_full_view": lambda: evaluate(params, c.s_model, batches, CPU, c.full_view),
                      "with_keep32_view": lambda: evaluate(params, c.s_model, batches, CPU, c.mask_view)},
                     max(3, args.iters // 3), CPU)

    def gen(epoch):
        return lambda: DigitsData(c.cfg).epoch_data(epoch)
    made = interleaved({"clean_epoch": gen(0), "fixed_set": gen(1)}, 3, CPU, warmup=False)
    return {"eval_s": ev, "data_s": {**made, "test_set": test_gen}}


def profiler(c, args) -> dict:
    """5. torch.profiler's top 15 (self CPU time) of 20 MaskedKD 50% eager steps; 5b. a run-like loop of consecutive
    eager steps over consecutive batches, one variant at a time."""
    from torch.profiler import ProfilerActivity, profile
    f = runner(c, c.mask_view, False)
    f()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(20):
            f()
    loop = {}
    for name, v in c.variants.items():
        params = init_params(c.s_model, seed=0)
        opt = make_optimizer(params, lr=c.cfg.lr * c.cfg.batch_size / 512)
        step = make_train_step(c.s_model, view=v, drop_path=c.cfg.drop_path, compile=False)
        step(params, opt, c.x, c.y)
        n, t = 3 * args.iters, time.perf_counter()
        for i in range(n):
            step(params, opt, c.x_all[32 * i: 32 * (i + 1)], c.y_all[32 * i: 32 * (i + 1)])
        loop[name] = 1e3 * (time.perf_counter() - t) / n
    return {"profile_table": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15),
            "loop_eager_ms": loop}


def batch_independence(c, args) -> dict:
    """6a. Is a sample's full-teacher logit row independent of its batch ([bitwise equal, max |diff|])?"""
    x_all, p, m = c.x_all, c.t_params, c.t_model
    with torch.no_grad():
        a = teacher_forward(p, x_all[0:32], m, check=False)
        perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
        others = {"overlap_batch": (a[16:], teacher_forward(p, x_all[16:48], m, check=False)[:16]),
                  "batch_of_64": (a, teacher_forward(p, x_all[0:64], m, check=False)[:32]),
                  "permuted": (a[perm], teacher_forward(p, x_all[0:32][perm], m, check=False)),
                  "batch_of_500": (a, teacher_forward(p, x_all[0:500], m, check=False)[:32]),  # a cache in 500s
                  "batch_of_8": (a, torch.cat([teacher_forward(p, x_all[i:i + 8], m, check=False)
                                               for i in range(0, 32, 8)])),
                  "batch_of_1": (a, torch.cat([teacher_forward(p, x_all[i:i + 1], m, check=False)
                                               for i in range(32)]))}
    return {"batch_independence": {k: [bool(torch.equal(u, v)), float((u - v).abs().max())]
                                   for k, (u, v) in others.items()}}


def eval_every_check(c, args) -> dict:
    """6b. eval_every changes no training number: two short MaskedKD 50% runs, eval_every 1 vs 3, bitwise."""
    if args.skip_eval_check:
        return {}
    from safetensors.torch import load_file

    from maskedkd import train
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ev_every in (1, 3):
            o = Path(tmp) / f"e{ev_every}"
            train.run(c.cfg.replace(train_size=320, test_size=200, epochs=3, eval_every=ev_every, log_every=1,
                                    out_dir=str(o)))
            torch.set_num_threads(1)
            logs = [json.loads(line) for line in (o / "log.jsonl").read_text().splitlines()]
            res[ev_every] = [r for r in logs if "step" in r], load_file(str(o / "params.safetensors"))
    return {"eval_every_check": {"same_step_logs": res[1][0] == res[3][0], "steps_logged": len(res[1][0]),
                                 "same_final_params": all(torch.equal(res[1][1][k], res[3][1][k]) for k in res[1][1])}}


def estimate(c, out: dict) -> dict:
    """Each table-1 row's time (steps x step time + evaluations x evaluation time + data), eager steps, beside the
    measured wall_s of reproduce/reference/table1_runs.json; MaskedKD rows at other kept counts interpolated
    linearly in the kept count through the measured 0, 32 and 64."""
    cfg, ms, ev, dt = c.cfg, out["step_ms"], out["eval_s"], out["data_s"]
    steps_per_epoch, epochs = cfg.train_size // cfg.batch_size, cfg.epochs
    t_share_kd, t_share_50 = ms["kd_eager"] - ms["nokd_eager"], ms["keep50_eager"] - ms["nokd_eager"]

    def masked_step(k):
        return ms["nokd_eager"] + (t_share_50 * k / 32 if k <= 32 else
                                   t_share_50 + (t_share_kd - t_share_50) * (k - 32) / 32)

    def ev_s(k):
        return ev["student_only"] if k == 0 else (ev["with_full_view"] if k == 64 else
                                                  ev["student_only"] + (ev["with_keep32_view"] - ev["student_only"])
                                                  * (masked_step(k) - ms["nokd_eager"]) / t_share_50)
    data_s = dt["clean_epoch"] + dt["fixed_set"] + dt["test_set"]
    rows = {"nokd": (0,) * epochs, "kd": (64,) * epochs, "keep75": (48,) * epochs, "keep50": (32,) * epochs,
            "keep40": (26,) * epochs, "keep25": (16,) * epochs, "warmup": (64,) * 3 + (32,) * (epochs - 3)}
    walls: dict = {}
    for r in json.loads((ROOT / "reproduce/reference/table1_runs.json").read_text())["runs"]:
        walls.setdefault(r["row"], []).append(r["wall_s"])
    ev_epochs = [e for e in range(epochs) if (e + 1) % cfg.eval_every == 0 or e + 1 == epochs]
    est = {}
    for row, ks in rows.items():
        st = sum(steps_per_epoch * (masked_step(k) if k else ms["nokd_eager"]) / 1e3 for k in ks)
        # a full view's teacher is counted at its first evaluation only (train.evaluate's memo)
        full_seen = [ks[e] == 64 and any(ks[f] == 64 for f in ev_epochs if f < e) for e in ev_epochs]
        evt = sum(ev["student_only"] if seen else ev_s(ks[e]) for e, seen in zip(ev_epochs, full_seen))
        est[row] = {"steps_s": st, "evals_s": evt, "data_s": data_s, "total_s": st + evt + data_s,
                    "ref_wall_s": statistics.median(walls[row]), "ref_walls": walls[row]}
    return {"estimate": est}


SECTIONS = (steps, teacher, evaluation, profiler, batch_independence, eval_every_check)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=flags.integer("[1, inf)"), default=15, help="timed calls per step variant (interleaved)")
    ap.add_argument("--json", default="", help="also write the numbers here")
    ap.add_argument("--skip-eval-check", action="store_true", help="skip the two short eval_every runs")
    ap.add_argument("--reference", action="store_true", help="write reproduce/reference/profile_embedded.json and .md")
    args = ap.parse_args(argv)
    c = setup()
    out = run_sections([(f.__name__, 0, lambda f=f: f(c, args)) for f in SECTIONS], {"machine": machine()}, Clock())
    if out.pop("skipped"):
        raise SystemExit("a section failed (above): nothing written")
    out.update(estimate(c, out))
    print(render(out))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.reference:
        (REFERENCE / "profile_embedded.json").write_text(json.dumps(out, indent=1) + "\n")
        (REFERENCE / "profile_embedded.md").write_text(render(out))
    return out


REFERENCE = ROOT / "reproduce" / "reference"


def _table(head: list[str], rows: list[list]) -> list[str]:
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(map(fmt, r)) + " |"
                                                                         for r in rows]


def render(out: dict) -> str:
    """The profile's numbers as markdown (reproduce/reference/profile_embedded.md is render of the .json beside it)."""
    m = out["machine"]
    lines = ["# Where an embedded table-1 run's time goes (generated by reproduce/profile_embedded.py)", "",
             f"Machine: {m.get('cpu')}, torch {m.get('torch')}, Python {m.get('python')}, {m.get('threads')} thread.",
             "", "## 1. One training step (ms, batch 32; median of interleaved calls)", ""]
    lines += _table(["variant", "ms"], [[k, v] for k, v in out["step_ms"].items()])
    lines += ["", "First compiled call (s):", ""]
    lines += _table(["variant", "s"], [[k, v] for k, v in out["step_first_call_s"].items()])
    lines += ["", "Run-like loop of consecutive eager steps (ms/step):", ""]
    lines += _table(["variant", "ms"], [[k, v] for k, v in out["loop_eager_ms"].items()])
    lines += ["", "## 2. Teacher forward alone (ms, batch 32)", ""]
    lines += _table(["variant", "ms"], [[k, v] for k, v in out["teacher_ms"].items()])
    lines += ["", "## 3. Evaluation on the test images (s)", ""]
    lines += _table(["view", "s"], [[k, v] for k, v in out["eval_s"].items()])
    lines += ["", "## 4. Data (s)", ""]
    lines += _table(["what", "s"], [[k, v] for k, v in out["data_s"].items()])
    lines += ["", "## 5. torch.profiler, 20 MaskedKD 50% eager steps, top 15 by self CPU time", "", "```",
              out["profile_table"].strip("\n"), "```", "",
              "## 6. Checks behind the candidate speed-ups", "",
              "Full-teacher logits of the same images in other batches ([bitwise equal, max |diff|]):", ""]
    lines += _table(["batching", "result"], [[k, v] for k, v in out["batch_independence"].items()])
    if "eval_every_check" in out:
        c = out["eval_every_check"]
        lines += ["", f"eval_every 1 vs 3: step logs identical {c['same_step_logs']}, final parameters bitwise "
                      f"identical {c['same_final_params']} ({c['steps_logged']} steps)."]
    lines += ["", "## Estimate per table-1 run (s) vs reference wall_s (median of 5 seeds, 2 runs at a time)", ""]
    lines += _table(["row", "steps", "evaluations", "data", "total", "reference", "reference / estimate"],
                    [[k, e["steps_s"], e["evals_s"], e["data_s"], e["total_s"], e["ref_wall_s"],
                      f"{e['ref_wall_s'] / e['total_s']:.2f}"] for k, e in out["estimate"].items()])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
