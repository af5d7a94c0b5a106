"""reproduce/lib/claims.py: the claims' arithmetic (paired t intervals, verdict rules), the pairing by seed it rests
on, and the committed reference of table 1's default run (reproduce/reference/) against the plan and the README."""
import inspect
import json
import math
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "reproduce" / "reference"

from reproduce.lib import claims, embedded, flags, records

from reproduce.lib import regime, report

from reproduce.lib import stats

# two-sided 95% Student-t quantiles t_{0.975, df}, from printed tables (not from scipy)
T975 = {2: 4.302653, 4: 2.776445, 16: 2.119905, 17: 2.109816}


def test_paired_differences_are_by_seed_in_points():
    seeds, d = stats.paired({0: 0.50, 1: 0.60, 2: 0.70, 3: 0.9}, {1: 0.55, 0: 0.40, 2: 0.70})
    assert seeds == [0, 1, 2] and d == pytest.approx([10.0, 5.0, 0.0])  # seed 3 has no partner


def test_t_interval_hand_computed():
    mean, sd, lo, hi = stats.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = T975[4] * math.sqrt(2.5) / math.sqrt(5)  # SD of 1..5 is sqrt(2.5)
    assert (mean, sd) == pytest.approx((3.0, math.sqrt(2.5)))
    assert (lo, hi) == pytest.approx((3.0 - half, 3.0 + half), abs=1e-5)
    assert (lo, hi) == pytest.approx((1.03676, 4.96324), abs=1e-4)
    mean, sd, lo, hi = stats.t_interval([2.0, -1.0, 5.0])
    assert (lo, hi) == pytest.approx((2.0 - T975[2] * 3.0 / math.sqrt(3), 2.0 + T975[2] * 3.0 / math.sqrt(3)),
                                     abs=1e-5)
    assert stats.t_interval([4.0])[2:] == (-math.inf, math.inf)  # one seed: no interval


@pytest.mark.parametrize("kind, diffs, expected", [
    ("beats", [1, 2, 3, 4, 5], "holds"),                    # CI [1.04, 4.96] above 0
    ("beats", [-1, -2, -3, -4, -5], "does not hold"),       # below 0
    ("beats", [-2, 2, 1, -1, 0.5], "inconclusive"),         # straddles 0
    ("below", [-3, -4, -5, -4, -4], "holds"),
    ("below", [3, 4, 5, 4, 4], "does not hold"),
    ("matches", [0.1, -0.1, 0.2, -0.2, 0.0], "holds"),      # CI [-0.20, 0.20] inside +-2
    ("matches", [3, 4, 5, 4, 4], "does not hold"),          # CI [3.12, 4.88] entirely above +2
    ("matches", [-3, -4, -5, -4, -4], "does not hold"),     # entirely below -2
    ("matches", [1, 2, 3, 4, 5], "inconclusive"),           # CI [1.04, 4.96] crosses +2
    ("matches", [0.0, 0.1, -0.1, 0.0], "holds"),
    ("beats", [5.0], "inconclusive"),                       # one seed
])
def test_verdict_rules(kind, diffs, expected):
    _, _, lo, hi = stats.t_interval([float(d) for d in diffs])
    assert stats.verdict(kind, lo, hi) == expected


def test_verdict_boundaries_are_strict_and_margin_is_a_parameter():
    assert stats.verdict("beats", 0.0, 1.0) == "inconclusive"
    assert stats.verdict("matches", -2.0, 1.0) == "inconclusive"
    assert stats.verdict("matches", -2.0, 1.0, margin=2.5) == "holds"
    with pytest.raises(ValueError, match="unknown claim kind"):
        stats.verdict("equals", 0, 1)


def test_seeds_to_settle_hand_computed():
    # beats, mean 1, SD 2: n with t_{n-1} 2 / sqrt(n) < 1: 17 gives 2.1199 * 2 / 4.123 = 1.028, 18 gives 0.995
    assert 2 * T975[16] / math.sqrt(17) > 1 > 2 * T975[17] / math.sqrt(18)
    assert stats.seeds_to_settle("beats", 1.0, 2.0) == 18
    assert stats.seeds_to_settle("below", -1.0, 2.0) == 18
    # matches, margin 2: mean 1 needs the half-width below 1 (to hold), mean 3 below 1 (to not hold): both 18
    assert stats.seeds_to_settle("matches", 1.0, 2.0) == stats.seeds_to_settle("matches", 3.0, 2.0) == 18
    assert stats.seeds_to_settle("matches", 2.0, 2.0) is None and stats.seeds_to_settle("beats", 0.0, 1.0) is None


def test_evaluate_and_words():
    c = next(c for c in claims.CLAIMS if c.key == "m50_matches_kd")
    rows = {"keep50": {s: 0.5 + 0.01 * s for s in range(5)}, "kd": {s: 0.5 for s in range(5)}}  # d = 0,1,2,3,4
    r = claims.evaluate(c, rows)
    assert r["seeds"] == [0, 1, 2, 3, 4] and r["diffs"] == pytest.approx([0, 1, 2, 3, 4])
    assert r["verdict"] == "inconclusive" and r["settle"] is None  # mean exactly on the margin
    assert report.fmt_ci(r) == "+2.0 [+0.0, +4.0]"
    r = claims.evaluate(c, {"keep50": {0: 0.5, 1: 0.52, 2: 0.47}, "kd": {0: 0.5, 1: 0.5, 2: 0.5}})
    assert r["verdict"] == "inconclusive" and r["settle"] > 3 and "more seeds" in report.settle_words(r)


