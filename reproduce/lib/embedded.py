"""The embedded-scale runs shared by table 1, figure 2 and the analyses: the plans of each mode, one run per (seed,
kept patches) named by what it is (so every script that needs the same run finds it finished in results/runs/),
what a run's teacher sees and saves, and the teacher's random-patch curve. Runs files and the reference: records.py;
the shared flags: flags.py."""
from __future__ import annotations

from pathlib import Path

from maskedkd.experiments import MODELS, TrainConfig, get_config

ROOT = Path(__file__).resolve().parents[2]  # the repository

# The embedded image regimes (maskedkd/experiments/digits.py): the default, and the fixed-places and cluttered
# stress regimes.
REGIMES = ("digits", "fixed_places", "cluttered")
QUICK_EPOCHS = {"digits": 5, "fixed_places": 5, "cluttered": 4}  # of 30, 15; cluttered: 1 clean + 3 cluttered of 12


def plan(mode: str, task: str = "digits") -> tuple[list[int], dict]:
    """Seeds and student-run settings for the default / quick / smoke modes of a task (an image regime or
    "sounds")."""
    if task == "sounds":
        return {"smoke": ([0], dict(epochs=1, train_size=128, test_size=64, batch_size=32)),
                "quick": ([0], dict(epochs=5)),
                "default": ([0, 1, 2, 3, 4], {})}[mode]  # 5 seeds: the claims' 4 degrees of freedom
    if task not in REGIMES:
        raise ValueError(f"task {task!r}: expected 'sounds' or one of the image regimes {REGIMES}")
    if mode == "smoke":
        return [0], dict(epochs=1, train_size=256, test_size=200, batch_size=32)
    if mode == "quick":  # a first look: 1 seed, fewer epochs
        return [0], dict(epochs=QUICK_EPOCHS[task])
    # the student config's own recipe (experiments/digits.py); 5 seeds so that the paired differences of
    # reproduce/lib/claims.py have 4 degrees of freedom
    return [0, 1, 2, 3, 4], {}


CURVE_KEPT = (100, 75, 50, 40, 25)  # percent of the patches kept at random: the regime's teacher curve


def teacher_curve(tcfg: TrainConfig, params_path, data_cfg: TrainConfig, draws: int = 3) -> dict[str, float]:
    """Percent kept -> the teacher's test accuracy when shown that share of its patches chosen at random
    (keep_count; the mean over `draws` fixed draws), on the test set of data_cfg's data (the digit scene or the
    sound set). The property the method relies on: the paper's DeiT-B keeps 76.9 / 81.8 = 0.94 of its accuracy on
    a random half [docs/paper.md#masking-criteria]."""
    import statistics

    import torch

    import maskedkd as mkd
    from maskedkd.data.loaders import fixed_test_set
    from maskedkd.select import keep_count
    t_cfg = MODELS[tcfg.model]
    params = mkd.load_checkpoint(params_path, t_cfg)
    x, y = fixed_test_set(data_cfg)
    n = t_cfg.num_patches
    out = {}
    with torch.no_grad():
        for pct in CURVE_KEPT:
            k = keep_count(n, pct / 100)
            accs = []
            for d in range(1 if k == n else draws):
                g = torch.Generator().manual_seed(d)
                idx = None if k == n else torch.rand(len(x), n, generator=g).argsort(-1)[:, :k].sort(-1).values
                accs.append((mkd.teacher_forward(params, x, t_cfg, idx).argmax(-1) == y).float().mean().item())
            out[str(pct)] = statistics.fmean(accs)
    return out


# A patch is near-blank when the mean over channels of its pixels' standard deviation is below this, in normalised
# units (the data's own normalisation); fixed before any attention figure was measured (reproduce/lib/regime.py).
BLANK_SPREAD = 0.15


