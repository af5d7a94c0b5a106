"""The markdown made from claims and runs files: the claims page, the summary at the top of reproduce/README.md, each
script's block, and the marked blocks of a README that these replace."""
from __future__ import annotations

import statistics
from dataclasses import replace

from reproduce.lib.claims import (CLAIMS, FAILED_TEACHER, METRICS, Claim, flops_result,
                                  masked_failures, paper_ref, run_minutes, speedup_result)
from reproduce.lib.stats import MARGIN


def fmt_ci(r: dict) -> str:
    """'+1.2 [-0.3, +2.7]' (points), or '+1.2 (1 seed, no interval)'."""
    if len(r["seeds"]) < 2:
        return f"{r['mean']:+.1f} (1 seed, no interval)"
    return f"{r['mean']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]"


def settle_words(r: dict) -> str:
    """What would settle an inconclusive verdict, in words ('' for a settled one)."""
    if r["verdict"] != "inconclusive":
        return ""
    n = len(r["seeds"])
    if n < 2:
        return "needs at least 2 seeds for an interval"
    if r["settle"] is None:
        on_bound = {"matches": abs(abs(r["mean"]) - MARGIN), "noninferior": abs(r["mean"] + MARGIN)}.get(
            r["kind"], abs(r["mean"])) == 0
        return ("no number of seeds would, at this mean" if on_bound else
                f"more than 1000 seeds if the mean and SD ({r['sd']:.1f}) stay as observed")
    return (f"about {r['settle'] - n} more seed{'s' * (r['settle'] - n != 1)} ({r['settle']} in all) if the mean "
            f"and SD ({r['sd']:.1f}) stay as observed")


def kind_words(kind: str, margin: float = MARGIN) -> str:
    return {"beats": "A - B > 0", "below": "A - B < 0", "matches": f"-{margin:g} < A - B < {margin:g}",
            "noninferior": f"A - B > -{margin:g}"}[kind]


def as_evaluated(c: Claim, r: dict) -> Claim:
    """The claim with the rows its result `r` compared (a row id may depend on the regime: Claim.on)."""
    return replace(c, a=r["a"], b=r["b"])


def ab_words(c: Claim, labels: dict[str, str]) -> str:
    """'A label vs B label', with the metric when it is not the student's accuracy."""
    ab = f"{labels[c.a]} vs {labels[c.b]}"
    return ab if c.metric == "student" else f"{ab} ({METRICS[c.metric]})"


def claim_lines(results: list[dict], labels: dict[str, str], margin: float = MARGIN) -> list[str]:
    """Markdown table of evaluated claims: claim, A vs B, per-seed differences, mean and CI, rule, verdict."""
    by_key = {c.key: c for c in CLAIMS}
    lines = ["| claim (source) | A vs B | A - B per seed (points) | mean [95% CI] | rule | verdict |",
             "|---|---|---|---|---|---|"]
    for r in results:
        c = as_evaluated(by_key[r["key"]], r)
        per = ", ".join(f"{d:+.1f}" for d in r["diffs"])
        v = r["verdict"] + (f": {settle_words(r)}" if settle_words(r) else "")
        lines.append(f"| {c.text} ({paper_ref(c)}) | {ab_words(c, labels)} | {per} | {fmt_ci(r)} | "
                     f"{kind_words(c.kind, margin)} | **{v}** |")
    return lines


def _evaluated(datas: dict[str, dict]) -> dict[str, tuple[dict, dict]]:
    """Claim key -> (its result, the runs file it comes from), over runs files keyed by script."""
    return {r["key"]: (r, d) for d in datas.values() for r in d.get("claims", [])}


def _labels(d: dict) -> dict[str, str]:
    return {r["id"]: r["label"] for r in d["rows"]}


def _mode_note(d: dict) -> str:
    return "" if d.get("mode", "default") == "default" else f" ({d['mode']} mode)"


