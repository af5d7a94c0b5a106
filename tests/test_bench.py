"""maskedkd.bench's shared pieces: the one budget loop of every sectioned benchmark (reproduce/gpu_check.py,
reproduce/profile_embedded.py), the machine description, and the teacher timer's masked calls."""
import math

import pytest
import torch

import maskedkd as mkd
from maskedkd import bench


class FakeClock(bench.Clock):
    def __init__(self, left):
        super().__init__()
        self._left = list(left)

    def left(self):
        return self._left.pop(0)


def test_run_sections_runs_skips_keeps_failures_and_saves_after_each(capsys):
    saved, ran = [], []

    def ok():
        ran.append("ok")
        return {"a": 1}

    def boom():
        raise ValueError("bad value 7")

    def not_run():
        raise RuntimeError("not run: [a] failed")

    out = {"x": 0}
    clock = FakeClock([100, 100, 100, 10, 100])
    bench.run_sections([("[a]", 0, ok), ("[b]", 0, boom), ("[c]", 0, not_run), ("[d]", 60, ok), ("[e]", 60, ok)],
                       out, clock, lambda: saved.append(dict(out)))
    assert ran == ["ok", "ok"] and out["a"] == 1 and out["x"] == 0
    assert set(out["skipped"]) == {"[b]", "[c]", "[d]"}
    assert out["skipped"]["[b]"].startswith("failed: Traceback") and "ValueError: bad value 7" in out["skipped"]["[b]"]
    assert out["skipped"]["[c]"] == "not run: [a] failed"  # said as it is, without a traceback
    assert out["skipped"]["[d]"] == "10 s of the budget left"
    assert len(saved) == 5 and "a" in saved[0] and "[b]" in saved[1]["skipped"]  # saved after every section
    assert out["wall_s"] >= 0 and "[b]: failed" in capsys.readouterr().out


def test_clock_without_a_budget_never_runs_out():
    assert bench.Clock().left() == math.inf and bench.Clock(5.0).left() <= 5.0


def test_machine_describes_versions_and_the_cpu():
    m = bench.machine()
    assert m["torch"] == torch.__version__ and m["cores"] >= 1 and m["cpu_model"]
    import numpy
    import PIL
    assert m["numpy"] == numpy.__version__ and m["pillow"] == PIL.__version__
    assert bench._version("no-such-distribution-here") is None


def test_teacher_rates_times_every_kept_count_and_bench_teacher_reads_them():
    cfg = mkd.vit_config("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    sec, first_s = bench.teacher_rates(cfg, [None, 8, 4], batch=2, iters=1, device=torch.device("cpu"), bf16=True)
    assert set(sec) == {None, 8, 4} and all(v > 0 for v in sec.values()) and first_s > 0
    r = bench.bench_teacher(cfg.name, 8, batch=2, iters=1, device=torch.device("cpu"), cfg=cfg)
    assert r["num_keep"] == 8 and r["speedup"] == pytest.approx(r["ms_full"] / r["ms_masked"])
    assert r["macs_speedup"] == pytest.approx(mkd.macs(cfg) / mkd.macs(cfg, 8))


@pytest.mark.slow
def test_loader_benchmark_runs_every_path_from_its_command_line(capsys):
    """`python -m maskedkd.bench loader`: DeiT's recipe on generated JPEGs, each path once (seconds with one worker)."""
    r = bench.main(["loader", "--workers", "1", "--seconds", "0.5", "--images", "2", "--img-size", "32",
                    "--batch", "4"])
    assert [(x["path"], x["workers"]) for x in r["runs"]] == [(p, 1) for p in bench.LOADER_PATHS]
    assert all(x["img_s"] > 0 and x["images"] >= 4 for x in r["runs"]), r["runs"]
    assert r["per_core_img_s"] == r["runs"][0]["img_s"] and r["cores_needed"] == {}
    assert "uint8-randaug" in capsys.readouterr().out


@pytest.mark.parametrize("argv,named", [
    (["loader", "--workers", "1,x"], "'x': must be an integer"),
    (["loader", "--seconds", "0"], "'0': must lie in (0, inf)"),
    (["loader", "--workers", "1,1"], "'1,1' repeats a value"),
    (["step", "--batch", "0"], "'0': must lie in [1, inf)"),
    (["teacher", "--num-keep", "-3"], "'-3': must lie in [1, inf)"),
])
def test_bench_flags_refuse_bad_values_naming_them(argv, named, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and named in capsys.readouterr().err
