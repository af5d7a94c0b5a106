"""The training program: `python -m maskedkd.train CONFIG [key=value ...]`, or under torchrun for data parallel.

Reads top to bottom: config -> distributed setup -> data -> teacher -> student -> resume -> epochs of compiled
steps (JSONL log, tqdm on rank 0, eval each epoch, atomic checkpoints) -> summary.json.
Data parallelism is detected from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): gloo on CPU, nccl on
GPU. Parameters are a dict of tensors, not a Module, so instead of the nn.Module DistributedDataParallel wrapper
the step all-reduces its gradients in one flat bucket: the same averaged update DDP makes.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import data as _data  # noqa: F401
from .checkpoint import load_checkpoint, read_state_dict, save_checkpoint, save_params
from .configs import TrainConfig, apply_overrides, get_config, model_config
from .data.loaders import build_data
from .model import forward, student_forward
from .select import keep_count
from .step import cosine_lr, make_optimizer, make_teacher_fn, make_train_step

ASSETS = Path(__file__).parent / "assets"


def cache_dir() -> Path:
    return Path(os.environ.get("MASKEDKD_CACHE", Path.home() / ".cache" / "maskedkd"))


# TrainConfig fields that do not change the trained weights
NOT_HASHED = frozenset({"out_dir", "resume", "ckpt_every", "log_every", "threads", "num_workers", "compile",
                        "eval_masked_teacher", "eval_every", "data_path"})


def config_hash(cfg: TrainConfig) -> str:
    """Hash of everything that changes the trained weights (not paths, logging or threads). Only fields that
    differ from TrainConfig's defaults enter it, so adding a new field (with a default) keeps old hashes valid."""
    base = dataclasses.asdict(TrainConfig())
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_HASHED and v != base[k]}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


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


def load_model(ref: str, model: str, num_classes: int, img_size: int | None, device: torch.device, role: str):
    """(config, params) of a model given as "cache:NAME" (an embedded config, trained once and cached) or as a
    checkpoint path with its preset name; its class count must match the data's."""
    if ref.startswith("cache:"):
        mcfg = get_config(ref[len("cache:"):])
        path = cached_teacher(mcfg)
        arch = model_config(mcfg.model, num_classes)
    else:
        if not model:
            raise ValueError(f"{role}=PATH needs {role}_model=NAME (a preset such as deit_small_patch16_224)")
        path = ref
        arch = model_config(model, num_classes, img_size)
    sd = read_state_dict(path)
    head = sd.get("head.weight")
    if head is not None and head.shape[0] != num_classes:
        raise ValueError(f"{role} {path} has {head.shape[0]} classes but the data has {num_classes}")
    params = load_checkpoint(sd, arch)
    return arch, {k: v.to(device) for k, v in params.items()}


def load_teacher(cfg: TrainConfig, num_classes: int, device: torch.device):
    """(teacher config, params) or (None, None) without a teacher."""
    if not cfg.teacher:
        return None, None
    return load_model(cfg.teacher, cfg.teacher_model, num_classes, cfg.img_size or None, device, "teacher")


def load_scorer(cfg: TrainConfig, num_classes: int, device: torch.device):
    """The step's `scorer`: "student", "teacher", or (config, params) of a fixed model."""
    if cfg.scorer in ("student", "teacher"):
        return cfg.scorer
    return load_model(cfg.scorer, cfg.scorer_model, num_classes, cfg.img_size or None, device, "scorer")


def cached_teacher(tcfg: TrainConfig) -> Path:
    """Path of an embedded teacher's weights: the committed artefact if its config hash matches, else the cache,
    training it there first (same program, no distillation) if it is missing."""
    h = config_hash(tcfg)
    shipped = ASSETS / f"{tcfg.name}.safetensors"
    if shipped.is_file():
        from safetensors import safe_open
        with safe_open(str(shipped), "pt") as f:
            if (f.metadata() or {}).get("config_hash") == h:
                return shipped
    path = cache_dir() / "teachers" / f"{tcfg.name}-{h}.safetensors"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # one trainer per cache entry: concurrent runs needing the same missing teacher wait for the first one
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            print(f"[maskedkd] training teacher {tcfg.name} once; it will be cached at {path}", file=sys.stderr)
            run(tcfg.replace(out_dir=str(cache_dir() / "runs" / f"{tcfg.name}-{h}")), final_params_path=path)
    return path