def claims_md(datas: dict[str, dict], header: str = "", margin: float = MARGIN) -> str:
    """results/claims.md: every claim; the evaluated ones (from the runs files `datas`, script -> content) with
    their numbers, the others 'not yet evaluated' with the command that will evaluate them."""
    done = _evaluated(datas)
    lines = [header or "# The paper's claims at embedded scale", "",
             f"Paired differences over seeds (same seed: same student initialisation and data order), 95% Student-t "
             f"intervals, equivalence margin {margin:g} points for \"matches\"; the rules are in "
             f"`reproduce/lib/claims.py`. Paper numbers are ImageNet's, for orientation only. Runs files: "
             + (", ".join(f"{k}_runs.json (seeds {d['seeds']}{_mode_note(d)})" for k, d in sorted(datas.items()))
                or "none") + ".", "",
             "| claim | source | paper (ImageNet) | evaluated by | A - B, mean [95% CI] (points) | verdict |",
             "|---|---|---|---|---|---|"]
    flops, speed = flops_result(), speedup_result()
    for c in CLAIMS:
        if c.key == flops["key"]:
            num, v = flops["ours"], flops["verdict"]
        elif speed and c.key == speed["key"]:
            num, v = speed["ours"], speed["verdict"]
        elif c.key in done:
            r, d = done[c.key]
            num = f"{ab_words(as_evaluated(c, r), _labels(d))}: {fmt_ci(r)}, n = {len(r['seeds'])}"
            v = r["verdict"] + (f" ({settle_words(r)})" if settle_words(r) else "")
        else:
            num, v = "–", "not yet evaluated here"
            d = datas.get(c.script)
            on = None if d is None or not c.kind else c.on(d.get("regime", "digits"))
            missing = [] if on is None else [r for r in (on.a, on.b) if r not in {x["id"] for x in d["rows"]}]
            if missing:  # e.g. a smoke run, which trains one keep count: say why, not just "not yet"
                v = f"not evaluated: the {d['mode']} run in {c.script}_runs.json has no row {', '.join(missing)}"
        lines.append(f"| {c.text} | {paper_ref(c)} | {c.paper} | `{c.command}` | {num} | {v} |")
    return "\n".join(lines) + "\n"


def summary_block(datas: dict[str, dict], margin: float = MARGIN) -> str:
    """The short table at the top of reproduce/README.md, from the committed runs files: one line per claim with
    its command, the paper's number, ours (A - B with its interval), the verdict and the run-minutes of its two
    rows."""
    done = _evaluated(datas)
    lines = ["| claim (source) | command | paper (ImageNet) | ours: A - B, mean [95% CI], n seeds | verdict | "
             "run-minutes |", "|---|---|---|---|---|---|"]
    flops, speed = flops_result(), speedup_result()
    for c in CLAIMS:
        if c.key == flops["key"]:
            ours, v, mins = flops["ours"], f"**{flops['verdict']}**", "0"
        elif speed and c.key == speed["key"]:
            ours, v, mins = speed["ours"], f"**{speed['verdict']}**", "–"
        elif c.key in done:
            r, d = done[c.key]
            ours, v = f"{fmt_ci(r)}, n = {len(r['seeds'])}", f"**{r['verdict']}**"
            mins = f"{run_minutes(d, (r['a'], r['b'])):.0f}"
        elif c.regime and c.regime != "digits":  # a stress regime's claim: settled by that regime's own records
            ours, v, mins = "–", f"on its regime: `reproduce/reference/{c.regime}/claims.md`", "–"
        else:
            ours, v, mins = "–", "not yet evaluated", "–"
        lines.append(f"| {c.text} ({paper_ref(c)}) | `{c.command}` | {c.paper} | {ours} | {v} | {mins} |")
    return "\n".join(lines) + "\n"


def _pm(xs: list[float]) -> str:
    m = statistics.fmean(xs)
    return f"{100 * m:.1f} ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{100 * m:.1f}"


