"""One validation layer (maskedkd/checks.py, TrainConfig's declared fields, model.check_params, reproduce/lib/flags.py):
each kind of bad input a new user typed is refused where it enters, naming the key, the value and the file; each of
these tests failed on the code before the layer (a silent run, a clamp, or an error that named nothing)."""
import json
import re
import shlex

import numpy as np
import pytest
import torch

import maskedkd as mkd
from maskedkd.checks import InputError, parse_text
from maskedkd.experiments import (MODELS, TrainConfig, apply_overrides, config_from_json, config_hash, field_table,
                                  get_config)

TINY = dict(data="digits", model="digits_student", train_size=32, test_size=32, batch_size=16, epochs=1,
            compile=False, threads=1, log_every=1, lr=1e-2)
T = mkd.ViTConfig(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=1, num_heads=2)


# 1. runs that silently did something else


@pytest.mark.parametrize("override, why", [
    ("keep_schedule=0.25:0.75", "reads as fractions"),  # trained with 1 of 64 patches
    ("epochs=0", r"epochs=0 must lie in \[1, inf\)"),  # wrote untrained weights
    ("lr=inf", r"lr=inf must lie in \(0, inf\)"),
    ("lr=nan", r"lr=nan must lie in \(0, inf\)"),
    ("test_size=0", r"test_size=0 must lie in \[1, inf\)"),  # an accuracy of 0.0 measured on no image
    ("batch_size=0", r"batch_size=0 must lie in \[1, inf\)"),  # ZeroDivisionError
    ("digit_size=0", r"digit_size=0 must lie in \[8, 32\]"),  # ZeroDivisionError
    ("epochs=2.5", "epochs='2.5' must be an integer"),
    ("compile=maybe", "compile='maybe' must be true or false"),
    ("kd_kind=sofft", r"kd_kind='sofft' must be one of \['soft'"),
    ("precision=fp16", r"precision='fp16' must be one of"),
    ("model=deit_tiny", "model='deit_tiny' is not a known model"),
    ("epochs=3 epochs=5", "epochs is given twice"),
    ("lr=1_0", "lr='1_0' must be a number"),  # float() reads it as 10
    ("model=", "model='' is not a known model"),
    ("teacher=cache:digits_teacher num_keep=8 kd_kind=hard temperature=2", r"\{'temperature': 2\.0\} would be ignored"),
    ("feature_weight=2", r"\{'feature_weight': 2\.0\} would be ignored"),
    ("teacher=cache:digits_teacher num_keep=8 adaptive_mass=0.5 kd_kind=manifold", "kd_kind='manifold' distils"),
])
def test_a_bad_command_line_value_is_refused_naming_it(override, why):
    with pytest.raises(InputError, match=why):
        apply_overrides(get_config("digits_student_kd"), shlex.split(override))


def test_the_training_program_refuses_before_it_writes_anything(tmp_path):
    from maskedkd.train import main
    out = tmp_path / "never"
    for bad in ("keep_schedule=0.25:0.75", "epochs=0", "lr=inf"):
        with pytest.raises(InputError):
            main(shlex.split(f"digits_student_kd {bad} out_dir={out}"))
    assert not out.exists()