def evaluate(params, s_model, loader, device, teacher_fn=None):
    """Student top-1 on the eval set, and (with a teacher) the top-1 of `teacher_fn(x, student scores)`: the
    teacher on the patches this student selects (or merging tokens, for ToMe runs)."""
    correct = t_correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if teacher_fn is not None:
                logits, scores = student_forward(params, x, s_model)
                t_correct += (teacher_fn(x, scores).argmax(-1) == y).sum().item()
            else:
                logits = forward(params, x, s_model)
            correct += (logits.argmax(-1) == y).sum().item()
            total += len(y)
    out = {"acc": correct / max(1, total)}
    if teacher_fn is not None:
        out["teacher_acc_masked"] = t_correct / max(1, total)
    return out


def keep_schedule(cfg: TrainConfig, t_model, num_keep: int | None):
    """epoch -> kept patches (None: the full view, plain logit KD). keep_schedule is either
    "A:B" (percent): grows linearly from A% in the first epoch to B% in the last (the paper's open question of a
        keep-count curriculum), or
    "A*E,B" (percent, epochs): A% for the first E epochs, then B% (e.g. "100*3,50": full KD while the student's
        attention is immature, MaskedKD after); more phases chain ("100*2,75*4,50"), the last one lasts to the end.
    Without keep_schedule: the fixed num_keep."""
    if not cfg.keep_schedule:
        return lambda epoch: num_keep
    if t_model is None:
        raise ValueError("keep_schedule needs a teacher")
    n, spec = t_model.num_patches, cfg.keep_schedule
    bad = (f"keep_schedule={spec!r} must look like '25:75' (linear, percent) or '100*3,50' (percent*epochs "
           f"phases, the last without epochs)")

    def count(pct: float) -> int | None:
        if not 0 < pct <= 100:
            raise ValueError(f"{bad}: {pct:g}% is out of range (0, 100]")
        k = max(1, min(n, round(pct / 100 * n)))
        return None if k == n else k
    try:
        if ":" in spec:
            a, b = (float(v) for v in spec.split(":"))
            phases = None
        else:
            *head, last = spec.split(",")
            phases = [(float(p), int(e)) for p, e in (h.split("*") for h in head)] + [(float(last), cfg.epochs)]
    except ValueError:
        raise ValueError(bad) from None
    if phases is None:
        count(a), count(b)  # range checks
        return lambda epoch: count(a + (b - a) * (epoch / max(1, cfg.epochs - 1)))
    if any(e < 1 for _, e in phases[:-1]) or sum(e for _, e in phases[:-1]) >= cfg.epochs:
        raise ValueError(f"keep_schedule={spec!r}: each phase needs >= 1 epoch and the last phase must start "
                         f"before epoch {cfg.epochs} (epochs={cfg.epochs})")
    per_epoch = [count(p) for p, e in phases[:-1] for _ in range(e)]
    per_epoch += [count(phases[-1][0])] * (cfg.epochs - len(per_epoch))
    return lambda epoch: per_epoch[epoch]


