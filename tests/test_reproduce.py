"""reproduce/ scripts: exact arithmetic rows, and smoke runs of the table and figure scripts end to end."""
import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

import maskedkd as mkd

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path):
    return {**os.environ, "MASKEDKD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}


def test_figure1_matches_the_papers_values():
    from reproduce import figure1
    for r in figure1.compute():
        for ours, plot in zip(r["ours"], r["paper"]):
            assert ours == pytest.approx(plot, abs=0.1), r  # values read off the plot, +-0.1 GFLOPs


def test_table1_paper_rows_costs_within_0_3_percent():
    from reproduce.lib import paper
    n = 0
    for r in paper.TABLE1:
        if r.teacher is not None and r.pflops is not None:
            ours = mkd.pflops(paper.teacher_macs(r.teacher, r.kept), r.epochs)
            assert ours == pytest.approx(r.pflops, rel=3e-3), r
            n += 1
    assert n == 33  # every row with a PFLOPs value in the paper


@pytest.mark.slow
def test_table1_smoke_end_to_end(tmp_path):
    out = tmp_path / "res"
    r = subprocess.run(["bash", str(ROOT / "reproduce/table1.sh"), "--smoke", "--out", str(out)],
                       env=_env(tmp_path), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "table1.md").read_text()
    assert "Largest |diff|" in md and "not implemented" not in md and "**Reading.**" in md
    rows = list(csv.DictReader(open(out / "table1.csv")))
    part1 = [x for x in rows if x["part"] == "1"]
    part2 = [x for x in rows if x["part"] == "2"]
    assert len(part1) == len(__import__("reproduce.lib.paper", fromlist=["TABLE1"]).TABLE1)
    assert all(abs(float(x["pflops_diff"])) < 3e-3 for x in part1 if x["pflops_diff"])
    assert [x["method"] for x in part2] == ["No distillation", "Logit KD (full teacher)", "+MaskedKD 75%",
                                            "+MaskedKD 50%", "+MaskedKD 40%", "+MaskedKD 25%",
                                            "Full KD 1 epoch, then MaskedKD 50% (ours)"]
    assert [x["num_keep"] for x in part2] == ["", "", "48", "32", "26", "16", ""]
    assert {x["method"] for x in rows if x["part"] == "claims"} >= {"kd_beats_nokd", "m50_matches_kd"}
    assert (out / "claims.md").is_file() and (out / "table1_runs.json").is_file()
    # a re-run reuses the finished rows and the cached teacher
    r2 = subprocess.run(["bash", str(ROOT / "reproduce/table1.sh"), "--smoke", "--out", str(out)],
                        env=_env(tmp_path), capture_output=True, text=True)
    assert r2.returncode == 0 and "0.0 min spent on the teacher" in (out / "table1.md").read_text()


def _folder(root, classes=3, n=2):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(36, 36, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / split / f"c{c}" / f"{i}.png")


def test_full_mode_dry_run_and_tiny_end_to_end(tmp_path, capsys):
    from reproduce.lib import full
    from maskedkd.experiments import MODELS
    ck = tmp_path / "ck"
    ck.mkdir()
    full.main(["--data", str(tmp_path / "data"), "--checkpoints", str(ck), "--dry-run", "--rows", "1,2,3,15",
               "--out", str(tmp_path / "dry")])
    text = capsys.readouterr().out
    assert "row  2 DeiT-Ti / DeiT-S / Logit: skipped (teacher file missing" in text
    assert "row 15 DeiT-Ti / CaiT-S24 / Logit: skipped (teacher file missing: one of ('S24_224.pth'" in text
    for f in ("deit_small_patch16_224-cd65a155.pth", "S24_224.pth", "vit_base_patch16_clip_224.openai_ft_in1k.safetensors"):
        (ck / f).write_bytes(b"")
    full.main(["--data", "/x", "--checkpoints", str(ck), "--dry-run", "--rows", "1,3,5,8,15,19,21",
               "--out", str(tmp_path / "dry")])
    text = capsys.readouterr().out
    assert "teacher_model=cait_s24_224" in text and "teacher_model=vit_base_patch16_clip_224" in text
    assert "skipped" not in text  # CaiT-S24 (logit, MaskedKD 75%) and CLIP-B/16 rows run when their files exist
    assert "num_keep=98" in text and "GPU-h" in text and "teacher=" in text
    assert "kd_kind=manifold" in text and "kd_kind=attention" in text  # feature-KD rows 5 and 8
    # each command runs the run's whole config, written beside it: the same config the plan built
    from maskedkd.experiments import get_config
    row8 = get_config(str(tmp_path / "dry" / "full" / "row8" / "launch.json"))
    assert (row8.num_keep, row8.kd_kind, row8.teacher_model) == (98, "attention", "deit_small_patch16_224")
    assert f"maskedkd.train {tmp_path / 'dry' / 'full' / 'row8' / 'launch.json'}" in text
    # tiny: real ImageFolder, real checkpoint file (tiny architecture), one step per row
    _folder(tmp_path / "data")
    tiny_t = mkd.vit_config("deit_small_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=32,
                            num_heads=2, num_classes=3)
    torch.save({"model": mkd.init_params(tiny_t)}, ck / "deit_small_patch16_224-cd65a155.pth")
    try:
        res = full.main(["--data", str(tmp_path / "data"), "--checkpoints", str(ck), "--rows", "1,2,3,6,8",
                         "--tiny", "--out", str(tmp_path / "out")])
    finally:
        for k in ("deit_tiny_patch16_224", "deit_small_patch16_224"):
            MODELS.pop(k, None)
    assert [s["steps"] for _, s, _ in res] == [1, 1, 1, 1, 1]
    assert res[2][1]["num_keep"] == 8 and res[0][1]["teacher"] is None
    assert "| 3 | DeiT-Ti | DeiT-S | +MaskedKD 50% | 75.2 |" in (tmp_path / "out" / "table1_full.md").read_text()
    full.main(["--data", str(tmp_path / "data"), "--checkpoints", str(ck), "--dry-run", "--rows", "1,3",
               "--out", str(tmp_path / "out")])
    for row in ("row1", "row3"):  # a re-run continues its checkpoints, is never refused
        assert get_config(str(tmp_path / "out" / "full" / row / "launch.json")).resume


def test_full_mode_names_teachers_by_their_timm_tags_with_hub(tmp_path, capsys):
    """--hub: a teacher with no file is the run's timm tag (maskedkd.hub reads it through timm's cache when the run
    starts); one without a tag (G2SD's MAE-ViT-B) is still skipped, naming why; a file given wins over the tag."""
    from maskedkd.experiments import get_config
    from reproduce.lib import full
    full.main(["--data", "/x", "--hub", "--dry-run", "--rows", "2,3,15,34", "--out", str(tmp_path / "dry")])
    text = capsys.readouterr().out
    assert "row 34" in text and "skipped (teacher file missing" in text
    for row, tag in ((2, "deit_small_patch16_224.fb_in1k"), (3, "deit_small_patch16_224.fb_in1k"),
                     (15, "cait_s24_224.fb_dist_in1k")):
        c = get_config(str(tmp_path / "dry" / "full" / f"row{row}" / "launch.json"))
        assert c.teacher == f"timm:{tag}" and c.teacher_model == tag.split(".")[0]
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "deit_small_patch16_224-cd65a155.pth").write_bytes(b"")
    assert full.locate_teacher(str(ck), "DeiT-S", hub=True) == (str(ck / "deit_small_patch16_224-cd65a155.pth"), "")
    assert full.locate_teacher("", "MAE-ViT-B", hub=True)[0] is None