def test_file_values_are_coerced_strictly_and_errors_name_the_file(tmp_path):
    good = {"name": "f", "data": "digits", "batch_aug": "false", "epochs": "3", "lr": "0.01"}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(good))
    c = config_from_json(p)
    assert (c.batch_aug, c.epochs, c.lr) == (False, 3, 0.01)  # "false" turned batch augmentation ON before
    assert config_from_json(p) == TrainConfig(name="f", batch_aug=False, epochs=3, lr=0.01)
    cases = {'{"epochs": 2.5}': r"c\.json: epochs=2\.5 must be an integer",
             '{"epochs": 3,}': r"c\.json is not valid JSON",  # a trailing comma
             '{"epochs": 3': r"c\.json is not valid JSON",  # cut short
             '': r"c\.json is not valid JSON.*the file is empty",
             '[1, 2]': r"c\.json holds a JSON list",
             '{"epochs": 3, "epoch": 4}': r"c\.json: unknown config fields \['epoch'\]",
             '{"batch_aug": "maybe"}': r"c\.json: batch_aug='maybe' must be true or false",
             '{"teacher": 5}': r"c\.json: teacher=5 must be text",
             '{"epochs": 3, "epochs": 4}': r"c\.json gives \['epochs'\] twice",  # json.loads kept the last
             '{"teacher": " cache:x"}': r"c\.json: teacher=' cache:x' starts or ends with a space",
             '{"data": "sounds", "copies": 3}': r"c\.json: copies=3 applies to data digits only"}
    for text, why in cases.items():
        p.write_text(text)
        with pytest.raises(InputError, match=why):
            get_config(str(p))
    y = tmp_path / "run.yaml"
    y.write_text("epochs: 3\n")  # AttributeError: 'NoneType' object has no attribute 'loader' before
    with pytest.raises(InputError, match=r"run\.yaml: expected a \.json file .* or a \.py file"):
        get_config(str(y))
    py = tmp_path / "bad.py"
    py.write_text("from maskedkd.experiments import TrainConfig\nCONFIG = TrainConfig(epochs=0)\n")
    with pytest.raises(InputError, match=r"bad\.py: epochs=0 must lie"):
        get_config(str(py))
    py.write_text("raise ValueError('my own check')\n")
    with pytest.raises(InputError, match=r"bad\.py raised ValueError: my own check"):
        get_config(str(py))


def test_every_field_declares_its_kind_and_what_it_takes():
    table = field_table()
    from dataclasses import fields
    for f in fields(TrainConfig):
        assert f.metadata["meaning"], f.name  # each field says what it means
        assert f"| {f.name} | {f.type} |" in table
        if f.type in ("int", "float"):
            assert isinstance(f.metadata["within"], str), f.name  # an interval for every number
    assert "| model | str | 'deit_tiny_patch16_224' | a known model |" in table
    assert "| teacher_model | str | '' | a known model, or '' |" in table


def test_numpy_numbers_are_numbers_and_bools_are_not():
    c = TrainConfig(epochs=np.int64(3), lr=np.float32(0.5), batch_aug=np.bool_(True))
    assert type(c.epochs) is int and type(c.lr) is float and c.batch_aug is True
    assert config_hash(c) == config_hash(TrainConfig(epochs=3, lr=float(np.float32(0.5)), batch_aug=True))
    for kw, why in (({"epochs": True}, "epochs=True must be an integer"), ({"compile": 1}, "compile=1 must be true"),
                    ({"adaptive_mass": "0.5"}, "adaptive_mass='0.5' must be a number"),
                    ({"name": "a/b"}, "name='a/b' must be a non-empty name")):
        with pytest.raises(InputError, match=re.escape(why)):
            TrainConfig(**kw)


def test_combinations_are_refused_in_one_place():
    cases = [(dict(num_keep=8, keep_ratio=0.5), "num_keep=8 and keep_ratio=0.5 both set"),
             (dict(keep_schedule="25:75", num_keep=8), "both set"),
             (dict(adaptive_mass=0.5), "adaptive_mass=0.5 keeps the top"),
             (dict(teacher="t.pt"), "teacher='t.pt' is a checkpoint path: it needs teacher_model"),
             (dict(teacher="teacher"), "teacher='teacher' is a checkpoint path"),  # 'teacher' names a scorer only
             (dict(teacher="timm:", num_keep=8), "teacher='timm:' names no model"),
             (dict(teacher="t.pt", teacher_model="digits_teacher", scorer="s.pt"), "scorer='s.pt' is a checkpoint"),
             (dict(teacher_tome_r=4, num_keep=8), "teacher_tome_r=4 merges tokens"),
             (dict(criterion="random"), "choose the patches to keep, but the teacher sees every patch"),
             (dict(criterion="randon", num_keep=8), "criterion='randon' is not a registered criterion"),
             (dict(student_keep=8, num_keep=8), "not both"),
             (dict(copies=3, jitter=9), "jitter=9 px moves a digit of a grid scene"),
             (dict(copies=5, digit_size=16), "copies=5 and distractors=0 must fit"),
             (dict(train_size=8, batch_size=16), "train_size=8 is smaller than batch_size=16"),
             (dict(clean_epochs=5, epochs=2), "clean_epochs=5 exceeds epochs=2"),
             (dict(data="imagefolder", train_size=100), "train_size=100 applies to data digits / sounds only"),
             (dict(keep_schedule="100*3,50", epochs=3), "the last phase must start before epoch 3")]
    for kw, why in cases:
        with pytest.raises(InputError, match=re.escape(why)):
            TrainConfig(**kw)
    # what only a complete run needs: refused by the training program, before anything is made
    from maskedkd.experiments import check_runnable
    for kw, why in ((dict(num_keep=8), "['num_keep'] describe the teacher"),
                    (dict(kd_weight=0.9), "['kd_weight'] describe the teacher"),
                    (dict(data="imagefolder"), "data=imagefolder needs data_path")):
        with pytest.raises(InputError, match=re.escape(why)):
            check_runnable(TrainConfig(**kw))


