"""The training program: `python -m maskedkd.train CONFIG [key=value ...]`, or under torchrun for data parallel.

Reads top to bottom: config -> distributed setup -> data -> the teacher's view (maskedkd.teachers: checkpoint or
cached embedded teacher, kept count, schedule) -> student -> resume -> epochs of compiled steps (JSONL log, tqdm on
rank 0, evaluation every eval_every epochs, atomic checkpoints) -> summary.json and the student: params.safetensors
(timm's names), student.json (its card: teacher, kept patches, recipe, accuracy, hash, how timm loads it) and, for an
AST student, a transformers folder (maskedkd.export).
A run directory that holds checkpoint.pt is never started over in silence (a crashed run lost by re-running its
command): `resume=true` continues it, `overwrite=true` starts over there (its checkpoint, log, summary and weights
are replaced), or give another `out_dir=`. `resume=true` where there is no checkpoint starts a fresh run and says
so on stderr (the lab's runner and cached teachers pass it to every run, finished or not). The lab's runner (reproduce/lib/runner.py) and cached teachers resume
their own directories. CONFIG is a registered name, a JSON config file (experiments.write_config) or a Python file.
Data parallelism is detected from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): gloo on CPU, nccl on
GPU. Parameters are a dict of tensors, not a Module, so instead of the nn.Module DistributedDataParallel wrapper
the step all-reduces its gradients in one flat bucket: the same averaged update DDP makes.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import load_init, save_checkpoint, save_params
from .export import write_student
from .reproducible import kernels
from .data.loaders import build_data
from .experiments import (NOT_HASHED, TrainConfig, apply_overrides, check_runnable, config_diff, config_hash,
                          field_table, get_config, model_config)
from .model import forward, init_params, student_forward
from .optim import cosine_lr, make_optimizer
from .precision import allow_compiled_graphs, autocast, cast_matmul_weights, uses_bf16
from .step import make_train_step
from .teachers import cache_dir, cache_path, cached_teacher, teacher_view
from .view import TeacherView


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; a single process when it is absent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def all_reduce_mean(world: int):
    """grads dict -> averaged over processes in place, one flat bucket."""
    def sync(grads: dict[str, torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads.values()])
        dist.all_reduce(flat)
        flat /= world
        off = 0
        for k, g in grads.items():
            grads[k] = flat[off: off + g.numel()].view_as(g)
            off += g.numel()
    return sync


def evaluate(params, s_model, batches, device, view=None, *, precision: str = "auto", world: int = 1,
             memo: dict | None = None) -> dict:
    """Student top-1 over the eval set, and (with a teacher view) the top-1 of the teacher on what the view shows it
    for this student's scores. Each rank counts its shard (data.eval_batches); the counts are summed over ranks
    once at the end, the only host sync. A full or ToMe view's teacher does not depend on the student: with `memo` (a
    dict kept for the run) its count is computed at the first evaluation and reused."""
    fixed = view is not None and view.mode in ("full", "tome")  # the teacher sees the same whatever the student
    reuse = fixed and memo is not None and "fixed_teacher_correct" in memo
    counts = torch.zeros(3, dtype=torch.int64, device=device)  # correct, teacher correct, total
    with torch.no_grad(), autocast(device.type, precision):
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if view is not None and not reuse:
                logits, scores = student_forward(params, x, s_model)
                counts[1] += (view(x, scores).logits.argmax(-1) == y).sum()
            else:
                logits = forward(params, x, s_model)
            counts[0] += (logits.argmax(-1) == y).sum()
            counts[2] += len(y)
    if reuse:
        counts[1] = memo["fixed_teacher_correct"]
    elif fixed and memo is not None:
        memo["fixed_teacher_correct"] = counts[1].clone()
    if world > 1:
        dist.all_reduce(counts)
    correct, t_correct, total = counts.tolist()
    out = {"acc": correct / max(1, total)}
    if view is not None:
        out["teacher_acc_masked"] = t_correct / max(1, total)
    return out


def pool_logits(view, x: torch.Tensor, batch: int, device, precision: str) -> torch.Tensor:
    """A full view's logits for every row of an in-memory training pool, computed once per pool instead of once per
    step and epoch. Every call is one full training batch (the last overlaps the one before), so each row comes out
    of kernels of the step's own shapes: the same bits as the step's teacher forward, since a row of a batched GEMM
    or attention does not depend on the other rows (a smaller last batch took other kernels and other bits here).
    tests/test_train.py checks whole runs bitwise with and without it."""
    n = len(x)
    if n < batch:
        raise ValueError(f"a pool of {n} rows has no training batch of {batch}")
    out = []
    with torch.no_grad(), autocast(device.type, precision):
        for i in range(0, n, batch):
            s = min(i, n - batch)  # the last call starts early, overlapping the one before
            out.append(view(x[s: s + batch].to(device)).logits[i - s:])
    return torch.cat(out)


def check_resume(state: dict, cfg: TrainConfig, world: int, path: Path) -> None:
    """A checkpoint resumes only the run that wrote it: the same number of processes (each restores its own RNG
    state and data shard) and the same config, paths, logging, threads and max_steps aside."""
    missing = sorted({"params", "optimizer", "epoch", "step_in_epoch", "global_step", "rng", "history", "config"}
                     - set(state) if isinstance(state, dict) else {"a dict"})
    if missing:
        raise ValueError(f"{path} is not a training checkpoint of this program (it lacks {missing}): move it away to "
                         f"start fresh, or give another out_dir=")
    if len(state["rng"]) != world:
        raise ValueError(f"checkpoint {path} was written by {len(state['rng'])} process(es); resuming it with {world} "
                         f"would change every rank's random stream and data shard")
    try:
        diff = config_diff(json.loads(state["config"]), cfg, NOT_HASHED | {"max_steps"})
    except ValueError as e:
        raise ValueError(f"checkpoint {path} records a config this version refuses ({e}): move it away to start "
                         f"fresh") from None
    if diff:
        raise ValueError(f"checkpoint {path} was written by another config (field: (checkpoint, now)) {diff}: "
                         f"resume with the same config, or move the checkpoint away to start fresh")


def train_cached_teacher(tcfg: TrainConfig) -> Path:
    """An embedded teacher's weights (maskedkd.teachers.cached_teacher), trained here first, once, if neither shipped
    nor cached: this program without distillation, into a run directory named by the config hash (an interrupted
    training continues there, bit-exact), under a lock so that concurrent runs needing it wait for the first."""
    try:
        return cached_teacher(tcfg)
    except FileNotFoundError:
        pass
    path = cache_path(tcfg)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise ValueError(f"teacher cache:{tcfg.name} is not trained yet ({path} is missing) and this is a "
                         f"{dist.get_world_size()}-process run: train it first in one process (a run that names it, or "
                         f"maskedkd.train.train_cached_teacher(config)); it is then cached")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            print(f"[maskedkd] training teacher {tcfg.name} once; it will be cached at {path}", file=sys.stderr)
            threads = torch.get_num_threads()
            try:
                run_dir = cache_dir() / "runs" / f"{tcfg.name}-{config_hash(tcfg)}"
                run(tcfg.replace(out_dir=str(run_dir), resume=True, overwrite=False), final_params_path=path)
            finally:
                torch.set_num_threads(threads)  # the teacher's recipe sets its own
    return path


def run_view(cfg: TrainConfig, num_classes: int, s_model, device: torch.device) -> TeacherView | None:
    """The one finished view of a run (None: no distillation): its cache:NAME teacher and scorer trained if missing,
    the view its config describes (maskedkd.teachers.teacher_view), the teacher's and scorer's matmul weights cast
    once under bf16 (what autocast casts at every step), and scores read on the student's patch grid."""
    for ref in (cfg.teacher, cfg.scorer):
        if ref.startswith("cache:"):
            train_cached_teacher(get_config(ref[len("cache:"):]))
    view = teacher_view(cfg, num_classes, device)
    if view is None:
        return None
    if uses_bf16(device.type, cfg.precision):
        scorer = view.scorer if isinstance(view.scorer, str) else (view.scorer[0], cast_matmul_weights(view.scorer[1]))
        view = view.replace(params=cast_matmul_weights(view.params), scorer=scorer)
    return view.for_student(s_model)