def test_claims_are_written_down_once():
    keys = [c.key for c in claims.CLAIMS]
    assert len(keys) == len(set(keys))
    for c in claims.CLAIMS:
        assert c.where and c.command.startswith("bash reproduce/"), c
        assert (c.kind is None) == (c.a is None) == (c.b is None), c
        assert c.metric in claims.METRICS, c
        if c.kind:
            assert c.kind in ("beats", "below", "matches", "noninferior") and c.script in SCRIPTS, c
    evaluated = {c.key for c in claims.CLAIMS if c.kind}
    assert {"kd_beats_nokd", "m50_matches_kd", "m75_matches_kd", "m40_matches_kd", "m25_below_kd"} <= evaluated
    assert {c.script for c in claims.CLAIMS if c.kind} == set(SCRIPTS)  # every script settles at least one claim


def default_configs(script: str, regime: str = "digits") -> dict:
    """(row id, seed) -> config of a script's default invocation (on an image regime), read off its spec's rows
    (reproduce/lib/driver.py; nothing trains); feature_kd is table1 --feature-kd's feature rows. A run listed twice
    must be the same run."""
    import argparse
    import importlib


    from maskedkd.experiments import config_hash
    if script in ("table1", "feature_kd"):
        from reproduce import table1
        from reproduce.lib.embedded import plan
        return {(rid, seed): c for seed in plan("default")[0]
                for rid, _, c in table1.student_rows("default", seed, feature_kd=script == "feature_kd", task=regime)
                if script == "table1" or rid in table1.FEATURE_ROWS}
    spec = importlib.import_module(f"reproduce.{script}").SPEC
    args = argparse.Namespace(regime=regime) if spec.regimes else None
    got = [c for *_, cs in spec.rows("default", embedded.plan("default", spec.task)[0], args) for c in cs]
    assert got, script
    out = {}
    for c in got:
        key = (embedded.row_id(c), c.seed)
        assert config_hash(out.setdefault(key, c)) == config_hash(c), (script, key)
    return out


def default_plan(script: str, regime: str = "digits") -> dict[tuple[str, int], tuple[str, str]]:
    """(row id, seed) -> (run name, config hash) of a script's default invocation (on an image regime)."""
    from maskedkd.experiments import config_hash
    return {k: (c.name, config_hash(c)) for k, c in default_configs(script, regime).items()}


SCRIPTS = records.SCRIPTS_WITH_BLOCKS


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_claim_names_rows_of_its_scripts_default_plan(script):
    """A claim whose row id is not in the plan would silently never be evaluated."""
    for c in claims.CLAIMS:
        if c.kind and c.script == script:
            for regime in [c.regime] if c.regime else ["digits", "fixed_places"]:
                planned = {rid for rid, _ in default_plan(script, regime)}
                assert {c.on(regime).a, c.on(regime).b} <= planned, (c.key, regime, sorted(planned))


def _run(row, seed, first_teacher, sched=False):
    h = [{"epoch": 2, "acc": 0.3, "teacher_acc_masked": first_teacher, **({"num_keep": 32} if sched else {})},
         {"epoch": 11, "acc": 0.5, "teacher_acc_masked": 0.9, **({"num_keep": 32} if sched else {})}]
    if sched:  # the full-view epochs of a schedule come first and do not count
        h.insert(0, {"epoch": 0, "acc": 0.2, "teacher_acc_masked": 0.05, "num_keep": None})
    return {"row": row, "seed": seed, "name": f"{row}-s{seed}", "config_hash": "x", "final_acc": 0.5 + seed / 100,
            "history": h, "wall_s": 60.0}


def test_masked_failures_first_masked_evaluation():
    assert claims.masked_failures([_run("keep50", 0, 0.11), _run("keep50", 1, 0.5)]) == (1, 2)
    assert claims.masked_failures([_run("warmup", 0, 0.9, sched=True)]) == (0, 1)


