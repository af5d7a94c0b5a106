"""Bad inputs that used to pass in silence and now fail at once, naming the bad value: teacher scores of the wrong
shape, out-of-range ratios on TrainConfig, and a re-run over an existing checkpoint."""
import json
import math
import re
import shlex

import pytest
import torch

import maskedkd as mkd
from maskedkd.experiments import TrainConfig, apply_overrides, config_hash, get_config

S = mkd.ViTConfig(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=1, num_heads=2)  # 4x4
T = S.replace(embed_dim=48, num_heads=3)  # same 4x4 grid: 16 patches
T_FINE = T.replace(patch_size=2)  # an 8x8 grid: student scores are resampled onto it
TINY = dict(data="digits", model="digits_student", train_size=32, test_size=32, batch_size=16, epochs=1,
            compile=False, threads=1, log_every=1, lr=1e-2)


def _x(b=4):
    return torch.randn(b, 1, 16, 16, generator=torch.Generator().manual_seed(0))


# 1. scores that are not one per patch of the grid the view expects


@pytest.mark.parametrize("kw", [{}, {"adaptive_mass": 0.5}, {"criterion": "random"}])
def test_scores_of_another_length_are_refused(kw):
    """The bug this guards: 9 scores for a 16-patch teacher picked 8 of the first 9 patches, silently."""
    view = mkd.TeacherView(T, mkd.init_params(T), num_keep=8, **kw)
    with torch.no_grad():
        assert view(_x(), torch.rand(4, 16)).keep_idx.shape == (4, 8)
        with pytest.raises(ValueError, match=r"scores of shape \(4, 9\).*expected \(4, 16\).*16 patches"):
            view(_x(), torch.rand(4, 9))


@pytest.mark.parametrize("shape", [(5, 16), (3, 16), (16,), (4, 4, 4)])
def test_scores_of_another_batch_or_rank_are_refused(shape):
    view = mkd.TeacherView(T, mkd.init_params(T), num_keep=8)
    want = re.escape(f"scores of shape {shape}") + r".*expected \(4, 16\)"
    with torch.no_grad(), pytest.raises(ValueError, match=want):
        view(_x(), torch.rand(shape))


def test_scores_on_another_grid_are_checked_before_resampling():
    """A 4x4 student ranks an 8x8 teacher (scores resampled, as a patch-16 student ranks a patch-14 teacher): 16
    scores are right, the teacher's own 64 are not."""
    view = mkd.TeacherView(T_FINE, mkd.init_params(T_FINE), num_keep=32).for_student(S)
    with torch.no_grad():
        assert view(_x(), torch.rand(4, 16)).keep_idx.shape == (4, 32)
        with pytest.raises(ValueError, match=r"scores of shape \(4, 64\).*expected \(4, 16\).*\(4, 4\) patch grid"):
            view(_x(), torch.rand(4, 64))


def test_the_train_step_still_passes_its_student_scores():
    """The loss passes the student's own scores (same grid and resampled): nothing refused, one kept count."""
    x, y = _x(), torch.randint(0, 5, (4,))
    for t in (T, T_FINE):
        loss, m = mkd.make_loss_fn(S, view=mkd.TeacherView(t, mkd.init_params(t), 8))(mkd.init_params(S), x, y)
        assert torch.isfinite(loss) and float(m["kept_tokens"]) == 8


# 2. ratios out of range


@pytest.mark.parametrize("key,bad", [("keep_ratio", 1.7), ("keep_ratio", 0.0), ("keep_ratio", -0.5),
                                     ("keep_ratio", math.nan), ("kd_weight", 1.5), ("kd_weight", -0.1),
                                     ("kd_weight", math.nan), ("adaptive_mass", 1.5), ("adaptive_mass", -0.2),
                                     ("drop_path", 1.0), ("drop_path", -0.1), ("layer_decay", 1.5),
                                     ("layer_decay", -0.75), ("temperature", 0.0), ("temperature", math.nan)])
def test_out_of_range_ratios_fail_at_config_construction(key, bad):
    with pytest.raises(ValueError, match=rf"{key}={bad!r}"):
        TrainConfig(**{key: bad})
    with pytest.raises(ValueError, match=rf"{key}={bad!r}"):
        apply_overrides(get_config("digits_student_kd"), [f"{key}={bad}"])


def test_keep_ratio_above_one_fails_on_the_command_line():
    """The bug this guards: `python -m maskedkd.train digits_student_kd keep_ratio=1.7` trained plain logit KD."""
    from maskedkd.train import main
    with pytest.raises(ValueError, match=r"keep_ratio=1.7 .*\(0, 1\]"):
        main(shlex.split("digits_student_kd keep_ratio=1.7 out_dir=/nonexistent/never-written"))