def test_analyses_full_mode_dry_run_and_tiny_end_to_end(tmp_path, capsys):
    """criteria / ablation_student / ablation_tome / beyond --full: the ImageNet commands (dry run), then every
    run shrunk to one step on a real ImageFolder with real (tiny) DeiT-S / DeiT-B checkpoint files."""
    from reproduce import ablation_student
    from reproduce import ablation_tome
    from reproduce import beyond
    from reproduce import criteria
    from maskedkd.experiments import MODELS
    ck, data = tmp_path / "ck", tmp_path / "data"
    ck.mkdir()
    for f in ("deit_small_patch16_224-cd65a155.pth", "deit_base_patch16_224-b5f2ef4d.pth"):
        (ck / f).write_bytes(b"")
    common = ["--data", str(data), "--checkpoints", str(ck), "--out", str(tmp_path / "out")]
    res = criteria.full_main(common + ["--dry-run"])
    text = capsys.readouterr().out
    assert "Fixed model attention (DINO stand-in): skipped (needs --scorer FILE --scorer-model NAME)" in text
    planned = {r.label: r for r, _, _ in res}
    assert planned["Teacher attention"].fields["scorer"] == "teacher" and "scorer=teacher" in text
    assert planned["Inverse (keep lowest)"].fields == {"num_keep": 98, "criterion": "bottomk", "scorer": "student"}
    assert planned["No distillation"].teacher is None
    ablation_student.full_main(common + ["--dry-run"])
    text = capsys.readouterr().out
    assert all(f"student_keep={n} " in text and f"num_keep={n} " in text for n in (140, 100, 60, 30))
    res = ablation_tome.full_main(common + ["--dry-run"])
    rs = [r.fields["teacher_tome_r"] for r, _, _ in res if "teacher_tome_r" in r.fields]
    assert rs == sorted(rs) and len(set(rs)) == 6  # more merging as the matched budget shrinks
    res = beyond.full_main(common + ["--dry-run"])
    assert [r.fields.get("keep_schedule") for r, _, _ in res][1:4] == ["25:75", "75:25", "100*75,50"]
    capsys.readouterr()
    _folder(data)
    for name, f in (("deit_small_patch16_224", "deit_small_patch16_224-cd65a155.pth"),
                    ("deit_base_patch16_224", "deit_base_patch16_224-b5f2ef4d.pth")):
        t = mkd.vit_config(name, img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2, num_classes=3)
        torch.save({"model": mkd.init_params(t)}, ck / f)
    tiny = common + ["--tiny", "--epochs", "4"]
    try:
        c = criteria.full_main(tiny + ["--scorer", str(ck / "deit_small_patch16_224-cd65a155.pth"),
                                       "--scorer-model", "deit_small_patch16_224"])
        s = ablation_student.full_main(tiny)
        t = ablation_tome.full_main(tiny)
        b = beyond.full_main(tiny)
    finally:
        for k in ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"):
            MODELS.pop(k, None)
    for res in (c, s, t, b):
        assert all(note == "" and summ["steps"] >= 1 and summ["final_acc"] is not None for _, summ, note in res)
    assert [summ["teacher"] for _, summ, _ in c][-1] is None and c[0][1]["teacher"] == "deit_base_patch16_224"
    sched = next(summ for r, summ, _ in b if r.fields.get("keep_schedule") == "100*1,50")
    assert [h["num_keep"] for h in sched["history"]] == [None, 8]  # full view in epoch 0, then 50% of 16
    cfg = json.loads((tmp_path / "out" / "full" / "ablation_student" / "02" / "config.json").read_text())
    assert cfg["student_keep"] == 8 and cfg["num_keep"] == 0  # the student is the masked one, capped to 16 patches
    md = (tmp_path / "out" / "ablation_tome_full.md").read_text()
    assert md.count("| ToMe r=") == 6 and "| MaskedKD keep 98/196" in md


