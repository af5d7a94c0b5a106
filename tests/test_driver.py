"""The lab's one driver (reproduce/lib/driver.py): each embedded script's markdown and CSV render from its committed
runs file byte for byte, as the script wrote them when it ran."""
import json
from pathlib import Path

import pytest

REF = Path(__file__).resolve().parents[1] / "reproduce" / "reference"


RECORDS = [(folder, p.name[:-len("_runs.json")]) for folder in ("", "fixed_places")
           for p in sorted((REF / folder).glob("*_runs.json")) if p.name not in ("table1_runs.json", "feature_kd_runs.json")]


def test_every_folder_has_its_records():
    assert {s for f, s in RECORDS if f == "fixed_places"} == {"figure2", "criteria", "ablation_student",
                                                              "ablation_tome", "beyond"}
    assert ("", "audio") in RECORDS


@pytest.mark.parametrize("folder,script", RECORDS)
def test_committed_outputs_render_again_from_their_runs_files(folder, script):
    import importlib
    spec = importlib.import_module(f"reproduce.{script}").SPEC
    data = json.loads((REF / folder / f"{script}_runs.json").read_text())
    for name, text in spec.render(data).items():
        assert text == (REF / folder / name).read_bytes().decode(), name


@pytest.mark.parametrize("folder", ["", "fixed_places"])
def test_table1_renders_again_from_its_runs_files(folder):
    from reproduce import table1
    data = json.loads((REF / folder / "table1_runs.json").read_text())
    if data["feature_kd"]:  # the invocation trained the feature-KD rows too: its table shows them
        feature = json.loads((REF / folder / "feature_kd_runs.json").read_text())
        data = {**data, "rows": data["rows"] + feature["rows"], "runs": data["runs"] + feature["runs"],
                "claims": data["claims"] + feature["claims"]}
    for name, text in table1.files(data).items():
        assert text == (REF / folder / name).read_bytes().decode(), name