def test_edge_ratios_and_every_registered_config_stay_valid():
    from maskedkd.experiments import CONFIGS
    get_config("digits_teacher")  # imports the registry: every registered config is made, and so checked
    assert len(CONFIGS) > 10
    for kw in ({"keep_ratio": 1.0}, {"keep_ratio": 1e-3}, {"kd_weight": 0.0}, {"kd_weight": 1.0},
               {"adaptive_mass": 1.0, "num_keep": 8}, {"drop_path": 0.0}, {"layer_decay": 1.0}, {"temperature": 4.0}):
        TrainConfig(**kw)


# 3. a run directory that holds a checkpoint


def test_rerun_over_a_checkpoint_is_refused_until_resume_or_overwrite(tmp_path):
    """The bug this guards: re-running a crashed run's command started over and overwrote its checkpoint."""
    from maskedkd.train import run
    out = tmp_path / "r"
    cfg = TrainConfig(**TINY, out_dir=str(out), name="again")
    run(cfg.replace(max_steps=1))  # stops mid-epoch, as a crash after a checkpoint would
    ck, log = (out / "checkpoint.pt").read_bytes(), (out / "log.jsonl").read_bytes()
    with pytest.raises(ValueError, match=rf"{out / 'checkpoint.pt'} exists.*resume=true.*overwrite=true"):
        run(cfg)
    assert (out / "checkpoint.pt").read_bytes() == ck and (out / "log.jsonl").read_bytes() == log  # untouched
    s = run(cfg.replace(resume=True))
    assert s["steps"] == 2 and torch.load(out / "checkpoint.pt", weights_only=True)["global_step"] == 2
    s = run(cfg.replace(overwrite=True))  # starts over: one run's log, not two
    steps = [json.loads(l)["step"] for l in (out / "log.jsonl").read_text().splitlines() if '"step"' in l]
    assert s["steps"] == 2 and steps == [1, 2]
    with pytest.raises(ValueError, match="resume=true and overwrite=true"):
        cfg.replace(resume=True, overwrite=True)


def test_overwrite_is_not_part_of_the_run():
    c = TrainConfig(**TINY)
    assert config_hash(c.replace(overwrite=True)) == config_hash(c)


def test_cached_teacher_continues_its_interrupted_run(tmp_path, monkeypatch):
    """train_cached_teacher trains into a run directory named by the config hash: a run interrupted there is
    resumed, not refused; teachers.cached_teacher only reads (a missing teacher raises)."""
    from maskedkd import teachers
    from maskedkd.train import run, train_cached_teacher
    monkeypatch.setenv("MASKEDKD_CACHE", str(tmp_path / "cache"))
    tcfg = tmp_path / "tiny_teacher.py"
    tcfg.write_text("from maskedkd.experiments import TrainConfig\n"
                    f"CONFIG = TrainConfig(**{ {**TINY, 'model': 'digits_teacher', 'name': 'tiny_teacher'} !r})\n")
    c = get_config(str(tcfg))
    d = teachers.cache_dir() / "runs" / f"tiny_teacher-{config_hash(c)}"
    run(c.replace(out_dir=str(d), max_steps=1))
    with pytest.raises(FileNotFoundError, match="cache:tiny_teacher is not trained yet"):
        teachers.cached_teacher(c)
    path = train_cached_teacher(c)
    assert path == teachers.cached_teacher(c) and path.is_file() and json.loads((d / "summary.json").read_text())["steps"] == 2


def test_run_all_resumes_an_interrupted_run_and_fresh_starts_over(tmp_path, monkeypatch):
    """run_all re-runs into its cached run directories: with resume=true (fresh=False) or after deleting the
    checkpoint (fresh=True), never refused. Its subprocess is run in-process here."""
    from reproduce.lib import runner
    from maskedkd import train

    def in_process(cmd, **kw):
        assert cmd[1:3] == ["-m", "maskedkd.train"]
        train.main(cmd[3:])
        return runner.subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", in_process)
    threads = torch.get_num_threads()
    cfg = TrainConfig(**TINY, name="interrupted")
    d = runner.run_dir(tmp_path, cfg)
    try:
        train.run(cfg.replace(out_dir=str(d), max_steps=1))
        (d / "summary.json").unlink()  # a crash after the checkpoint leaves no summary
        s, = runner.run_all([cfg], root=tmp_path, jobs=1)
        assert s["steps"] == 2
        s, = runner.run_all([cfg], root=tmp_path, jobs=1, fresh=True)
        assert s["steps"] == 2
    finally:
        torch.set_num_threads(threads)
