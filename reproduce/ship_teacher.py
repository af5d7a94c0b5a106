"""Ship a regime trial's teacher as the embedded teacher NAME: maskedkd/assets/NAME.safetensors and NAME.json.

    python -m reproduce.ship_teacher sounds_teacher results/regime_trials/runs/trial_sounds_teacher_ev3 \
        --trial "python -m reproduce.regime_trials --task sounds teacher ev3 events=3"

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
    ap.add_argument("run_dir", type=Path, help="the trial's run directory (summary.json, params.safetensors)")
    ap.add_argument("--trial", required=True, help="the command that trained the trial, as its log records it")
    ap.add_argument("--trained-on", default="", help="the machine, threads and date the trial trained on")
    args = ap.parse_args(argv)
    cfg = get_config(args.name)
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


if __name__ == "__main__":
    main()