def student_card(cfg: TrainConfig, summary: dict, view: TeacherView | None) -> dict:
    """What the distilled student's card (out_dir/student.json, maskedkd.export.write_student) says of its run: the
    teacher as the run named it and its architecture, the patches it saw per epoch, the recipe, the final accuracy
    and the config hash."""
    kept = None if view is None else (list(view.schedule) if view.schedule else view.num_keep)
    return {"name": cfg.name, "config_hash": summary["config_hash"], "final_acc": summary["final_acc"],
            "teacher": cfg.teacher or None, "teacher_architecture": summary["teacher"],
            "teacher_patches": None if view is None else view.cfg.num_patches,
            "kept_patches": kept,  # None: every patch (or no teacher); a list: per epoch (keep_schedule)
            "recipe": dataclasses.asdict(cfg), "steps": summary["steps"]}


def run(cfg: TrainConfig, final_params_path: Path | None = None) -> dict:
    """Train one config; returns the summary dict (also written to out_dir/summary.json)."""
    # processes and checks that need no data
    rank, world, device = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir or f"runs/{cfg.name}")
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file() and not (cfg.resume or cfg.overwrite):
        raise ValueError(f"{ckpt_path} exists: re-running here would start that run over and overwrite it. Continue "
                         f"it with resume=true, or start over with overwrite=true (or give another out_dir=)")
    check_runnable(cfg)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} processes")
    if cfg.resume and not ckpt_path.is_file() and rank == 0:
        print(f"[maskedkd] resume=true: there is no checkpoint at {ckpt_path}, so this is a fresh run",
              file=sys.stderr)

    # data, the teacher (the view it is seen through; None: no distillation), the student
    data = build_data(cfg, rank, world)
    s_model = model_config(cfg.model, data.num_classes, cfg.img_size or None)
    view = run_view(cfg, data.num_classes, s_model, device)
    state = None
    if cfg.resume and ckpt_path.is_file():
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"checkpoint {ckpt_path} is corrupt or unreadable ({type(e).__name__}: {e}); it was "
                             f"left as it is: move it away to start fresh") from e
        check_resume(state, cfg, world, ckpt_path)
    torch.manual_seed(cfg.seed * 1000 + rank)
    params = load_init(cfg.init, s_model, seed=cfg.seed) if cfg.init else init_params(s_model, seed=cfg.seed)
    if state is not None:
        params = {k: state["params"][k].clone() for k in params}
    params = {k: v.to(device) for k, v in params.items()}
    base_lr = cfg.lr * cfg.batch_size / 512
    opt = make_optimizer(params, lr=base_lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)

    # one (compiled) step per kept count: a fixed run has one, a keep schedule one per distinct count
    steps: dict = {}
    if cfg.compile:
        allow_compiled_graphs(len(set(view.schedule)) if view is not None and view.schedule else 1)

    def step_for(v):
        k = None if v is None else v.num_keep
        if k not in steps:
            steps[k] = make_train_step(
                s_model, view=v, kd_weight=cfg.kd_weight, temperature=cfg.temperature, kind=cfg.kd_kind,
                kl_reduction=cfg.kl_reduction, feature_weight=cfg.feature_weight, drop_path=cfg.drop_path,
                student_keep=cfg.student_keep or None, precision=cfg.precision, compile=cfg.compile,
                grad_sync=all_reduce_mean(world) if world > 1 else None)
        return steps[k]
    for e in range(cfg.epochs):  # built (and their options checked) now, not epochs into a keep schedule
        step_for(view and view.at_epoch(e))
    steps_per_epoch = data.steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    epoch, in_epoch, global_step, history = 0, 0, 0, []
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        epoch, in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        history = json.loads(state["history"])
        torch.set_rng_state(state["rng"][rank])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"][rank], device)

    def save(epoch_, in_epoch_):
        rngs = [torch.get_rng_state()]
        cuda_rngs = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, (rngs[0], cuda_rngs))
            rngs, cuda_rngs = [g[0] for g in gathered], [c for g in gathered for c in g[1]]
        if rank == 0:
            save_checkpoint({"params": {k: v.detach().cpu() for k, v in params.items()},
                             "optimizer": opt.state_dict(), "epoch": epoch_, "step_in_epoch": in_epoch_,
                             "global_step": global_step, "rng": rngs, "history": json.dumps(history),
                             "config": json.dumps(dataclasses.asdict(cfg)),
                             **({"cuda_rng": cuda_rngs} if cuda_rngs else {})}, ckpt_path)

    # logging
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:  # nothing of the run it replaces is left to mix with this one
            for f in ("checkpoint.pt", "log.jsonl", "summary.json", "params.safetensors", "student.json"):
                (out / f).unlink(missing_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    bar = None
    if rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=global_step, desc=cfg.name, dynamic_ncols=True, mininterval=2,
                   disable=None)

    # epochs of steps, evaluation every eval_every epochs (and after the last), a checkpoint after each epoch
    t_start = time.time()
    eval_memo: dict = {}  # a student-independent teacher's eval count, computed once (evaluate)
    stop = False
    v = view and view.at_epoch(min(epoch, cfg.epochs - 1))  # the summary's view if a finished run is resumed
    while epoch < cfg.epochs and not stop:
        v = view and view.at_epoch(epoch)
        step_fn = step_for(v)
        # a full teacher over an un-augmented in-memory pool: its logits once per pool (kept by the data), then rows
        rows = data.teacher_rows(epoch, in_epoch, lambda pool, v=v: pool_logits(
            v, pool, cfg.batch_size // world, device, cfg.precision)) if step_fn.takes_teacher_logits else None
        for x, y in data.train_batches(epoch, start=in_epoch):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(global_step, total_steps=total, base_lr=base_lr, min_lr=cfg.min_lr,
                                    warmup_lr=cfg.warmup_lr, warmup_steps=int(cfg.warmup_epochs * steps_per_epoch)
                                    ) * g.get("lr_scale", 1.0)  # MAE's layer-wise decay; exact no-op without it
            m = step_fn(params, opt, *data.to_device(x, y, device), *(() if rows is None else (next(rows),)))
            global_step += 1
            in_epoch += 1
            if bar is not None:
                bar.update(1)
            if rank == 0 and (global_step % cfg.log_every == 0 or in_epoch == steps_per_epoch):
                rec = {"step": global_step, "epoch": epoch, "lr": opt.param_groups[0]["lr"],
                       **{k: round(float(val), 5) for k, val in m.items()}}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=rec["loss"], refresh=False)
            if cfg.ckpt_every and global_step % cfg.ckpt_every == 0:
                save(epoch, in_epoch)
            if cfg.max_steps and global_step >= cfg.max_steps:
                stop = True
                break
        if stop and in_epoch < steps_per_epoch:
            save(epoch, in_epoch)  # a later resume=true continues from here
            break
        last = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.eval_every == 0 or last:
            with_teacher = cfg.eval_masked_teacher and ((epoch + 1) % cfg.eval_teacher_every == 0 or last)
            ev = evaluate(params, s_model, data.eval_batches(), device, v if with_teacher else None,
                          precision=cfg.precision, world=world, memo=eval_memo)
            history.append({"epoch": epoch, **ev, **({"num_keep": v.num_keep} if cfg.keep_schedule else {})})
            if rank == 0:
                log.write(json.dumps({"epoch": epoch, "eval": ev, "wall_s": round(time.time() - t_start, 1)}) + "\n")
                log.flush()
                bar.set_postfix(acc=ev["acc"], refresh=False)
        epoch, in_epoch = epoch + 1, 0
        save(epoch, 0)
    if bar is not None:
        bar.close()

    # summary and final weights
    h = config_hash(cfg)
    summary = {"name": cfg.name, "config_hash": h, "final_acc": history[-1]["acc"] if history else None,
               "history": history, "num_keep": v.num_keep if v is not None else None, "steps": global_step,
               "world_size": world, "wall_s": round(time.time() - t_start, 1), "student": s_model.name,
               "teacher": view.cfg.name if view else None, "kernels": kernels()}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if final_params_path is not None:  # a cached teacher first: what a later run reads
            save_params(params, final_params_path, metadata={"config_hash": h,
                                                             "final_acc": str(summary["final_acc"])})
        write_student(params, s_model, out, student_card(cfg, summary, view))
        log.close()
    return summary


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        from .experiments import CONFIGS, DOCS
        get_config("digits_teacher")  # loads the registry
        print(__doc__)
        for name in sorted(CONFIGS):
            print(f"  {name}: {DOCS.get(name, '')}")
        print("\nkeys (key=value; each checked against what it takes, maskedkd/experiments/core.py):")
        print(field_table())
        return {}
    cfg = apply_overrides(get_config(argv[0]), argv[1:])
    summary = run(cfg)
    if dist.is_initialized():
        # every rank reaches teardown together: a rank that destroys its gloo group while a peer is still writing
        # the run's files was seen to abort at exit ("terminate called without an active exception"; the two-process
        # test in tests/test_train.py)
        dist.barrier()
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    from .checks import InputError
    try:
        main()
    except InputError as e:  # a value the user typed: the message names it; no traceback through the program
        sys.exit(f"maskedkd.train: error: {e}")