def attention_figures(s_cfg: TrainConfig, s_params, t_cfg: TrainConfig, t_params, draws: int = 3) -> dict:
    """What a trained student's last-block CLS attention is worth to the teacher, on the test set of s_cfg's data,
    half of the patches kept (keep_count):
    - top_half / random_half: the teacher's accuracy on the student's top half / on a random half (the mean over the
      `draws` fixed draws of teacher_curve, so the two pair exactly); top_minus_random: the difference in points;
      flat_last_half: on the half select.topk_flat_last keeps from the same scores;
    - mean_top_half: the teacher on the top half of the attention averaged over the test set (one half for every
      image: what position alone gives), and top_overlap_with_mean: the share of an image's own top half that lies in
      that common half (1: the ranking is positional; 0.5: unrelated to it);
    - blank_share, blank_in_top_half, blank_attention_mass: near-blank patches (BLANK_SPREAD) among all patches,
      in the student's top half, and the share of the student's attention they receive."""
    import torch

    import maskedkd as mkd
    from maskedkd.data.loaders import fixed_test_set
    from maskedkd.select import keep_count, patch_spread, select_tokens
    sm, tm = MODELS[s_cfg.model], MODELS[t_cfg.model]
    s_params = s_params if isinstance(s_params, dict) else mkd.load_checkpoint(s_params, sm)
    t_params = t_params if isinstance(t_params, dict) else mkd.load_checkpoint(t_params, tm)
    x, y = fixed_test_set(s_cfg)
    n = sm.num_patches
    k = keep_count(n, 0.5)

    def teacher_acc(idx):
        return 100 * (mkd.teacher_forward(t_params, x, tm, idx.sort(-1).values).argmax(-1) == y).float().mean().item()

    with torch.no_grad():
        scores = mkd.student_forward(s_params, x, sm)[1]  # (b n)
        top = scores.topk(k, -1).indices
        common = scores.mean(0).topk(k).indices
        random_acc = sum(teacher_acc(torch.rand(len(x), n, generator=torch.Generator().manual_seed(d))
                                     .argsort(-1)[:, :k]) for d in range(draws)) / draws
        spread = patch_spread(mkd.patchify(x, sm.patch_size), sm.in_chans)  # (b n)
        blank = spread < BLANK_SPREAD
        top_acc = teacher_acc(top)
        return {"top_half": top_acc, "random_half": random_acc, "top_minus_random": top_acc - random_acc,
                "flat_last_half": teacher_acc(select_tokens(scores, k, "topk_flat_last", spread=spread)),
                "mean_top_half": teacher_acc(common.expand(len(x), k)),
                "top_overlap_with_mean": torch.isin(top, common).float().mean().item(),
                "blank_share": blank.float().mean().item(),
                "blank_in_top_half": blank.gather(1, top).float().mean().item(),
                "blank_attention_mass": ((scores * blank).sum() / scores.sum()).item()}


def shown_path(path) -> str:
    """A weights path as a report shows it: relative to the repository when inside it (the shipped teacher, the same
    on every checkout), else as given (a cache entry)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def teacher_config(mode: str, task: str = "digits") -> TrainConfig:
    return get_config(f"{task}_teacher_smoke" if mode == "smoke" else f"{task}_teacher")


def student_run(mode: str, seed: int, num_keep: int | None, *, teacher: bool = True, criterion: str = "topk",
                scorer: str = "student", task: str = "digits", **extra) -> TrainConfig:
    """A student run: no KD (teacher=False), logit KD (num_keep None, or every patch) or MaskedKD with num_keep
    patches; `extra` sets other TrainConfig fields (kd_kind, keep_schedule, adaptive_mass, teacher_tome_r,
    student_keep). Named by run_name."""
    _, kw = plan(mode, task)
    fields = {"seed": seed, **kw, **extra}  # one replace: a config is checked whole, never half-made
    if teacher:
        t = teacher_config(mode, task)
        full = num_keep is None or num_keep == MODELS[t.model].num_patches
        masked = not (full or extra.get("teacher_tome_r") or extra.get("keep_schedule"))
        fields.update(teacher=f"cache:{t.name}", teacher_model=t.model, num_keep=num_keep if masked else 0,
                      criterion=criterion if masked else "topk", scorer=scorer if masked else "student")
    c = get_config(f"{task}_student_nokd").replace(**fields)
    return c.replace(name=run_name(c, task))


def warmup_epochs(mode: str) -> int:
    """Full-KD epochs before MaskedKD 50% in the warm-up remedy (3 in the default mode; 1 in quick and smoke)."""
    return 3 if mode == "default" else 1


def warmup_run(mode: str, seed: int, task: str = "digits") -> TrainConfig:
    """The full-KD warm-up remedy: the teacher sees every patch for warmup_epochs(mode) epochs, then the 50% the
    student ranks highest (keep_schedule "100*3,50"). The same run as reproduce/beyond.py's warm-up row (named
    digits_student_sched100x3-50-sN in the default mode), so either script reuses the other's finished run."""
    smoke = {"epochs": 2, "eval_every": 1} if mode == "smoke" else {}  # smoke: 1 + 1 epochs
    return student_run(mode, seed, None, keep_schedule=f"100*{warmup_epochs(mode)},50", task=task, **smoke)


