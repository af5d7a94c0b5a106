"""The training program end to end on tiny runs: logs, checkpoints, errors, teacher cache, exact resume, DDP."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import maskedkd as mkd
from maskedkd.data.loaders import DigitsData, TensorData
from maskedkd.experiments import MODELS, TrainConfig, apply_overrides, get_config
from maskedkd.train import run

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(data="digits", model="digits_student", train_size=128, test_size=64, batch_size=16, epochs=1,
            compile=False, threads=1, log_every=1, lr=1e-2)
FILES = {k: v for k, v in TINY.items() if k not in ("train_size", "test_size")}  # sizes a data folder sets itself


def _env(tmp_path):
    return {**os.environ, "MASKEDKD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT)}


def test_smoke_run_writes_log_summary_checkpoint(tmp_path):
    s = run(TrainConfig(**TINY, name="smoke", out_dir=str(tmp_path / "r")))
    assert s["steps"] == 8 and 0.0 <= s["final_acc"] <= 1.0 and len(s["history"]) == 1
    lines = [json.loads(l) for l in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "step" in l] == list(range(1, 9))
    assert lines[-1]["eval"]["acc"] == s["final_acc"]
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["global_step"] == 8 and set(ck["params"]) == set(mkd.param_shapes(
        MODELS["digits_student"]))
    saved = load_file(str(tmp_path / "r" / "params.safetensors"))
    assert all(torch.equal(saved[k], ck["params"][k]) for k in saved)


def test_eval_every_evaluates_every_kth_epoch_and_the_last(tmp_path):
    s = run(TrainConfig(**{**TINY, "train_size": 32, "epochs": 5}, eval_every=2, name="ev", out_dir=str(tmp_path / "r")))
    assert [h["epoch"] for h in s["history"]] == [1, 3, 4] and s["final_acc"] == s["history"][-1]["acc"]
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 5 and ck["global_step"] == 10
    with pytest.raises(ValueError, match="eval_every=0"):
        run(TrainConfig(**TINY, eval_every=0, out_dir=str(tmp_path / "bad")))


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError, match="unknown config key 'lrate'.*'lr'"):
        apply_overrides(get_config("digits_student_nokd"), ["lrate=1"])
    with pytest.raises(ValueError, match="unknown config 'nope'"):
        get_config("nope")


def test_errors_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        run(TrainConfig(**{**FILES, "data": "imagefolder"}, data_path=str(tmp_path / "missing"),
                        out_dir=str(tmp_path / "a")))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="empty"):
        run(TrainConfig(**{**FILES, "data": "imagefolder"}, data_path=str(tmp_path / "empty"),
                        out_dir=str(tmp_path / "b")))
    wrong = mkd.init_params(MODELS["digits_teacher"].replace(num_classes=7))
    mkd.save_params(wrong, tmp_path / "t7.safetensors")
    with pytest.raises(ValueError, match="has 7 classes but the data has 10"):
        run(TrainConfig(**TINY, teacher=str(tmp_path / "t7.safetensors"), teacher_model="digits_teacher",
                        out_dir=str(tmp_path / "c")))
    assert not (tmp_path / "c").exists()


def test_corrupt_checkpoint_is_reported_and_left_intact(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint .*checkpoint.pt is corrupt"):
        run(TrainConfig(**TINY, out_dir=str(out), resume=True))
    assert (out / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_cached_teacher_trained_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKEDKD_CACHE", str(tmp_path / "cache"))
    tcfg = tmp_path / "tiny_teacher.py"
    tcfg.write_text("from maskedkd.experiments import TrainConfig\n"
                    f"CONFIG = TrainConfig(**{ {**TINY, 'model': 'digits_teacher', 'name': 'tiny_teacher'} !r})\n")
    cfg = TrainConfig(**TINY, teacher=f"cache:{tcfg}", keep_ratio=0.5, out_dir=str(tmp_path / "s"))
    s1 = run(cfg)
    cached = list((tmp_path / "cache" / "teachers").glob("tiny_teacher-*.safetensors"))
    assert len(cached) == 1 and s1["num_keep"] == 32 and s1["teacher"] == "digits_teacher"
    assert "teacher_acc_masked" in s1["history"][0]
    mtime = cached[0].stat().st_mtime_ns
    run(cfg.replace(out_dir=str(tmp_path / "s2")))
    assert cached[0].stat().st_mtime_ns == mtime  # reused, not retrained


def _cfg_file(tmp_path, **kw):
    teacher = tmp_path / "teacher.safetensors"
    if not teacher.exists():
        mkd.save_params(mkd.init_params(MODELS["digits_teacher"], seed=5), teacher)
    body = {**TINY, "train_size": 256, "epochs": 3, "drop_path": 0.1, "teacher": str(teacher),
            "teacher_model": "digits_teacher", "keep_ratio": 0.5, "name": "resume", **kw}
    path = tmp_path / "cfg.py"
    path.write_text(f"from maskedkd.experiments import TrainConfig\nCONFIG = TrainConfig(**{body!r})\n")
    return path


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    cfg = _cfg_file(tmp_path, ckpt_every=3)
    cmd = [sys.executable, "-m", "maskedkd.train", str(cfg)]
    subprocess.run(cmd + [f"out_dir={tmp_path / 'a'}"], env=_env(tmp_path), check=True, capture_output=True)
    b = tmp_path / "b"
    proc = subprocess.Popen(cmd + [f"out_dir={b}"], env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            ck = torch.load(b / "checkpoint.pt", weights_only=True)
        except Exception:
            time.sleep(0.02)
            continue
        if ck["global_step"] >= 20 and ck["step_in_epoch"] not in (0, 16):
            proc.send_signal(signal.SIGKILL)
            killed_at = (ck["epoch"], ck["step_in_epoch"])
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL and killed_at is not None and killed_at[1] > 0
    assert not (b / "params.safetensors").exists()
    subprocess.run(cmd + [f"out_dir={b}", "resume=true"], env=_env(tmp_path), check=True, capture_output=True)
    pa, pb = load_file(str(tmp_path / "a" / "params.safetensors")), load_file(str(b / "params.safetensors"))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)  # bit-exact
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "a", b))
    assert sa["history"] == sb["history"] and sb["steps"] == 48


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path):
    """Same global batch over 2 gloo processes vs 1: parameters within 1e-5 (all-reduce summation order)."""
    cfg = _cfg_file(tmp_path, drop_path=0.0, epochs=1)
    env = _env(tmp_path)
    subprocess.run([sys.executable, "-m", "maskedkd.train", str(cfg), f"out_dir={tmp_path / 'one'}"],
                   env=env, check=True, capture_output=True)
    torchrun = Path(sys.executable).parent / "torchrun"
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "maskedkd.train", str(cfg),
                        f"out_dir={tmp_path / 'two'}"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    p1, p2 = (load_file(str(tmp_path / d / "params.safetensors")) for d in ("one", "two"))
    for k in p1:
        torch.testing.assert_close(p2[k], p1[k], atol=1e-5, rtol=1e-5)
    l1, l2 = ([json.loads(l) for l in (tmp_path / d / "log.jsonl").read_text().splitlines() if '"step"' in l]
              for d in ("one", "two"))
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["world_size"] == 2
    # rank 0 logs its own half-batch metrics; the first step's loss is close, not equal (different samples)
    assert len(l1) == len(l2) == 16


def _tiny_folder(root, classes=3, n_train=6, n_val=2):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.png")


@pytest.fixture
def tiny_rgb_model():
    MODELS["tiny_rgb_test"] = mkd.ViTConfig(name="tiny_rgb_test", img_size=32, patch_size=8, num_classes=3,
                                            embed_dim=32, depth=1, num_heads=2)
    yield "tiny_rgb_test"
    MODELS.pop("tiny_rgb_test")


def test_imagefolder_deit_recipe_one_epoch(tmp_path, tiny_rgb_model):
    _tiny_folder(tmp_path / "data")
    s = run(TrainConfig(**{**FILES, "data": "imagefolder", "model": tiny_rgb_model, "batch_size": 4,
                           "img_size": 32}, data_path=str(tmp_path / "data"), num_workers=0,
                        out_dir=str(tmp_path / "r")))
    assert s["steps"] == 4  # 18 images x 3 repeats, one rank: ceil(18 / 1) = 18 samples -> 4 batches of 4
    assert 0.0 <= s["final_acc"] <= 1.0


def test_imagefolder_resume_mid_epoch_is_exact(tmp_path, tiny_rgb_model):
    """Stop after 6 of 8 steps (mid epoch 1), resume: the same weights as the uninterrupted run, bit for bit,
    whatever the worker count (augmentation is keyed per sample, MixUp/CutMix per step)."""
    _tiny_folder(tmp_path / "data")
    cfg = TrainConfig(**{**FILES, "data": "imagefolder", "model": tiny_rgb_model, "batch_size": 4, "img_size": 32,
                         "epochs": 2, "drop_path": 0.1}, data_path=str(tmp_path / "data"), num_workers=2)
    a = run(cfg.replace(out_dir=str(tmp_path / "a")))
    b = tmp_path / "b"
    run(cfg.replace(out_dir=str(b), max_steps=6, ckpt_every=1, num_workers=0))
    assert torch.load(b / "checkpoint.pt", weights_only=True)["step_in_epoch"] == 2
    s = run(cfg.replace(out_dir=str(b), resume=True))
    pa, pb = load_file(str(tmp_path / "a" / "params.safetensors")), load_file(str(b / "params.safetensors"))
    assert a["steps"] == s["steps"] == 8 and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert a["history"] == s["history"]


def test_sound_data_through_the_training_program(tmp_path):
    s = run(TrainConfig(**{**TINY, "data": "sounds", "model": "sounds_student", "train_size": 64, "test_size": 32},
                        out_dir=str(tmp_path / "r")))
    assert s["steps"] == 4 and s["student"] == "sounds_student" and 0.0 <= s["final_acc"] <= 1.0


def test_esc50_folds_in_the_loader(tmp_path):
    from helpers import write_esc50_fixture
    from maskedkd.data.loaders import build_data
    write_esc50_fixture(tmp_path / "esc", classes=(0, 3), clips_per_fold=2)
    d = build_data(TrainConfig(**{**FILES, "data": "esc50", "batch_size": 4}, data_path=str(tmp_path / "esc"), fold=2))
    assert d.num_classes == 50 and d.steps_per_epoch == 4  # 4 train folds x 2 classes x 2 clips = 16
    (x, y), = d.eval_batches()
    assert x.shape[1:] == (512, 128) and sorted(y.tolist()) == [0, 0, 3, 3]


def test_keep_schedule_grows_the_teacher_budget(tmp_path):
    teacher = tmp_path / "t.safetensors"
    mkd.save_params(mkd.init_params(MODELS["digits_teacher"], seed=5), teacher)
    s = run(TrainConfig(**{**TINY, "epochs": 3, "train_size": 32}, teacher=str(teacher),
                        teacher_model="digits_teacher", keep_schedule="25:75", out_dir=str(tmp_path / "r")))
    assert [h["num_keep"] for h in s["history"]] == [16, 32, 48]
    with pytest.raises(ValueError, match="keep_schedule='half'"):
        run(TrainConfig(**TINY, teacher=str(teacher), teacher_model="digits_teacher", keep_schedule="half",
                        out_dir=str(tmp_path / "bad")))


def test_keep_schedule_phases():
    """"100*3,50": full view (None) for 3 epochs, then half; bad specs name the bad value."""
    from maskedkd.select import keep_schedule
    n = MODELS["digits_teacher"].num_patches
    assert keep_schedule("100*3,50", n, 6) == (None, None, None, 32, 32, 32)
    assert keep_schedule("100*1,75*2,25", n, 6) == (None, 48, 48, 16, 16, 16)
    assert [keep_schedule("25:100", n, 6)[e] for e in (0, 5)] == [16, None]
    for bad, msg in [("100*6,50", "last phase must start before epoch 6"), ("100*0,50", "each phase needs >= 1"),
                     ("150*2,50", "150% is out of range"), ("100x3,50", "'100x3,50' must look like"),
                     ("0:50", "0% is out of range")]:
        with pytest.raises(ValueError, match=msg):
            keep_schedule(bad, n, 6)


def test_concurrent_runs_train_a_missing_teacher_once(tmp_path, monkeypatch):
    """Two runs that need the same missing cached teacher at once: one trains it, the other waits and loads it."""
    import threading

    import maskedkd.train as train_mod
    from reproduce.lib.runner import prepare_cached_models
    monkeypatch.setenv("MASKEDKD_CACHE", str(tmp_path / "cache"))
    calls, started = [], threading.Event()

    def fake_run(cfg, final_params_path=None):
        calls.append(cfg.name)
        started.set()
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        mkd.save_params(mkd.init_params(MODELS[cfg.model], seed=0), final_params_path)

    monkeypatch.setattr(train_mod, "run", fake_run)
    tcfg = TrainConfig(**{**TINY, "model": "digits_teacher", "name": "tiny_teacher"})
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(train_mod.train_cached_teacher(tcfg))) for _ in range(2)]
    threads[0].start()
    started.wait(5)
    threads[1].start()
    for t in threads:
        t.join()
    assert calls == ["tiny_teacher"] and len(paths) == 2 and paths[0] == paths[1] and paths[0].is_file()
    # run_all's preparation resolves each distinct "cache:" teacher/scorer once, and finds this one cached
    ref = "cache:digits_student_nokd"
    got = prepare_cached_models([TrainConfig(**TINY, teacher=ref, teacher_model="digits_student"),
                                 TrainConfig(**TINY, teacher=ref, scorer=ref, num_keep=8)])
    assert len(got) == 1 and calls == ["tiny_teacher", "digits_student_nokd"]


def test_every_config_survives_its_launch_file(tmp_path):
    """The lab's runs start from their whole config written as JSON (experiments.write_config), read back by
    `python -m maskedkd.train FILE`: every registered config comes back equal, with the same hash."""
    from maskedkd.experiments import CONFIGS, config_hash, write_config
    get_config("digits_teacher")  # loads the registry
    assert len(CONFIGS) > 20
    for name in CONFIGS:
        c = get_config(name).replace(out_dir=str(tmp_path / name), seed=3)
        back = get_config(str(write_config(c, tmp_path / f"{name}.json")))
        assert back == c and config_hash(back) == config_hash(c), name
    (tmp_path / "bad.json").write_text(json.dumps({**dataclasses.asdict(c), "keep_ratioo": 0.5}))
    with pytest.raises(ValueError, match=r"unknown config fields \['keep_ratioo'\]"):
        get_config(str(tmp_path / "bad.json"))


def test_cached_run_with_another_config_is_refused(tmp_path):
    """run_all reuses a finished run only if its recorded config trains the same weights (paths, threads and the
    1 vs 1.0 spelling of a float aside); otherwise it names the differing fields instead of mixing results."""
    from reproduce.lib.runner import check_cached_run, run_all, run_dir
    want = TrainConfig(**TINY, name="cached")
    d = run_dir(tmp_path, want)
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"final_acc": 0.5}))
    with pytest.raises(ValueError, match="no config.json"):
        check_cached_run(d, want)
    rec = dataclasses.asdict(want.replace(out_dir=str(d), threads=1, resume=True))
    (d / "config.json").write_text(json.dumps({**rec, "warmup_epochs": float(rec["warmup_epochs"])}))
    assert run_all([want], root=tmp_path) == [{"final_acc": 0.5}]
    (d / "config.json").write_text(json.dumps({**rec, "clean_epochs": 1}))
    with pytest.raises(ValueError, match=r"different config .*'clean_epochs': \(1, 0\)"):
        run_all([want], root=tmp_path)


def test_run_all_trains_a_config_listed_twice_once(tmp_path, monkeypatch):
    """Two scripts' rows can be the same run (keep 64 of 64 is full KD): run_all must train it once and hand the
    summary to both rows; two jobs training into one directory at once race on its checkpoint and log."""
    from reproduce.lib import runner
    monkeypatch.setattr(runner, "prepare_cached_models", lambda cfgs: {})
    launched = []

    def fake_run(cmd, **kw):  # stands in for `python -m maskedkd.train`: records the run, writes its summary
        out = get_config(cmd[-1]).out_dir
        launched.append(out)
        (Path(out) / "summary.json").write_text(json.dumps({"final_acc": 0.25, "dir": out}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    a, b = TrainConfig(**TINY, name="a"), TrainConfig(**TINY, name="b")
    got = runner.run_all([a, b, a.replace(), a], root=tmp_path, jobs=2)
    assert sorted(launched) == sorted({str(runner.run_dir(tmp_path, c)) for c in (a, b)})
    assert [g["dir"] for g in got] == [str(runner.run_dir(tmp_path, c)) for c in (a, b, a, a)]


@pytest.mark.slow
def test_run_all_subprocesses_find_a_plugin_criterion(tmp_path, monkeypatch):
    """A criterion registered with register_criterion in a user's module reaches the runs that run_all starts in
    subprocesses when it is named 'module:name' (select imports the module there); the bare name, registered only in
    this process, is refused before anything trains, naming the spelling that works."""
    from reproduce.lib.runner import check_criteria, run_all
    (tmp_path / "user_crit.py").write_text(
        "import torch\nfrom maskedkd.select import register_criterion\n"
        "@register_criterion('corner')\ndef corner(scores, k, generator=None):\n"
        "    return torch.arange(k, device=scores.device).expand(scores.shape[0], k)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    import user_crit  # noqa: F401  (registers "corner" here, as a user's script would)
    teacher = tmp_path / "t.safetensors"
    mkd.save_params(mkd.init_params(MODELS["digits_teacher"], seed=5), teacher)
    cfg = TrainConfig(**{**TINY, "train_size": 32, "test_size": 50}, teacher=str(teacher),
                      teacher_model="digits_teacher", num_keep=8, criterion="user_crit:corner", name="plugin")
    s, = run_all([cfg], root=tmp_path / "runs", jobs=1)
    assert s["num_keep"] == 8 and "teacher_acc_masked" in s["history"][-1]
    with pytest.raises(ValueError, match="registered in user_crit: name it 'user_crit:corner'"):
        run_all([cfg.replace(criterion="corner")], root=tmp_path / "runs", jobs=1)
    from maskedkd.select import CRITERIA, register_criterion
    main_fn = lambda scores, k, generator=None: CRITERIA["topk"](scores, k)  # noqa: E731
    main_fn.__module__ = "__main__"
    register_criterion("in_main")(main_fn)
    with pytest.raises(ValueError, match="running script"):
        check_criteria([cfg.replace(criterion="in_main")])


def test_recipes_that_need_a_file_refuse_to_start_without_it(tmp_path):
    """The silent fall-backs this guards: a KD recipe run without teacher=PATH trained without distillation, and a
    fine-tuning recipe (MAE, G2SD) run without init=PATH trained from scratch."""
    with pytest.raises(ValueError, match=r"\['num_keep', 'teacher_model'\] describe the teacher"):
        run(get_config("deit_tiny_deit_small_maskedkd50").replace(data="digits", model="digits_student",
                                                                  out_dir=str(tmp_path / "a"),
                                                                  **{k: v for k, v in TINY.items() if k not in ("data", "model")}))
    with pytest.raises(ValueError, match="fine-tunes a pre-trained student: pass init=PATH"):
        run(get_config("mae_vit_large_nokd").replace(out_dir=str(tmp_path / "b")))


def test_resume_refuses_another_config_or_world_size(tmp_path):
    """A checkpoint resumes only the run that wrote it (max_steps, paths and logging aside)."""
    out = tmp_path / "r"
    cfg = TrainConfig(**{**TINY, "epochs": 2}, out_dir=str(out), max_steps=3)
    run(cfg)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step_in_epoch"] == 3  # saved at the max_steps stop
    with pytest.raises(ValueError, match=r"another config .*'lr': \(0.01, 0.02\)"):
        run(cfg.replace(resume=True, max_steps=0, lr=2e-2))
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    torch.save({**ck, "rng": ck["rng"] * 2}, out / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"written by 2 process\(es\); resuming it with 1"):
        run(cfg.replace(resume=True, max_steps=0))


def test_options_of_every_schedule_epoch_are_checked_before_training(tmp_path):
    teacher = tmp_path / "t.safetensors"
    mkd.save_params(mkd.init_params(MODELS["digits_teacher"], seed=5), teacher)
    base = TrainConfig(**{**TINY, "epochs": 3}, teacher=str(teacher), teacher_model="digits_teacher")
    with pytest.raises(ValueError, match="not both"):  # epochs 0-1 see every patch, epoch 2 half: refused at start
        run(base.replace(keep_schedule="100*2,50", student_keep=8, out_dir=str(tmp_path / "a")))
    assert not (tmp_path / "a" / "log.jsonl").exists()
    with pytest.raises(ValueError, match="num_keep=8 and keep_ratio=0.5 both set the kept count"):
        run(base.replace(num_keep=8, keep_ratio=0.5, out_dir=str(tmp_path / "b")))
    with pytest.raises(ValueError, match="epochs='3.0' must be an integer"):
        apply_overrides(base, ["epochs=3.0"])


def test_a_student_independent_teacher_is_evaluated_once(tmp_path, monkeypatch):
    """A full (or ToMe) view's teacher predictions do not depend on the student: the first evaluation counts them,
    later ones reuse the count (same numbers, one teacher pass over the eval set per run instead of one per eval)."""
    import maskedkd.view as view_mod
    calls = []
    real = view_mod.TeacherView.__call__
    monkeypatch.setattr(view_mod.TeacherView, "__call__", lambda self, *a, **k: calls.append(self.mode) or real(self, *a, **k))
    teacher = tmp_path / "t.safetensors"
    mkd.save_params(mkd.init_params(MODELS["digits_teacher"], seed=5), teacher)
    base = TrainConfig(**{**TINY, "epochs": 3, "train_size": 32, "test_size": 50}, teacher=str(teacher),
                       teacher_model="digits_teacher")
    s = run(base.replace(out_dir=str(tmp_path / "full")))
    train_calls, eval_calls = 3 * 2, 1  # 2 steps per epoch; one eval batch, teacher counted at the first eval only
    assert len(calls) == train_calls + eval_calls
    assert len({h["teacher_acc_masked"] for h in s["history"]}) == 1 and len(s["history"]) == 3
    calls.clear()
    run(base.replace(num_keep=8, out_dir=str(tmp_path / "masked")))
    assert len(calls) == 3 * 2 + 3  # a masked view depends on the student: counted at every evaluation


@pytest.mark.parametrize("extra", [{}, {"keep_schedule": "100*1,50"}, {"student_keep": 20}],
                         ids=["full_kd", "warmup_schedule", "student_masked"])
def test_full_teacher_logit_memo_changes_no_number(tmp_path, monkeypatch, extra):
    """A full view's logits computed once per in-memory pool (train.pool_logits) give the very bits the step's own
    teacher forward gives: same log, same evaluations, same final weights, over a clean epoch and a fixed set."""
    import maskedkd.train as train
    cfg = TrainConfig(**{**TINY, "epochs": 3, "clean_epochs": 1, "fresh_clutter": False}, eval_every=1,
                      teacher=str(ROOT / "maskedkd" / "assets" / "digits_teacher.safetensors"),
                      teacher_model="digits_teacher", **extra)
    out, calls, pool_logits = {}, [], train.pool_logits
    monkeypatch.setattr(train, "pool_logits", lambda *a, **k: calls.append(len(a[1])) or pool_logits(*a, **k))
    for memo in (True, False):
        if not memo:  # a source without a pool: the teacher's forward at every step
            monkeypatch.setattr(DigitsData, "teacher_rows", lambda self, *a: None)
        d = tmp_path / str(memo)
        s = run(cfg.replace(out_dir=str(d)))
        log = [l for l in (d / "log.jsonl").read_text().splitlines() if '"wall_s"' not in l]
        out[memo] = s["history"], log, load_file(str(d / "params.safetensors"))
    # the memo ran: once per pool while the teacher sees every patch (the clean epoch's, then the fixed set's)
    assert calls == ([128] if extra.get("keep_schedule") else [128, 128])
    assert out[True][0] == out[False][0] and out[True][1] == out[False][1]
    assert out[True][2].keys() == out[False][2].keys()
    assert all(torch.equal(out[True][2][k], out[False][2][k]) for k in out[True][2])


def test_full_teacher_logit_memo_on_the_sound_set(tmp_path, monkeypatch):
    from maskedkd.model import init_params
    teacher = tmp_path / "t.safetensors"
    mkd.save_params(init_params(MODELS["sounds_teacher"], seed=0), teacher)
    cfg = TrainConfig(data="sounds", model="sounds_student", train_size=100, test_size=20, batch_size=32, epochs=2,
                      compile=False, threads=1, log_every=1, teacher=str(teacher), teacher_model="sounds_teacher")
    got = []
    for memo in (True, False):
        if not memo:
            monkeypatch.setattr(TensorData, "teacher_rows", lambda self, *a: None)
        run(cfg.replace(out_dir=str(tmp_path / str(memo))))
        got.append(load_file(str(tmp_path / str(memo) / "params.safetensors")))
    assert all(torch.equal(got[0][k], got[1][k]) for k in got[0])


def test_teacher_logits_only_replace_a_full_views_forward():
    from maskedkd.model import init_params
    from maskedkd.step import make_loss_fn
    s_cfg, t_cfg = MODELS["digits_student"], MODELS["digits_teacher"]
    s, t = init_params(s_cfg, seed=0), init_params(t_cfg, seed=1)
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    full = make_loss_fn(s_cfg, view=mkd.TeacherView(t_cfg, t))
    assert full.takes_teacher_logits
    with torch.no_grad():
        given = mkd.TeacherView(t_cfg, t)(x).logits
    assert torch.equal(full(s, x, y, given)[0], full(s, x, y)[0])
    with pytest.raises(ValueError, match=r"shape \(4, 3\), expected \(4, 10\)"):
        full(s, x, y, given[:, :3])
    masked = make_loss_fn(s_cfg, view=mkd.TeacherView(t_cfg, t, 32))
    assert not masked.takes_teacher_logits
    with pytest.raises(ValueError, match="a 'mask' view"):
        masked(s, x, y, given)
    manifold = make_loss_fn(s_cfg, view=mkd.TeacherView(t_cfg, t), kind="manifold")
    with pytest.raises(ValueError, match="'manifold' feature term"):
        manifold(s, x, y, given)
    with pytest.raises(ValueError, match="no teacher"):
        make_loss_fn(s_cfg)(s, x, y, given)