def test_rows_and_readme_block_render_from_data():
    data = {"seeds": [0, 1], "teacher_acc": 0.933, "num_patches": 64, "margin": 2.0,
            "rows": [{"id": "kd", "label": "Logit KD", "kept": "64 / 64", "saved": "0%", "paper": "75.0"},
                     {"id": "keep50", "label": "+MaskedKD 50%", "kept": "32 / 64", "saved": "51%", "paper": "75.2"}],
            "runs": [_run("kd", 0, 0.93), _run("kd", 1, 0.93), _run("keep50", 0, 0.1), _run("keep50", 1, 0.8)]}
    data["claims"] = [claims.evaluate(next(c for c in claims.CLAIMS if c.key == "m50_matches_kd"),
                                      claims.row_accs(data))]
    block = report.readme_block(data)
    assert "| +MaskedKD 50% | 32 / 64 | 50.5 ± 0.7 | 50.0, 51.0 | 90.0 ± 0.0 | 1 of 2 | 51% | 75.2 |" in block
    assert "| Logit KD | 64 / 64 | 50.5 ± 0.7 | 50.0, 51.0 | 90.0 ± 0.0 | – | 0% | 75.0 |" in block
    assert "| MaskedKD at 50% matches full KD (docs/paper.md#table-1) | +MaskedKD 50% vs Logit KD | +0.0, +0.0 |" in block
    text = f"intro\n{report.BEGIN}\nold\n{report.END}\noutro\n"
    new = report.replace_block(text, block)
    assert report.current_block(new) == block and new.startswith("intro\n") and new.endswith("outro\n")


def test_same_seed_same_start_and_same_batches_in_every_row():
    """The pairing claims.py relies on: rows of one seed differ only in what the teacher sees."""
    from reproduce import table1
    from maskedkd import train
    from maskedkd.data.loaders import DigitsData
    from maskedkd.experiments import TrainConfig, model_config
    from maskedkd.model import init_params
    rows = table1.student_rows("smoke", 3)
    teacher_fields = {"name", "teacher", "teacher_model", "num_keep", "criterion", "scorer", "keep_schedule",
                      "epochs", "eval_every"}  # epochs/eval_every: the smoke warm-up row runs 1 + 1 epochs
    base = rows[0][2]
    for _, _, c in rows[1:]:
        diff = {f for f in TrainConfig.__dataclass_fields__ if getattr(c, f) != getattr(base, f)}
        assert diff <= teacher_fields, (c.name, diff)
        assert c.seed == 3
    # train.run: the student from init_params(model, seed=cfg.seed), torch seeded by cfg.seed * 1000 + rank
    src = inspect.getsource(train.run)
    assert "init_params(s_model, seed=cfg.seed)" in src and "torch.manual_seed(cfg.seed * 1000 + rank)" in src
    m = model_config(base.model)
    p_a, p_b = init_params(m, seed=rows[1][2].seed), init_params(m, seed=rows[3][2].seed)
    assert all(torch.equal(p_a[k], p_b[k]) for k in p_a)
    assert not torch.equal(init_params(m, seed=4)["pos_embed"], p_a["pos_embed"])
    small = dict(train_size=64, batch_size=32)  # same seed-driven draw and permutation, fewer images
    for epoch in (0, 1):  # the clean epoch and the first cluttered one
        a = list(DigitsData(rows[0][2].replace(**small)).train_batches(epoch))
        b = list(DigitsData(rows[3][2].replace(**small)).train_batches(epoch))
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    other = list(DigitsData(rows[0][2].replace(seed=4, **small)).train_batches(1))
    assert not torch.equal(other[0][0], a[0][0])


def _references() -> dict[str, dict]:

    refs = records.runs_files(REF)
    if "table1" not in refs:
        pytest.skip("no committed reference yet: run `bash reproduce/table1.sh --update-reference` (default mode)")
    return refs


def test_default_plans_match_the_committed_references():
    """Each committed runs file is the default plan of its script as the code stands (same runs, same config
    hashes), so a changed recipe cannot leave stale reference numbers behind."""
    from reproduce import table1
    from reproduce.lib.embedded import plan
    refs = _references()
    assert set(refs) <= set(SCRIPTS), sorted(refs)
    for script, ref in refs.items():
        assert ref["mode"] == "default" and ref.get("script", "table1") == script
        assert ref["seeds"] == plan("default", "sounds" if script == "audio" else "digits")[0]
        recorded = {(r["row"], r["seed"]): (r["name"], r["config_hash"]) for r in ref["runs"]}
        assert recorded == default_plan(script), script
        # the rows' "what the teacher sees" and "MACs saved" columns are what the code computes now

        cfgs = default_configs(script)
        for row in ref["rows"]:
            c = next(c for (rid, _), c in cfgs.items() if rid == row["id"])
            assert (row["kept"], row["saved"]) == embedded.describe(c), (script, row["id"])
    for f in table1.REFERENCE_FILES:
        assert (REF / f).is_file(), f


def _as_former_default(c):
    """A fixed-places config under the names its runs had while that regime was the default (digits_*): every name
    the config carries (its own, its teacher's, a scorer's) put back."""
    import dataclasses
    return c.replace(**{f.name: getattr(c, f.name).replace("fixed_places_", "digits_")
                        for f in dataclasses.fields(c) if isinstance(getattr(c, f.name), str)})