# 2. parameters that are not their config's


def test_a_teacher_view_refuses_parameters_of_another_model():
    wide, deep = T.replace(embed_dim=64, num_heads=4), T.replace(depth=2)
    with pytest.raises(ValueError, match=r"teacher's params: parameters do not match config.*mis-shaped"):
        mkd.TeacherView(T, mkd.init_params(wide), 8)  # ran with the config's head count before
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks\.1\."):
        mkd.TeacherView(T, mkd.init_params(deep), 8)  # its second block was ignored before
    with pytest.raises(ValueError, match=r"scorer's params.*mis-shaped"):
        mkd.TeacherView(T, mkd.init_params(T), 8, scorer=(T, mkd.init_params(wide)))
    view = mkd.TeacherView(T, mkd.init_params(T), np.int64(8))  # numpy integers are integers
    assert type(view.num_keep) is int and view.num_keep == 8
    with pytest.raises(InputError, match=r"schedule='25:75' must be a tuple of kept counts"):
        mkd.TeacherView(T, mkd.init_params(T), 8, schedule="25:75")
    with pytest.raises(InputError, match=r"adaptive_mass='0\.5' must be a number"):
        mkd.TeacherView(T, mkd.init_params(T), 8, adaptive_mass="0.5")


def test_a_train_step_refuses_parameters_of_another_student():
    step = mkd.make_train_step(T, compile=False)
    wrong = mkd.init_params(T.replace(depth=2))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"student's params: parameters do not match.*unexpected keys"):
        step(wrong, opt, torch.randn(2, 1, 16, 16), torch.tensor([0, 1]))


# 3. errors that named nothing


def test_a_file_that_is_not_a_training_checkpoint_is_named(tmp_path):
    from maskedkd.train import run
    out = tmp_path / "r"
    out.mkdir()
    torch.save({"params": {}}, out / "checkpoint.pt")  # readable, but not ours: KeyError 'rng' before
    with pytest.raises(ValueError, match=rf"{re.escape(str(out / 'checkpoint.pt'))} is not a training checkpoint"):
        run(TrainConfig(**TINY, out_dir=str(out), resume=True))


def test_a_cached_teacher_of_another_architecture_names_the_file_to_delete(tmp_path, monkeypatch):
    from maskedkd import teachers
    monkeypatch.setenv("MASKEDKD_CACHE", str(tmp_path / "cache"))
    tcfg = tmp_path / "tiny_teacher.py"
    tcfg.write_text("from maskedkd.experiments import TrainConfig\n"
                    f"CONFIG = TrainConfig(**{ {**TINY, 'model': 'digits_teacher', 'name': 'tiny_teacher'} !r})\n")
    c = get_config(str(tcfg))
    path = teachers.cache_path(c)
    mkd.save_params(mkd.init_params(MODELS["digits_student"]), path)  # a student's weights where a teacher should be
    monkeypatch.setattr(teachers, "get_config", lambda name: c)
    with pytest.raises(ValueError, match=rf"cached teacher {re.escape(str(path))} was made for another architecture"
                                         rf".*delete that file"):
        teachers.load_model("cache:tiny_teacher", "", 10, None, torch.device("cpu"), "teacher")
    with pytest.raises(ValueError, match="teacher_model='digits_student', but teacher=cache:tiny_teacher trains "
                                         "model 'digits_teacher'"):
        teachers.load_model("cache:tiny_teacher", "digits_student", 10, None, torch.device("cpu"), "teacher")