def run(cfg: TrainConfig, final_params_path: Path | None = None) -> dict:
    """Train one config; returns the summary dict (also written to out_dir/summary.json)."""
    rank, world, device = setup_distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir or f"runs/{cfg.name}")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the {world} processes")
    if cfg.eval_every < 1:
        raise ValueError(f"eval_every={cfg.eval_every}: must be >= 1 (epochs between evaluations)")
    data = build_data(cfg, rank, world)
    s_model = model_config(cfg.model, data.num_classes, cfg.img_size or None)
    t_model, teacher = load_teacher(cfg, data.num_classes, device)
    num_keep = None
    if teacher is not None and (cfg.num_keep or cfg.keep_ratio < 1.0):
        num_keep = cfg.num_keep or keep_count(t_model.num_patches, cfg.keep_ratio)
    scorer = load_scorer(cfg, data.num_classes, device)
    keep_at = keep_schedule(cfg, t_model, num_keep)

    ckpt_path = out / "checkpoint.pt"
    state = None
    if cfg.resume and ckpt_path.is_file():
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"checkpoint {ckpt_path} is corrupt or unreadable ({type(e).__name__}: {e}); it was "
                             f"left as it is: move it away to start fresh") from e
    torch.manual_seed(cfg.seed * 1000 + rank)
    from .model import init_params
    params = init_params(s_model, seed=cfg.seed)
    if state is not None:
        params = {k: state["params"][k].clone() for k in params}
    params = {k: v.to(device) for k, v in params.items()}
    base_lr = cfg.lr * cfg.batch_size / 512
    opt = make_optimizer(params, lr=base_lr, weight_decay=cfg.weight_decay)
    steps: dict = {}  # one (compiled) step per kept count: a fixed run has one, a keep schedule a few

    def step_for(k):
        if k not in steps:
            steps[k] = make_train_step(
                s_model, t_model, teacher, num_keep=k, criterion=cfg.criterion, kd_weight=cfg.kd_weight,
                temperature=cfg.temperature, kind=cfg.kd_kind, kl_reduction=cfg.kl_reduction,
                drop_path=cfg.drop_path, compile=cfg.compile, scorer=scorer, student_keep=cfg.student_keep or None,
                feature_weight=cfg.feature_weight, tome_r=cfg.teacher_tome_r, adaptive_mass=cfg.adaptive_mass,
                grad_sync=all_reduce_mean(world) if world > 1 else None)
        return steps[k]
    steps_per_epoch = data.steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    epoch, in_epoch, global_step, history = 0, 0, 0, []
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        epoch, in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        history = json.loads(state["history"])
        torch.set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])

    def save(epoch_, in_epoch_):
        rngs = [torch.get_rng_state()]
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if rank == 0:
            save_checkpoint({"params": {k: v.detach().cpu() for k, v in params.items()},
                             "optimizer": opt.state_dict(), "epoch": epoch_, "step_in_epoch": in_epoch_,
                             "global_step": global_step, "rng": rngs, "history": json.dumps(history),
                             "config": json.dumps(dataclasses.asdict(cfg))}, ckpt_path)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    bar = None
    if rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=global_step, desc=cfg.name, dynamic_ncols=True, mininterval=2,
                   disable=None)
    t_start = time.time()
    stop = False
    while epoch < cfg.epochs and not stop:
        num_keep = keep_at(epoch)
        step_fn = step_for(num_keep)
        for x, y in data.train_batches(epoch, start=in_epoch):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(global_step, total_steps=total, base_lr=base_lr, min_lr=cfg.min_lr,
                                    warmup_lr=cfg.warmup_lr, warmup_steps=int(cfg.warmup_epochs * steps_per_epoch))
            m = step_fn(params, opt, x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            global_step += 1
            in_epoch += 1
            if bar is not None:
                bar.update(1)
            if rank == 0 and (global_step % cfg.log_every == 0 or in_epoch == steps_per_epoch):
                rec = {"step": global_step, "epoch": epoch, "lr": opt.param_groups[0]["lr"],
                       **{k: round(float(v), 5) for k, v in m.items()}}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.set_postfix(loss=rec["loss"], refresh=False)
            if cfg.ckpt_every and global_step % cfg.ckpt_every == 0:
                save(epoch, in_epoch)
            if cfg.max_steps and global_step >= cfg.max_steps:
                stop = True
                break
        if stop and in_epoch < steps_per_epoch:
            break
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            teacher_fn = None
            if teacher is not None and cfg.eval_masked_teacher:
                teacher_fn = make_teacher_fn(s_model, t_model, teacher, num_keep=num_keep, criterion=cfg.criterion,
                                             scorer=scorer, tome_r=cfg.teacher_tome_r,
                                             adaptive_mass=cfg.adaptive_mass)
            ev = evaluate(params, s_model, data.eval_batches(), device, teacher_fn)
            history.append({"epoch": epoch, **ev, **({"num_keep": num_keep} if cfg.keep_schedule else {})})
            if rank == 0:
                log.write(json.dumps({"epoch": epoch, "eval": ev, "wall_s": round(time.time() - t_start, 1)}) + "\n")
                log.flush()
                bar.set_postfix(acc=ev["acc"], refresh=False)
        epoch, in_epoch = epoch + 1, 0
        save(epoch, 0)
    if bar is not None:
        bar.close()
    summary = {"name": cfg.name, "config_hash": config_hash(cfg), "final_acc": history[-1]["acc"] if history else None,
               "history": history, "num_keep": num_keep, "steps": global_step, "world_size": world,
               "wall_s": round(time.time() - t_start, 1), "student": s_model.name,
               "teacher": t_model.name if t_model else None}
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        save_params(params, out / "params.safetensors", metadata={"config_hash": config_hash(cfg)})
        if final_params_path is not None:
            save_params(params, final_params_path, metadata={"config_hash": config_hash(cfg),
                                                             "final_acc": str(summary["final_acc"])})
        log.close()
    return summary


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        from .configs import CONFIGS, DOCS
        get_config("digits_teacher")  # loads the registry
        print(__doc__)
        for name in sorted(CONFIGS):
            print(f"  {name}: {DOCS.get(name, '')}")
        print("keys:", ", ".join(f.name for f in dataclasses.fields(TrainConfig)))
        return {}
    cfg = apply_overrides(get_config(argv[0]), argv[1:])
    summary = run(cfg)
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()