def test_the_fixed_places_records_are_that_regimes_default_plans():
    """The stress regime's committed runs files are its default plans as the code stands, and its claims page is
    rendered from them. The files recorded while it was the default (regime "digits", runs named digits_*) are those
    plans with the former names: the same config hash once the names are put back (a name changes no weight: its
    runs train the same weights: tests/test_digits_regimes.py)."""
    from maskedkd.experiments import config_hash
    folder = REF / "fixed_places"
    refs = records.runs_files(folder)
    assert set(refs) == set(SCRIPTS) - {"audio"}, sorted(refs)
    readme = (ROOT / "reproduce" / "README.md").read_text()
    for script, ref in refs.items():
        assert ref["mode"] == "default" and ref.get("regime", "digits") in ("fixed_places", "digits")
        recorded = {(r["row"], r["seed"]): (r["name"], r["config_hash"]) for r in ref["runs"]}
        planned = default_configs(script, "fixed_places")
        if ref.get("regime") == "fixed_places":
            assert recorded == default_plan(script, "fixed_places"), script
            assert report.current_block(readme, f"fixed_places/{script}") == report.readme_block(ref)
        else:
            former = {(rid.replace("fixed_places_", "digits_"), seed): _as_former_default(c)
                      for (rid, seed), c in planned.items()}
            assert recorded == {k: (c.name, config_hash(c)) for k, c in former.items()}, script
        assert ref["claims"] == claims.evaluate_script(ref)
    assert (folder / "claims.md").read_text() == report.claims_md(refs, header=(
        "# The paper's claims at embedded scale\n\nGenerated by reproduce/lib/embedded.py from the runs files "
        f"in `{folder.name}/`; a claim whose script has not run is listed with the command that evaluates it."))


def test_readme_and_reference_numbers_agree():

    refs = _references()
    readme = (ROOT / "reproduce" / "README.md").read_text()
    for script, ref in refs.items():
        assert report.current_block(readme, script) == report.readme_block(ref), (
            f"regenerate: bash reproduce/{script}.sh --update-reference")
        # the claims in the reference are those the data give now (rules and margin unchanged since)
        again = claims.evaluate_script(ref)
        assert [(r["key"], r["verdict"], r["low"], r["high"]) for r in again] == [
            (r["key"], r["verdict"], r["low"], r["high"]) for r in ref["claims"]], script
    assert report.current_block(readme, "*") == report.summary_block(refs)
    for script in set(SCRIPTS) - set(refs):  # a section without a recorded run shows no numbers
        assert report.current_block(readme, script) == "", script
    header = next(line for line in readme.splitlines() if line.startswith("## Table 1 at embedded scale"))
    assert not re.search(r"[0-9.]+ min", header)  # no typed time: the reference run's is in the generated regime block
    wall = float(re.search(r"wall time ([0-9.]+) min", (REF / "table1.md").read_text()).group(1))
    minutes = json.loads((REF / "regime.json").read_text())["table1_minutes"]
    assert round(minutes, 1) == wall and f"| {wall:.1f} |" in report.current_block(readme, "regime")
    ref = refs["table1"]
    labels = {r["id"]: r["label"] for r in ref["rows"]}
    md = (REF / "table1.md").read_text()
    assert "\n".join(report.claim_lines(ref["claims"], labels)) in md
    assert "\n".join(report.rows_table(ref)) in md
    cl = (REF / "claims.md").read_text()
    assert cl == report.claims_md(refs, header=cl.split("\n\nPaired")[0])  # regenerated from the runs files
    assert all(c.text in cl for c in claims.CLAIMS)