def run_name(c: TrainConfig, task: str = "digits") -> str:
    """A run's name, read off its config: what the teacher sees (no KD, full KD, kept count, schedule, adaptive
    budget, ToMe r, or the student masked instead), then the non-default criterion, scorer and kd kind, then the
    seed. The name is part of the config hash, so these names are the cache keys of every finished run."""
    kind = "" if c.kd_kind == "soft" else f"-{c.kd_kind}"
    if not c.teacher:
        what = "nokd"
    elif c.adaptive_mass:
        what = f"adaptive{int(100 * c.adaptive_mass)}max{c.num_keep}{kind}"
    elif c.teacher_tome_r:
        what = f"tome{c.teacher_tome_r}{kind}"
    elif c.keep_schedule:  # "100*3,50" -> 100x3-50
        what = "sched" + c.keep_schedule.replace(":", "to").replace("*", "x").replace(",", "-") + kind
    elif c.student_keep:
        what = f"studentkeep{c.student_keep}"
    elif not c.num_keep:
        what = f"kd{kind}"
    else:
        tag = ("" if c.criterion == "topk" else f"-{c.criterion}") + (
            "" if c.scorer == "student" else f"-by-{c.scorer.replace('cache:', '')}")
        what = f"keep{c.num_keep}{tag}{kind}"
    return f"{task}_student_{what}-s{c.seed}"


# --- a script's runs as data: results/SCRIPT_runs.json, the claims it settles, and the committed reference -------

def row_id(c: TrainConfig) -> str:
    """A run's row: its name without the task prefix and the seed ('keep32-random', 'tome8', 'nokd')."""
    return c.name.split("_student_", 1)[1].rsplit("-s", 1)[0]


def describe(c: TrainConfig) -> tuple[str, str]:
    """(what the teacher sees, the teacher MACs saved against a full teacher, scorer passes counted) of a run."""
    from maskedkd.flops import macs
    from maskedkd.teachers import run_macs
    from maskedkd.select import keep_schedule
    if not c.teacher:
        return "–", "–"
    t = MODELS[c.teacher_model]
    n = t.num_patches
    cost = run_macs(c)
    saved = f"{100 * (1 - (cost['teacher'] + cost['scorer']) / macs(t)):.0f}%"
    if c.teacher_tome_r:
        return f"{n} / {n}, ToMe r={c.teacher_tome_r}", saved
    if c.keep_schedule:
        counts = list(dict.fromkeys(k or n for k in keep_schedule(c.keep_schedule, n, c.epochs)))
        shown = counts if len(counts) <= 3 else [counts[0], "…", counts[-1]]
        return " → ".join(map(str, shown)) + f" / {n}", saved
    if c.adaptive_mass:
        return f"≤ {c.num_keep} / {n}, {100 * c.adaptive_mass:.0f}% of attention", saved
    kept = f"{c.num_keep or n} / {n}"
    return (kept + f", student sees {c.student_keep}" if c.student_keep else kept), saved