def rows_table(data: dict) -> list[str]:
    """Markdown table of a runs file's rows: mean ± SD over seeds, each seed, the masked teacher at the last
    evaluation, how many runs' masked teacher saw no digit at its first masked evaluation, teacher MACs saved."""
    lines = [f"| method | patches kept | student acc (%), mean ± SD | per seed {data['seeds']} | masked teacher, "
             f"last eval (%) | masked teacher < {100 * FAILED_TEACHER:.0f}% at its first masked eval | "
             f"teacher MACs saved | {data.get('paper_column', 'paper (ImageNet, DeiT-S -> DeiT-Ti)')} |",
             "|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        runs = sorted((r for r in data["runs"] if r["row"] == row["id"]), key=lambda r: r["seed"])
        if not runs:
            continue
        accs = [r["final_acc"] for r in runs]
        t_last = [r["history"][-1].get("teacher_acc_masked") for r in runs]
        bad, total = masked_failures(runs)
        masked = row["kept"] not in ("–", "") and not row["kept"].startswith(str(data["num_patches"]) + " /")
        fails = f"{bad} of {total}" if masked and total else "–"
        lines.append(f"| {row['label']} | {row['kept']} | {_pm(accs)} | "
                     f"{', '.join(f'{100 * a:.1f}' for a in accs)} | "
                     f"{'–' if t_last[0] is None else _pm(t_last)} | {fails} | {row['saved']} | {row['paper']} |")
    return lines


def readme_block(data: dict, margin: float = MARGIN) -> str:
    """The generated part of a script's section of reproduce/README.md, from reproduce/reference/SCRIPT_runs.json:
    the rows table and the claims table (tests/test_claims.py checks the README against it)."""
    labels = _labels(data)
    teacher = f"teacher test accuracy {100 * data['teacher_acc']:.1f}%; " if data.get("teacher_acc") else ""
    return "\n".join([
        f"Seeds {data['seeds']}; {teacher}{len(data['runs'])} runs, "
        f"{run_minutes(data):.0f} run-minutes of training (1 thread each).", "",
        *rows_table(data), "",
        f"Claims (paired by seed, 95% Student-t interval, equivalence margin {margin:g} points; rules in "
        "`reproduce/lib/claims.py`, every claim of the paper in `reproduce/reference/claims.md`):", "",
        *claim_lines(data["claims"], labels, margin)]) + "\n"


END = "<!-- generated: end -->"


def begin(key: str = "table1") -> str:
    """The marker opening the README block generated from reproduce/reference/KEY_runs.json ('*' for the summary
    of every runs file; 'regime', 'branches', 'regime_trials', 'audio_regime' and 'audio_regime_trials' for
    reproduce/reference/KEY.json, or KEY.jsonl for the trial logs)."""
    name = {"regime": "regime.json", "branches": "branches.json", "regime_trials": "regime_trials.jsonl",
            "audio_regime": "audio_regime.json", "audio_regime_trials": "audio_regime_trials.jsonl"}.get(
        key, f"{key}_runs.json")
    return f"<!-- generated from reproduce/reference/{name}: begin -->"


BEGIN = begin()


def _span(text: str, key: str) -> tuple[int, int]:
    """Start and end of the block begin(key) ... END; raises unless the marker is there once and its END comes
    before any other block's begin marker (a lost END must not let a rewrite swallow the next section)."""
    mark = begin(key)
    if text.count(mark) != 1:
        raise ValueError(f"{mark!r} occurs {text.count(mark)} times in the text (expected once)")
    i = text.index(mark) + len(mark)
    j = text.find(END, i)
    nxt = text.find("<!-- generated from ", i)
    if j < 0 or 0 <= nxt < j:
        raise ValueError(f"the block {mark!r} has no {END!r} before the next block or the end of the text")
    return i, j


def replace_block(text: str, block: str, key: str = "table1") -> str:
    """text with the part between begin(key) and its END marker replaced by block."""
    i, j = _span(text, key)
    return text[:i] + "\n" + block + text[j:]


def current_block(text: str, key: str = "table1") -> str:
    """The part of text between begin(key) and its END marker."""
    i, j = _span(text, key)
    return text[i + 1: j]


def branches_block(cmp: dict) -> str:
    """Table 1's verdicts under two kernel branches (reproduce/branches.py's comparison) as markdown."""
    la, lb = cmp["branches"]
    lines = [f"| claim | {la}: A - B [95% CI] | verdict | {lb}: A - B [95% CI] | verdict | same verdict |",
             "|---|---|---|---|---|---|"]
    for c in cmp["claims"]:
        x, y = c[la], c[lb]
        lines.append(f"| {c['key']} ({c['a']} vs {c['b']}) | {fmt_ci(x)} | {x['verdict']} | "
                     f"{fmt_ci(y)} | {y['verdict']} | {'yes' if c['same'] else '**no**'} |")
    lines += ["", f"{cmp['same']} of {cmp['total']} table-1 verdicts are the same under both kernel branches "
                  f"(seeds {cmp['seeds']}, {cmp['mode']} mode)."]
    return "\n".join(lines) + "\n"
