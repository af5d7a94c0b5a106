"""Ship a regime trial's teacher as the embedded teacher NAME: maskedkd/assets/NAME.safetensors and NAME.json.

    python -m reproduce.ship_teacher sounds_teacher results/regime_trials/runs/trial_sounds_teacher_ev3 \
        --trial "python -m reproduce.regime_trials --task sounds teacher ev3 events=3"
    python -m reproduce.ship_teacher fixed_places_teacher --from-asset digits_teacher   # a regime renamed

The trial must have trained NAME's registered recipe under another name (its config hash, with the trial's name,
equals the one in the trial's summary), so `maskedkd.teachers.cached_teacher(get_config(NAME))` uses the file as
is. The test accuracy is recomputed on the config's fixed test set and must equal the trial's summary; both files
are written atomically (tests/test_assets.py checks them).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import maskedkd as mkd
from maskedkd.checkpoint import atomic_write
from maskedkd.data.loaders import fixed_test_set
from maskedkd.experiments import MODELS, config_hash, get_config
from maskedkd.teachers import ASSETS


def test_accuracy(cfg, params) -> float:
    x, y = fixed_test_set(cfg)
    with torch.no_grad():
        return (mkd.forward(params, x, MODELS[cfg.model]).argmax(-1) == y).float().mean().item()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="the registered teacher config, e.g. sounds_teacher")
    ap.add_argument("run_dir", type=Path, nargs="?", help="the trial's run directory (summary.json, "
                    "params.safetensors)")
    ap.add_argument("--trial", help="the command that trained the trial, as its log records it")
    ap.add_argument("--from-asset", help="instead of a trial: a shipped teacher whose recipe is NAME's but for the "
                    "name (a regime kept under a new name), shipped again as NAME")
    ap.add_argument("--trained-on", default="", help="the machine, threads and date the trial trained on")
    args = ap.parse_args(argv)
    cfg = get_config(args.name)
    if (args.from_asset is None) == (args.run_dir is None) or (args.run_dir is None) != (args.trial is None):
        raise SystemExit("give a trial (RUN_DIR --trial COMMAND) or --from-asset NAME, not both")
    if args.from_asset:
        return from_asset(cfg, args.from_asset)
    summary = json.loads((args.run_dir / "summary.json").read_text())
    trial = args.run_dir.name
    trial_hash = summary["config_hash"]
    if config_hash(cfg.replace(name=trial)) != trial_hash:
        raise SystemExit(f"{args.run_dir}: trained another recipe than {args.name} (hash {trial_hash} != "
                         f"{config_hash(cfg.replace(name=trial))} for {args.name} renamed {trial})")
    weights = load_file(str(args.run_dir / "params.safetensors"))
    acc = test_accuracy(cfg, mkd.load_checkpoint(weights, MODELS[cfg.model]))
    if abs(acc - summary["final_acc"]) > 2e-3:
        raise SystemExit(f"recomputed test accuracy {acc:.4f} != the trial's {summary['final_acc']:.4f}")
    h = config_hash(cfg)
    meta = {"config_hash": h, "final_acc": str(round(acc, 4)),
            "trained_as": f"{trial} (config hash {trial_hash}), the same recipe but for the name"}
    record = {"command": f"python -m maskedkd.train {args.name}", "config_hash": h, "test_acc": round(acc, 4),
              "test_set": f"{cfg.data}: test_size={cfg.test_size}"
                          + (f", events={cfg.events}" if cfg.data == "sounds" else ""),
              "epochs": cfg.epochs, "history": [e["acc"] for e in summary["history"]],
              "wall_minutes": round(summary["wall_s"] / 60, 1),
              "trained_on": args.trained_on or f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}",
              "trained_as": args.trial + f", config {trial}", "trained_as_config": [trial, trial_hash],
              "reproduction_tolerance": "a re-run on another machine or thread count is not bit-identical (fp32 "
                                        "reduction order)",
              "params": sum(v.numel() for v in weights.values())}
    mkd.save_params(weights, ASSETS / f"{args.name}.safetensors", metadata=meta)
    atomic_write(ASSETS / f"{args.name}.json", lambda p: Path(p).write_text(json.dumps(record, indent=1) + "\n"))
    print(json.dumps(record, indent=1))


def from_asset(cfg, source: str) -> None:
    """Ship the asset `source` again as cfg.name: its recipe must be cfg's but for the name, and its test accuracy
    is recomputed on cfg's test set (equal to the source record's)."""
    src = get_config(source)
    record = json.loads((ASSETS / f"{source}.json").read_text())
    if config_hash(cfg.replace(name=source)) != record["config_hash"]:
        raise SystemExit(f"{source}'s recipe is not {cfg.name}'s but for the name")
    weights = load_file(str(ASSETS / f"{source}.safetensors"))
    acc = test_accuracy(cfg, mkd.load_checkpoint(weights, MODELS[cfg.model]))
    if abs(acc - record["test_acc"]) > 2e-3:
        raise SystemExit(f"recomputed test accuracy {acc:.4f} != {source}'s {record['test_acc']:.4f}")
    h = config_hash(cfg)
    meta = {"config_hash": h, "final_acc": str(round(acc, 4)), "trained_as": f"{src.name}, shipped again as {cfg.name}"}
    record = {**record, "command": f"python -m maskedkd.train {cfg.name}", "config_hash": h,
              "shipped_from": f"maskedkd/assets/{source}.safetensors (python -m reproduce.ship_teacher {cfg.name} "
                              f"--from-asset {source})"}
    mkd.save_params(weights, ASSETS / f"{cfg.name}.safetensors", metadata=meta)
    atomic_write(ASSETS / f"{cfg.name}.json", lambda p: Path(p).write_text(json.dumps(record, indent=1) + "\n"))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
