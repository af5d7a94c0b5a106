"""The lab's one driver (reproduce/lib/driver.py): each embedded script's markdown and CSV render from its committed
runs file byte for byte, as the script wrote them when it ran."""
import json
from pathlib import Path

import pytest

REF = Path(__file__).resolve().parents[1] / "reproduce" / "reference"


@pytest.mark.parametrize("folder,script", [("", s) for s in ("figure2", "ablation_student", "criteria", "ablation_tome",
                                                              "beyond", "audio")] + [("fixed_places", "criteria")])
def test_committed_outputs_render_again_from_their_runs_files(folder, script):
    import importlib
    spec = importlib.import_module(f"reproduce.{script}").SPEC
    data = json.loads((REF / folder / f"{script}_runs.json").read_text())
    for name, text in spec.render(data).items():
        assert text == (REF / folder / name).read_bytes().decode(), name


def test_table1_renders_again_from_its_runs_files():
    from reproduce import table1
    data = json.loads((REF / "table1_runs.json").read_text())
    if data["feature_kd"]:  # the invocation trained the feature-KD rows too: its table shows them
        feature = json.loads((REF / "feature_kd_runs.json").read_text())
        data = {**data, "rows": data["rows"] + feature["rows"], "runs": data["runs"] + feature["runs"],
                "claims": data["claims"] + feature["claims"]}
    for name, text in table1.files(data).items():
        assert text == (REF / name).read_bytes().decode(), name