@pytest.mark.slow
def test_figure2_smoke(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "reproduce/figure2.sh"), "--smoke", "--out", str(tmp_path / "r")],
                       env=_env(tmp_path), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "r" / "figure2.png").stat().st_size > 10_000
    rows = list(csv.DictReader(open(tmp_path / "r" / "figure2.csv")))
    assert [int(x["num_keep"]) for x in rows] == [64, 40, 20, 8]


@pytest.mark.slow
@pytest.mark.parametrize("script,files", [
    ("criteria", ["criteria.md", "criteria.csv", "criteria.png"]),
    ("ablation_student", ["ablation_student.md", "ablation_student.csv", "ablation_student.png"]),
    ("audio", ["audio.md", "audio.csv", "audio.png"]),
    ("beyond", ["beyond.md"]),
    ("ablation_tome", ["ablation_tome.md", "ablation_tome.csv", "ablation_tome.png"]),
])
def test_analysis_scripts_smoke(script, files, tmp_path):
    r = subprocess.run(["bash", str(ROOT / f"reproduce/{script}.sh"), "--smoke", "--jobs", "2", "--out",
                        str(tmp_path / "r")], env=_env(tmp_path), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in files:
        assert (tmp_path / "r" / f).stat().st_size > 100, f
    md = (tmp_path / "r" / files[0]).read_text()
    if script == "criteria":
        for label in ("MaskedKD (student attention)", "Random", "Teacher attention", "Fixed model attention",
                      "Inverse (keep lowest)", "Logit KD (no masking)"):
            assert f"| {label}" in md
    if script == "audio":
        assert "not transcribed" in md and "+MaskedKD 54/108" in md
    if script == "ablation_tome":
        assert "| MaskedKD (keep 32) |" in md and "| ToMe (r=16 per block) |" in md
    if script == "beyond":
        assert "| Schedule 25% -> 75% |" in md and "| Fixed 50% | " in md
        assert "| Full KD 1 epoch, then 50% |" in md and "| Fixed 40 of 64 (62.5%) |" in md
        # the warm-up row logged the full view (None) in its first epoch, then 32 of 64 patches
        hist = [json.loads((d / "summary.json").read_text())["history"]
                for d in (tmp_path / "r" / "runs").glob("digits_student_sched100x1-50-s0-*")]
        assert len(hist) == 1 and [h["num_keep"] for h in hist[0]] == [None, 32]
    if script == "ablation_student":
        assert "| 32 |" in md


def test_full_gpu_hours_include_evaluation():
    """--dry-run estimates count evaluation: the student's forward on the 50k validation images every eval_every
    epochs, the masked teacher's every eval_teacher_every (ImageNet configs: 10) and after the last epoch."""
    from reproduce.lib import full
    from maskedkd.experiments import get_config
    per_h = 125e12 * 3600  # ASSUMED_TFLOPS
    nokd = get_config("deit_tiny_nokd")
    _, ev = full.gpu_hours(nokd, parts=True)
    assert ev == pytest.approx(2 * 50_000 * mkd.macs(mkd.vit_config("deit_tiny_patch16_224")) * 300 / per_h)
    cfg = get_config("deit_tiny_deit_small_maskedkd50").replace(teacher="t.pth")
    tr, ev = full.gpu_hours(cfg, parts=True)
    s, t = mkd.macs(mkd.vit_config("deit_tiny_patch16_224")), mkd.macs(mkd.vit_config("deit_small_patch16_224"), 98)
    assert ev == pytest.approx(2 * 50_000 * (s * 300 + t * 30) / per_h)
    assert tr == pytest.approx(2 * (3 * s + t) * mkd.IMAGENET_TRAIN_IMAGES * 300 / per_h)
