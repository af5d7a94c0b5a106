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
  4. data: DigitsData.epoch_data for the clean epoch and the fixed 4000-image set, and the test set;
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

import torch

ROOT = Path(__file__).resolve().parents[1]

from maskedkd.bench import interleaved, machine
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


def timed(fn, n: int) -> float:
    """Median seconds of n calls (no warm-up: for calls whose first run is the one that counts)."""
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=flags.integer("[1, inf)"), default=15, help="timed calls per step variant (interleaved)")
    ap.add_argument("--json", default="", help="also write the numbers here")
    ap.add_argument("--skip-eval-check", action="store_true", help="skip the two short eval_every runs")
    ap.add_argument("--reference", action="store_true", help="write reproduce/reference/profile_embedded.json and .md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out: dict = {"machine": machine()}
    cfg = get_config("digits_student_maskedkd50")
    tcfg = get_config("digits_teacher")
    data = DigitsData(cfg)
    s_model = model_config(cfg.model, data.num_classes)
    t_model = model_config(tcfg.model, data.num_classes)
    t_params = load_checkpoint(read_state_dict(train_cached_teacher(tcfg)), t_model)
    full_view = TeacherView(t_model, t_params).for_student(s_model)
    keep = 32
    mask_view = TeacherView(t_model, t_params, keep).for_student(s_model)
    x_all, y_all = data.epoch_data(1)  # the fixed cluttered set
    x, y = x_all[:32], y_all[:32]
    print(f"{machine()}  student {s_model.name}, teacher {t_model.name}, batch 32, {keep} of "
          f"{t_model.num_patches} kept", flush=True)

    # 1. training steps
    def runner(view, compile):
        params = init_params(s_model, seed=0)
        opt = make_optimizer(params, lr=cfg.lr * cfg.batch_size / 512)
        step = make_train_step(s_model, view=view, drop_path=cfg.drop_path, compile=compile)
        return lambda: step(params, opt, x, y)

    variants = {"nokd": None, "kd": full_view, "keep50": mask_view}
    first = {}
    fns = {}
    for name, v in variants.items():
        for comp in (False, True):
            key = f"{name}_{'compiled' if comp else 'eager'}"
            f = runner(v, comp)
            t = time.perf_counter()
            f()  # first call (compilation for the compiled step)
            first[key] = time.perf_counter() - t
            fns[key] = f
    step_s = interleaved(fns, args.iters, CPU)
    out["step_ms"] = {k: 1e3 * v for k, v in step_s.items()}
    out["step_first_call_s"] = first
    print("\n1. training step (ms, median of", args.iters, "interleaved; first call s)")
    for k, v in step_s.items():
        print(f"  {k:18s} {1e3 * v:7.1f} ms  (x{v / step_s['nokd_eager']:.2f} of no-KD eager)  "
              f"first {first[k]:.1f} s", flush=True)

    # 2. teacher forward alone
    scores = student_forward(init_params(s_model, seed=0), x, s_model)[1]
    idx = torch.topk(scores, keep, dim=1).indices
    t_bf16 = cast_matmul_weights(t_params)

    def tf(params, keep_idx, bf16):
        def f():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                teacher_forward(params, x, t_model, keep_idx, check=False)
        return f

    tt = interleaved({"full_fp32": tf(t_params, None, False), "keep32_fp32": tf(t_params, idx, False),
                      "full_bf16": tf(t_bf16, None, True), "keep32_bf16": tf(t_bf16, idx, True)}, 2 * args.iters, CPU)
    out["teacher_ms"] = {k: 1e3 * v for k, v in tt.items()}
    print("\n2. teacher forward, batch 32 (ms)")
    for k, v in tt.items():
        print(f"  {k:12s} {1e3 * v:7.1f} ms  (x{v / tt['full_fp32']:.2f} of full fp32)", flush=True)

    # 3. evaluation on the test set
    params = init_params(s_model, seed=0)
    t0 = time.perf_counter()
    batches = data.eval_batches()
    test_gen = time.perf_counter() - t0
    ev = interleaved({"student_only": lambda: evaluate(params, s_model, batches, CPU),
                      "with_full_view": lambda: evaluate(params, s_model, batches, CPU, full_view),
                      "with_keep32_view": lambda: evaluate(params, s_model, batches, CPU, mask_view)},
                     max(3, args.iters // 3), CPU)
    out["eval_s"] = ev
    print(f"\n3. evaluation, {data.eval_size} test images (s)")
    for k, v in ev.items():
        print(f"  {k:18s} {v:6.2f} s", flush=True)

    # 4. data
    def gen(epoch):
        def f():
            DigitsData(cfg).epoch_data(epoch)
        return f
    dt = {"clean_epoch": timed(gen(0), 3), "fixed_set": timed(gen(1), 3), "test_set": test_gen}
    out["data_s"] = dt
    print("\n4. data generation (s)")
    for k, v in dt.items():
        print(f"  {k:12s} {v:6.2f} s", flush=True)

    # 5. profiler, 20 MaskedKD 50% eager steps
    f = runner(mask_view, False)
    f()
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(20):
            f()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    out["profile_table"] = table
    print("\n5. torch.profiler, 20 MaskedKD 50% eager steps, top 15 by self CPU time\n" + table, flush=True)

    # 5b. run-like: consecutive eager steps over consecutive batches of the fixed set, one variant at a time
    loop = {}
    for name, v in variants.items():
        params_l = init_params(s_model, seed=0)
        opt_l = make_optimizer(params_l, lr=cfg.lr * cfg.batch_size / 512)
        step_l = make_train_step(s_model, view=v, drop_path=cfg.drop_path, compile=False)
        step_l(params_l, opt_l, x, y)
        n = 3 * args.iters
        t = time.perf_counter()
        for i in range(n):
            step_l(params_l, opt_l, x_all[32 * i: 32 * (i + 1)], y_all[32 * i: 32 * (i + 1)])
        loop[name] = 1e3 * (time.perf_counter() - t) / n
    out["loop_eager_ms"] = loop
    print(f"\n5b. run-like loop, {3 * args.iters} consecutive eager steps over consecutive batches (mean ms/step)")
    for k, v in loop.items():
        print(f"  {k:8s} {v:7.1f} ms", flush=True)

    # 6a. batch independence of the full teacher's logits (for caching them per image)
    with torch.no_grad():
        a = teacher_forward(t_params, x_all[0:32], t_model, check=False)
        b = teacher_forward(t_params, x_all[16:48], t_model, check=False)  # images 16..31 in another batch
        c = teacher_forward(t_params, x_all[0:64], t_model, check=False)  # a batch of 64
        perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
        d = teacher_forward(t_params, x_all[0:32][perm], t_model, check=False)
        one = torch.cat([teacher_forward(t_params, x_all[i:i + 1], t_model, check=False) for i in range(32)])
        eight = torch.cat([teacher_forward(t_params, x_all[i:i + 8], t_model, check=False) for i in range(0, 32, 8)])
        big = teacher_forward(t_params, x_all[0:500], t_model, check=False)  # a cache built in batches of 500
    bi = {"overlap_batch": [bool(torch.equal(a[16:], b[:16])), float((a[16:] - b[:16]).abs().max())],
          "batch_of_64": [bool(torch.equal(a, c[:32])), float((a - c[:32]).abs().max())],
          "permuted": [bool(torch.equal(a[perm], d)), float((a[perm] - d).abs().max())],
          "batch_of_500": [bool(torch.equal(a, big[:32])), float((a - big[:32]).abs().max())],
          "batch_of_8": [bool(torch.equal(a, eight)), float((a - eight).abs().max())],
          "batch_of_1": [bool(torch.equal(a, one)), float((a - one).abs().max())]}
    out["batch_independence"] = bi
    print("\n6a. full-teacher logits of the same images in other batches: [bitwise equal, max |diff|]")
    for k, v in bi.items():
        print(f"  {k:14s} {v}", flush=True)

    # 6b. eval_every changes no training number: two short MaskedKD 50% runs, eval_every 1 vs 3
    if not args.skip_eval_check:
        from safetensors.torch import load_file

        from maskedkd import train
        res = {}
        with tempfile.TemporaryDirectory() as tmp:
            for ev_every in (1, 3):
                o = Path(tmp) / f"e{ev_every}"
                c = cfg.replace(train_size=320, test_size=200, epochs=3, eval_every=ev_every, log_every=1,
                                out_dir=str(o))
                train.run(c)
                torch.set_num_threads(1)
                logs = [json.loads(l) for l in (o / "log.jsonl").read_text().splitlines()]
                res[ev_every] = ([{k: v for k, v in r.items()} for r in logs if "step" in r],
                                 load_file(str(o / "params.safetensors")))
        same_log = res[1][0] == res[3][0]
        same_params = all(torch.equal(res[1][1][k], res[3][1][k]) for k in res[1][1])
        out["eval_every_check"] = {"same_step_logs": same_log, "same_final_params": same_params,
                                   "steps_logged": len(res[1][0])}
        print(f"\n6b. eval_every 1 vs 3 (3 epochs x 10 steps): step logs identical {same_log}, final params "
              f"bitwise identical {same_params}", flush=True)

    # estimate per row of table 1 (the recipe: 12 epochs x 125 steps, evaluations after epochs 3, 6, 9, 12 with
    # the masked-teacher view), eager steps (compile=False in the recipe)
    steps_per_epoch, epochs = cfg.train_size // cfg.batch_size, cfg.epochs
    n_eval = len([e for e in range(epochs) if (e + 1) % cfg.eval_every == 0 or e + 1 == epochs])
    ms = out["step_ms"]
    # MaskedKD rows at other kept counts are interpolated on the teacher's share: step(k) = nokd + (kd - nokd)*f(k)
    # with f from 32 kept; only 50% is measured (75/40/25 are scaled linearly in k between 32 and 64 / 32 and 0)
    t_share_kd = ms["kd_eager"] - ms["nokd_eager"]
    t_share_50 = ms["keep50_eager"] - ms["nokd_eager"]

    def masked_step(k):  # linear in the kept count through the two measured points (0 -> nokd, 32, 64)
        return ms["nokd_eager"] + (t_share_50 * k / 32 if k <= 32 else
                                   t_share_50 + (t_share_kd - t_share_50) * (k - 32) / 32)

    def ev_s(k):
        return ev["student_only"] if k == 0 else (ev["with_full_view"] if k == 64 else
                                                  ev["student_only"] + (ev["with_keep32_view"] - ev["student_only"])
                                                  * (masked_step(k) - ms["nokd_eager"]) / t_share_50)
    data_s = dt["clean_epoch"] + dt["fixed_set"] + dt["test_set"]
    rows = {"nokd": (0,) * epochs, "kd": (64,) * epochs, "keep75": (48,) * epochs, "keep50": (32,) * epochs,
            "keep40": (26,) * epochs, "keep25": (16,) * epochs, "warmup": (64,) * 3 + (32,) * 9}
    ref = json.loads((ROOT / "reproduce/reference/table1_runs.json").read_text())
    walls: dict = {}
    for r in ref["runs"]:
        walls.setdefault(r["row"], []).append(r["wall_s"])
    est = {}
    print(f"\nestimate per table-1 run ({epochs} epochs x {steps_per_epoch} steps, {n_eval} evaluations, eager; "
          f"75/40/25 interpolated linearly in the kept count) vs reference wall_s (median of 5 seeds, 2 runs at "
          f"a time)")
    print(f"  {'row':7s} {'steps s':>8s} {'evals s':>8s} {'data s':>7s} {'total s':>8s} {'ref s':>7s} "
          f"{'ref/est':>7s} {'steps %':>7s} {'evals %':>7s} {'data %':>6s}")
    for row, ks in rows.items():
        st = sum(steps_per_epoch * masked_step(k) / 1e3 if k else steps_per_epoch * ms["nokd_eager"] / 1e3
                 for k in ks)
        ev_epochs = [e for e in range(epochs) if (e + 1) % cfg.eval_every == 0 or e + 1 == epochs]
        # a full view's teacher is counted at its first evaluation only (train.evaluate's memo)
        full_seen = [ks[e] == 64 and any(ks[f] == 64 for f in ev_epochs if f < e) for e in ev_epochs]
        evt = sum(ev["student_only"] if seen else ev_s(ks[e]) for e, seen in zip(ev_epochs, full_seen))
        tot = st + evt + data_s
        refw = statistics.median(walls[row])
        est[row] = {"steps_s": st, "evals_s": evt, "data_s": data_s, "total_s": tot, "ref_wall_s": refw,
                    "ref_walls": walls[row]}
        print(f"  {row:7s} {st:8.1f} {evt:8.1f} {data_s:7.1f} {tot:8.1f} {refw:7.1f} {refw / tot:7.2f} "
              f"{100 * st / tot:6.0f}% {100 * evt / tot:6.0f}% {100 * data_s / tot:5.0f}%")
    out["estimate"] = est
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