def test_update_reference_copies_outputs_and_rewrites_the_readme_blocks(tmp_path):
    from reproduce import table1
    out, ref, readme = tmp_path / "results", tmp_path / "reference", tmp_path / "README.md"
    out.mkdir()
    ids = [rid for rid, _, _ in table1.student_rows("default", 0)]
    data = {"script": "table1", "mode": "default", "seeds": [0, 1], "teacher_acc": 0.9, "num_patches": 64,
            "teacher_random_curve": {"100": 0.9, "75": 0.88, "50": 0.85, "40": 0.8, "25": 0.6}, "trained_now": 14,
            "rows": [{"id": i, "label": i, "kept": "32 / 64", "saved": "51%", "paper": "–"} for i in ids],
            "runs": [_run(i, s, 0.5) for i in ids for s in (0, 1)]}
    data["claims"] = claims.evaluate_script(data)
    assert {r["key"] for r in data["claims"]} == {c.key for c in claims.CLAIMS if c.script == "table1" and c.kind}
    (out / "table1_runs.json").write_text(json.dumps(data))
    (out / "regime.json").write_text(json.dumps(regime.figures(data, 600.0)))
    for f in table1.REFERENCE_FILES:
        if not f.endswith(".json"):
            (out / f).write_text(f"{f}\n")
    readme.write_text(f"# x\n{report.begin('*')}\nold\n{report.END}\n## t1\n{report.BEGIN}\nold\n{report.END}\n"
                      f"## regime\n{report.begin('regime')}\nold\n{report.END}\n## next\n")
    table1.update_reference(out, ref, readme)
    assert sorted(p.name for p in ref.iterdir()) == sorted(table1.REFERENCE_FILES + ("claims.md",))
    text = readme.read_text()
    assert report.current_block(text) == report.readme_block(data)
    fig = json.loads((ref / "regime.json").read_text())
    assert fig["table1_minutes"] == 10.0 and fig["nokd_over_teacher"] == pytest.approx(0.505 / 0.9)  # seeds 0.50, 0.51
    assert report.current_block(text, "regime") == regime.block(fig)
    assert report.current_block(text, "*") == report.summary_block({"table1": data})
    assert "| **inconclusive** | 4 |" in report.current_block(text, "*")  # its 2 rows x 2 seeds of 60 s: 4 run-minutes
    assert text.startswith("# x\n") and text.endswith("## next\n")
    data["mode"] = "quick"
    (out / "table1_runs.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="default run"):
        table1.update_reference(out, ref, readme)


def test_claim_metrics_read_the_masked_teacher_first_and_last():
    run = _run("keep50", 0, 0.11, sched=True)
    assert claims.metric_of(run) == 0.5
    assert claims.metric_of(run, "teacher_first") == 0.11  # the full-view epoch of the schedule does not count
    assert claims.metric_of(run, "teacher_last") == 0.9
    assert claims.metric_of({"final_acc": 0.4, "history": [{"epoch": 0, "acc": 0.4}]}, "teacher_first") is None
    with pytest.raises(ValueError, match="unknown claim metric 'loss'"):
        claims.metric_of(run, "loss")
    c = next(c for c in claims.CLAIMS if c.key == "curriculum_early")
    data = {"script": "criteria", "rows": [{"id": c.a}, {"id": c.b}],
            "runs": [{**_run(c.a, s, 0.10 + s / 100), "row": c.a} for s in range(3)]
            + [{**_run(c.b, s, 0.60), "row": c.b} for s in range(3)]}
    (r,) = [x for x in claims.evaluate_script(data) if x["key"] == c.key]
    assert r["diffs"] == pytest.approx([-50.0, -49.0, -48.0]) and r["verdict"] == "holds"
    late = next(x for x in claims.evaluate_script(data) if x["key"] == "curriculum_late")
    assert late["diffs"] == pytest.approx([0.0, 0.0, 0.0])  # both end at 0.9


def test_record_writes_a_runs_file_rows_and_claims(tmp_path):
    """records.record: rows in order, a run listed twice kept once, kept / saved read off the configs, the
    script's claims evaluated, and results/claims.md regenerated from every runs file there."""

    from reproduce.lib.embedded import row_id, student_run
    cfgs = [student_run("smoke", s, k, **kw) for k, kw in ((None, {}), (32, {}), (None, {"student_keep": 32}))
            for s in (0, 1)]
    runs = [(row_id(c), c.seed, c, {"name": c.name, "final_acc": 0.5 + 0.1 * (i % 2) + 0.01 * i,
                                    "history": [{"epoch": 0, "acc": 0.5, "teacher_acc_masked": 0.8}], "wall_s": 30.0})
            for i, c in enumerate(cfgs)]
    data = records.record("ablation_student", "smoke", [0, 1], runs + runs[:1], {"kd": "KD"}, tmp_path)
    assert [r["id"] for r in data["rows"]] == ["kd", "keep32", "studentkeep32"]
    assert [(r["kept"], r["saved"]) for r in data["rows"]] == [("64 / 64", "0%"), ("32 / 64", "51%"),
                                                               ("64 / 64, student sees 32", "0%")]
    assert [r["label"] for r in data["rows"]] == ["KD", "keep32", "studentkeep32"] and len(data["runs"]) == 6
    assert json.loads((tmp_path / "ablation_student_runs.json").read_text()) == data
    assert "ablation_student_runs.json (seeds [0, 1] (smoke mode))" in (tmp_path / "claims.md").read_text()


def test_profile_reference_markdown_is_rendered_from_its_json():
    """docs/benchmarks.md points at reproduce/reference/profile_embedded.md instead of restating numbers; that file
    is profile_embedded.render of the committed JSON, so its numbers come from one measured run."""
    import json

    from reproduce import profile_embedded
    ref = ROOT / "reproduce" / "reference"
    assert (ref / "profile_embedded.md").read_text() == profile_embedded.render(
        json.loads((ref / "profile_embedded.json").read_text()))


def test_flops_claim_is_settled_by_the_flops_model():
    """1 - 865 / 1768 PFLOPs (DeiT-S teacher, 300 epochs) and 1 - (3 S + T_50%) / (3 S + T) for DeiT-S -> DeiT-Ti:
    the paper's -51% and 0.281 (docs/paper.md#flops-model)."""
    r = claims.flops_result()
    assert r["verdict"] == "holds"
    assert "865 vs 1768 PFLOPs (-51.1%)" in r["ours"] and "training -28.1%" in r["ours"]


def test_update_reference_refuses_quick_and_smoke_runs():
    import argparse


    args = argparse.Namespace(smoke=False, quick=True, update_reference=True)
    with pytest.raises(SystemExit, match="records the default run"):
        flags.mode_of(args)
    assert flags.mode_of(argparse.Namespace(smoke=False, quick=False, update_reference=True)) == "default"


def test_block_markers_are_checked_before_a_rewrite():
    two = f"{report.begin('a')}\nx\n{report.END}\ntext\n{report.begin('b')}\ny\n{report.END}\n"
    assert report.current_block(report.replace_block(two, "z\n", "a"), "a") == "z\n"
    lost_end = f"{report.begin('a')}\nx\nprose\n{report.begin('b')}\ny\n{report.END}\n"
    with pytest.raises(ValueError, match="has no"):
        report.replace_block(lost_end, "z\n", "a")
    with pytest.raises(ValueError, match="occurs 2 times"):
        report.current_block(two + two, "a")
    with pytest.raises(ValueError, match="occurs 0 times"):
        report.current_block(two, "c")


def test_a_claim_without_paired_seeds_raises_naming_it():
    c = next(c for c in claims.CLAIMS if c.key == "curriculum_early")
    with pytest.raises(ValueError, match="curriculum_early.*no seed has a 'teacher_first' value"):
        claims.evaluate(c, {c.a: {0: 0.5}, c.b: {}})


def test_record_refuses_two_different_runs_for_one_row_and_seed(tmp_path):

    from reproduce.lib.embedded import student_run
    a, b = student_run("smoke", 0, 32), student_run("smoke", 0, 32, criterion="random")
    s = {"name": "x", "final_acc": 0.5, "history": [], "wall_s": 1.0}
    with pytest.raises(ValueError, match="two different runs"):
        records.record("figure2", "smoke", [0], [("keep32", 0, a, s), ("keep32", 0, b, s)], {}, tmp_path)


def test_settle_words_tell_a_mean_on_the_boundary_from_a_very_noisy_one():
    c = next(c for c in claims.CLAIMS if c.key == "curriculum_early")
    far = claims.evaluate(c, {c.a: {0: 0.1, 1: 0.9, 2: 0.1, 3: 0.9}, c.b: {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.49}})
    assert far["settle"] is None and "more than 1000 seeds" in report.settle_words(far)  # mean -0.25, SD ~46
    zero = claims.evaluate(c, {c.a: {0: 0.1, 1: 0.9}, c.b: {0: 0.5, 1: 0.5}})
    assert "no number of seeds would" in report.settle_words(zero)


def test_claims_page_says_why_a_run_without_a_claims_rows_settles_nothing():
    ref = json.loads((REF / "table1_runs.json").read_text())
    smoke = {**ref, "mode": "smoke", "rows": [r for r in ref["rows"] if r["id"] != "keep40"],
             "runs": [r for r in ref["runs"] if r["row"] != "keep40"]}
    smoke["claims"] = claims.evaluate_script(smoke)
    page = report.claims_md({"table1": smoke})
    line = next(x for x in page.splitlines() if x.startswith("| Accuracy holds down to ~40% kept"))
    assert line.endswith("| – | not evaluated: the smoke run in table1_runs.json has no row keep40 |")
    other = next(x for x in page.splitlines() if x.startswith("| MaskedKD at 50% matches full KD"))
    assert "n = 5" in other  # the claims whose rows are there are evaluated as before
    beyond = next(x for x in page.splitlines() if x.startswith("| A kept fraction rising"))
    assert beyond.endswith("| – | not yet evaluated here |")  # no runs file for its script at all


def test_speedup_claim_rules_on_made_up_runs(tmp_path):
    """holds: every teacher faster at each step down and each paper ratio met within 10%; holds in part: faster, a
    ratio short; does not hold: a teacher slower with fewer patches; no run: not evaluated."""
    import json

    def run(rates, name="2026-01-01_x.json"):
        rows = [{"teacher": "DeiT-S", "kept_pct": p, "img_s_eager": v, "ratio_eager": v / rates[0],
                 "paper_ratio": {50: 2.1}.get(p)} for p, v in zip((100, 75, 50, 40, 25), rates)]
        (tmp_path / name).write_text(json.dumps({"machine": {"gpu": "G"}, "teachers": {"rows": rows}}))
        return claims.speedup_result(tmp_path)

    assert claims.speedup_result(tmp_path) is None
    assert run([100, 130, 200, 240, 330])["verdict"] == "holds"  # x2.0 vs x2.1: within 10%
    r = run([100, 130, 180, 240, 330])  # x1.8 vs x2.1: 14% short
    assert (r["verdict"], r["met"], r["of"]) == ("holds in part", 0, 1)
    assert run([100, 130, 200, 190, 330])["verdict"] == "does not hold"
    assert run([100, 130, 200, 240, 330], "2026-02-01_y.json")["verdict"] == "holds"  # the newest run counts


def test_speedup_claim_reads_the_committed_gpu_run():
    r = claims.speedup_result()
    assert r is not None and r["rises"] and r["verdict"] in ("holds", "holds in part")


def test_regime_figures_trial_log_and_branches_agree_with_their_readme_blocks():
    """reproduce/reference/regime.json is what reproduce/lib/regime.py makes of the committed table-1 runs file (the
    wall time aside, which only the invocation knew), the README shows it and the trial log as generated, and the
    branch comparison's first branch is the committed table-1 run."""
    readme = (ROOT / "reproduce" / "README.md").read_text()
    assert report.current_block(readme, "regime_trials") == regime.trials_table(REF / "regime_trials.jsonl")
    kinds = {json.loads(line)["kind"] for line in (REF / "regime_trials.jsonl").read_text().splitlines()}
    assert {"teacher", "students"} <= kinds
    if not (REF / "regime.json").is_file():
        pytest.skip("no committed regime figures yet: bash reproduce/table1.sh --update-reference")
    fig = json.loads((REF / "regime.json").read_text())
    t1 = json.loads((REF / "table1_runs.json").read_text())
    again = regime.figures(t1, None if fig["table1_minutes"] is None else 60 * fig["table1_minutes"])
    assert again.pop("table1_minutes") == pytest.approx(fig.pop("table1_minutes")) and again == fig
    fig = json.loads((REF / "regime.json").read_text())
    assert report.current_block(readme, "regime") == regime.block(fig)
    if (REF / "branches.json").is_file():
        cmp = json.loads((REF / "branches.json").read_text())
        first = cmp["branches"][0]
        assert [(c["key"], c[first]["verdict"], c[first]["mean"]) for c in cmp["claims"]] == [
            (c["key"], c["verdict"], c["mean"]) for c in t1["claims"]]
        assert report.current_block(readme, "branches") == report.branches_block(cmp)


def test_sound_regime_figures_and_trial_log_agree_with_their_readme_blocks():
    """reproduce/reference/audio_regime.json is what reproduce/lib/regime.py makes of the committed audio runs file
    (the wall time aside), measured from an empty results/ (every run trained in the invocation), and the README
    shows it beside the image regime's figures, and the sound trial log, as generated."""
    readme = (ROOT / "reproduce" / "README.md").read_text()
    assert report.current_block(readme, "audio_regime_trials") == regime.trials_table(REF / "audio_regime_trials.jsonl")
    log = [json.loads(line) for line in (REF / "audio_regime_trials.jsonl").read_text().splitlines()]
    assert {"teacher", "students", "note"} <= {e["kind"] for e in log}
    fig = json.loads((REF / "audio_regime.json").read_text())
    runs = json.loads((REF / "audio_runs.json").read_text())
    assert fig["regime"] == runs["regime"] == "sounds" and fig["audio_minutes"] is not None
    again = regime.figures(runs, 60 * fig["audio_minutes"])
    assert again.pop("audio_minutes") == pytest.approx(fig.pop("audio_minutes")) and again == fig
    fig = json.loads((REF / "audio_regime.json").read_text())
    image = json.loads((REF / "regime.json").read_text())
    assert report.current_block(readme, "audio_regime") == regime.block(fig, image)
    # the run's time is in the generated header of audio.md too
    assert f"{fig['audio_minutes']:.1f} minutes from an empty results/" in (REF / "audio.md").read_text()


def test_sound_regime_figures_use_the_sound_targets_and_sit_beside_the_image_regime():
    """The sound regime's targets (regime.py): paired SD up to 1.5 points, stalled below 50%, audio.sh in 20 minutes; the block shows the
    image regime's figures in their own column."""
    def runs(regime_name, kd_gain, low_run):
        seeds = [0, 1, 2, 3, 4]
        rs = []
        for s in seeds:
            rs.append({"row": "nokd", "seed": s, "final_acc": 0.80 + s / 1000, "history": []})
            rs.append({"row": "kd", "seed": s, "final_acc": 0.80 + s / 1000 + kd_gain[s] / 100, "history": []})
        rs.append({"row": "keep54", "seed": 0, "final_acc": low_run, "history": []})
        return {"regime": regime_name, "seeds": seeds, "trained_now": len(rs), "runs": rs,
                "teacher_random_curve": {"100": 0.9, "75": 0.89, "50": 0.85, "40": 0.8, "25": 0.6}}
    gains = [1.0, 2.0, 3.0, 4.0, 2.5]  # SD 1.14: within the sound target, beyond the image regime's 1.0
    sound = regime.figures(runs("sounds", gains, 0.45), 19 * 60)
    assert sound["audio_minutes"] == 19 and "table1_minutes" not in sound
    assert sound["stalled_runs"] == 1  # 45% is stalled for sounds (below 50%); it would not be for digits (20%)
    assert regime.figures(runs("digits", gains, 0.45), None)["stalled_runs"] == 0
    assert regime.met(sound, "kd_minus_nokd_sd") is True and regime.met(sound, "audio_minutes") is True
    assert regime.met(regime.figures(runs("digits", gains, 0.45), None), "kd_minus_nokd_sd") is False
    assert regime.met(sound, "stalled_runs") is False
    assert regime.met(regime.figures(runs("sounds", gains, 0.45), 21 * 60), "audio_minutes") is False
    assert regime.met(regime.figures(runs("sounds", gains, 0.45), None), "audio_minutes") is None
    image = json.loads((REF / "regime.json").read_text()) if (REF / "regime.json").is_file() else \
        regime.figures(runs("digits", gains, 0.9), 600)
    text = regime.block(sound, image)
    head, _, *rows = text.splitlines()[:8]
    assert "embedded image regime (table1.sh)" in head and "embedded sound regime (audio.sh)" in head
    sd_row = next(r for r in rows if r.startswith("| paired SD"))
    assert f"| {image['kd_minus_nokd_sd']:.2f} | {sound['kd_minus_nokd_sd']:.2f} | <= 1.5 | met |" in sd_row
    assert "| 19.0 | <= 20 | met |" in rows[-1]
    assert "**not met**" in next(r for r in rows if r.startswith("| stalled"))


def test_the_audio_sections_recipe_words_are_the_configs():
    """The recipe facts typed in the audio section of reproduce/README.md are the registered sound configs and the
    default plan, so a change of recipe that leaves the prose behind fails here."""
    from maskedkd.experiments import MODELS, get_config
    from reproduce.lib.embedded import plan
    readme = " ".join((ROOT / "reproduce" / "README.md").read_text().split())
    section = readme[readme.index("## Audio at embedded scale"):readme.index(report.begin("audio_regime"))]
    t, s = get_config("sounds_teacher"), get_config("sounds_student_nokd")
    tm, sm = MODELS[t.model], MODELS[s.model]
    words = {1: "one", 2: "two", 3: "three"}
    assert t.events == s.events and s.label_noise == 0.2  # "a fifth of its labels wrong"
    for fact in (f"{sm.num_patches} overlapping 16x16 patches",
                 f"each clip holds {words[s.events]} events of its class",
                 f"an AST teacher {tm.embed_dim} wide x {tm.depth} blocks",
                 f"an AST student {sm.embed_dim} x {sm.depth}",
                 f"trained for {s.epochs} epochs at batch {s.batch_size} on a fixed set of {s.train_size} clips with a "
                 "fifth of its labels wrong", f"{len(plan('default', 'sounds')[0])} paired seeds"):
        assert fact in section, fact


def test_regime_figures_carry_the_precondition_when_the_runs_file_has_attention():
    from reproduce.lib import regime
    seeds = [0, 1, 2]
    runs = [{"row": row, "seed": s, "name": f"{row}-s{s}", "final_acc": 0.8 + (row == "kd") * 0.05 + s / 100}
            for row in ("nokd", "kd") for s in seeds]
    keys = ("top_half", "random_half", "flat_last_half", "mean_top_half", "top_overlap_with_mean", "blank_share", "blank_in_top_half",
            "blank_attention_mass")
    att = {f"{row}-s{s}": {**{k: 0.5 for k in keys}, "top_half": 90.0 + s + (row == "kd"), "random_half": 91.0,
                           "top_minus_random": s - 1.0 + (row == "kd")} for row in ("nokd", "kd") for s in seeds}
    data = {"seeds": seeds, "runs": runs, "trained_now": 6, "teacher_random_curve": {"100": 0.99, "50": 0.95},
            "attention": att}
    fig = regime.figures(data)
    assert fig["nokd_top_minus_random"] == [-1.0, 0.0, 1.0] and fig["nokd_top_minus_random_mean"] == 0.0
    assert fig["kd_top_minus_random_mean"] == 1.0 and fig["nokd_top_half"] == 91.0
    assert regime.met(fig, "nokd_top_minus_random_mean") is True  # >= 0, the pre-registered target
    assert regime.met({**fig, "nokd_top_minus_random_mean": -0.1}, "nokd_top_minus_random_mean") is False
    text = regime.block(fig)
    assert "teacher on a no-KD student's top half" in text and "+0.0 [" in text and "logit-KD students" in text
    del data["attention"]  # a runs file from before the figure: the block as it was
    assert "nokd_top_minus_random_mean" not in regime.figures(data)
    assert "top half" not in regime.block(regime.figures(data))


def test_attention_figures_pair_with_the_teacher_curve_and_count_blank_patches():
    import maskedkd as mkd
    from maskedkd.data.loaders import fixed_test_set
    from maskedkd.experiments import MODELS, get_config
    from maskedkd.teachers import cached_teacher
    t_cfg, s_cfg = get_config("digits_teacher"), get_config("digits_student_nokd").replace(test_size=200)
    t_path = cached_teacher(t_cfg)
    f = embedded.attention_figures(s_cfg, mkd.init_params(MODELS[s_cfg.model], seed=1), t_cfg, t_path)
    curve = embedded.teacher_curve(t_cfg, t_path, s_cfg)
    assert f["random_half"] == pytest.approx(100 * curve["50"])  # the same three draws: the pair is exact
    assert f["top_minus_random"] == pytest.approx(f["top_half"] - f["random_half"])
    x, _ = fixed_test_set(s_cfg)  # the default scene: one of four 16-px cells is empty, noise 0.1
    cells = x[:, 0].unfold(1, 4, 4).unfold(2, 4, 4).reshape(len(x), 64, 16).std(-1) < embedded.BLANK_SPREAD
    assert f["blank_share"] == pytest.approx(cells.float().mean().item()) and 0.25 <= f["blank_share"] < 0.5
    assert 0 <= f["blank_in_top_half"] <= 1 and 0 < f["blank_attention_mass"] < 1
    assert 0.5 <= f["top_overlap_with_mean"] <= 1  # at least chance overlap with the shared half