def test_class_folders_that_differ_are_named(tmp_path):
    from PIL import Image
    from maskedkd.data.loaders import FolderData
    for split, classes in (("train", ("cat", "dog")), ("val", ("cat", "dgo"))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / c / "0.png")
    cfg = TrainConfig(data="imagefolder", data_path=str(tmp_path), batch_size=2, num_workers=0)
    with pytest.raises(ValueError, match=r"only in train \['dog'\] \(1\), only in val \['dgo'\] \(1\)"):
        FolderData(cfg)


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    from maskedkd.train import run
    s = run(TrainConfig(**TINY, out_dir=str(tmp_path / "r"), resume=True))
    assert s["steps"] == 2
    assert f"resume=true: there is no checkpoint at {tmp_path / 'r' / 'checkpoint.pt'}, so this is a fresh run" in \
        capsys.readouterr().err


# 4. the small functions of the API


@pytest.mark.parametrize("n, ratio, why", [(0, 0.5, r"num_patches=0 must lie in \[1, inf\)"),
                                           (-4, 0.5, r"num_patches=-4 must lie"),
                                           ("196", 0.5, r"num_patches='196' must be an integer"),
                                           (64, "0.5", r"keep ratio='0\.5' must be a number"),
                                           (64, 0.001, r"keeps 0\.064 patches, which rounds to none")])
def test_keep_count_refuses_what_it_used_to_clamp(n, ratio, why):
    with pytest.raises(InputError, match=why):
        mkd.keep_count(n, ratio)
    assert mkd.keep_count(np.int64(196), np.float64(0.5)) == 98


def test_keep_schedule_and_selection_check_their_arguments():
    with pytest.raises(InputError, match=r"epochs=0 must lie in \[1, inf\)"):
        mkd.keep_schedule("25:75", 64, epochs=0)  # returned () before
    with pytest.raises(InputError, match="reads as fractions"):
        mkd.keep_schedule("0.25:0.75", 64, epochs=4)
    assert mkd.keep_schedule("25:75", np.int64(64), np.int64(3)) == (16, 32, 48)
    with pytest.raises(InputError, match=r"adaptive_mass='0\.5' must be a number"):
        from maskedkd.select import adaptive_budget
        adaptive_budget(torch.rand(2, 16), "0.5", 8)
    assert mkd.select_tokens(torch.rand(2, 16), np.int64(8)).shape == (2, 8)


def test_parse_text_is_strict():
    assert parse_text(bool, "No", "k") is False and parse_text(bool, "yes", "k") is True
    assert parse_text(int, "-3", "k") == -3 and parse_text(float, "1e-3", "k") == 1e-3
    for kind, text in ((int, "2.5"), (int, "3.0"), (int, ""), (bool, "on"), (float, "one")):
        with pytest.raises(InputError, match=re.escape(f"k={text!r} must be")):
            parse_text(kind, text, "k")


# 5. the lab's flags


@pytest.mark.parametrize("argv, why", [(["--jobs", "0"], r"argument --jobs: '0': must lie in \[1, inf\)"),
                                       (["--jobs", "two"], r"argument --jobs: 'two': must be an integer")])
def test_lab_flags_are_refused_where_they_are_parsed(argv, why, capsys):
    from reproduce import table1
    with pytest.raises(SystemExit) as e:
        table1.main(argv)  # --jobs 0 was clamped to 1 in silence
    assert e.value.code == 2 and re.search(why, capsys.readouterr().err)


@pytest.mark.parametrize("labels, why", [("x,x", "the labels must differ"), ("x", "expected 2 non-empty labels"),
                                         ("x,,", "expected 2"), ("key,b", r"\['b', 'key'\] would overwrite")])
def test_branch_labels_cannot_collide(labels, why, capsys, tmp_path):
    from reproduce import branches
    with pytest.raises(SystemExit) as e:
        branches.main([str(tmp_path), str(tmp_path), "--labels", labels])  # x,x: one branch overwrote the other
    assert e.value.code == 2 and re.search(why, capsys.readouterr().err)


def test_run_all_refuses_zero_jobs():
    from reproduce.lib.runner import run_all
    with pytest.raises(InputError, match=r"jobs=0 must lie in \[1, inf\)"):
        run_all([], jobs=0)
