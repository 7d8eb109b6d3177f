"""The package never reaches the network on its own: ONNX Runtime's usage telemetry (1.29 and
later, on Linux and macOS) is off in a process that imported rag_pipeline first."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO
from tests.integration.processes import clean_env, run_python

# What ONNX Runtime reads to decide on telemetry by itself: any of these set turns it off, so the
# plain process must not see them (measured one by one on 1.32; CI=1 is what our CI runner sets).
DECIDING_VARIABLES = (
    "ORT_DISABLE_TELEMETRY",
    "ORT_RUNNING_UNIT_TESTS",
    "CI",
    "APPVEYOR",
    "BITBUCKET_BUILD_NUMBER",
    "BUILDKITE",
    "CIRCLECI",
    "CODEBUILD_BUILD_ID",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "JENKINS_URL",
    "TEAMCITY_VERSION",
    "TF_BUILD",
    "TRAVIS",
)

# Imports rag_pipeline first (or not), then runs a one-node model on ONNX Runtime.
RUN_A_SESSION = """
import json, os, sys
if sys.argv[1] == "ours":
    import rag_pipeline
import numpy as np
import onnxruntime
from onnx import TensorProto, helper

x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
cpu = ["CPUExecutionProvider"]
session = onnxruntime.InferenceSession(model.SerializeToString(), providers=cpu)
session.run(None, {"x": np.ones(1, np.float32)})
print(json.dumps({"setting": os.environ.get("ORT_DISABLE_TELEMETRY")}))
"""


def _run(home: Path, who: str, **extra: str) -> tuple[dict[str, str | None], list[str]]:
    home.mkdir()
    env = {k: v for k, v in clean_env().items() if k not in DECIDING_VARIABLES}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(REPO))
    env.update(extra)
    child = run_python(["-c", RUN_A_SESSION, who], env=env)
    assert child.returncode == 0, child.stderr[-3000:]
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    return json.loads(child.stdout.strip().splitlines()[-1]), written


def test_onnx_runtime_writes_and_sends_nothing_after_import_rag_pipeline(tmp_path: Path) -> None:
    import onnxruntime

    _, without_us = _run(tmp_path / "plain", "plain")
    # Telemetry came in 1.29: from there on the plain process shows what there is to prevent.
    if tuple(int(n) for n in onnxruntime.__version__.split(".")[:2]) >= (1, 29):
        assert any("onnxruntime" in name for name in without_us), without_us
    seen, with_us = _run(tmp_path / "ours", "ours")
    assert seen["setting"] == "1"
    assert with_us == []  # no device id, no offline event store: no uploader was started


def test_a_telemetry_setting_of_the_user_is_kept(tmp_path: Path) -> None:
    seen, _ = _run(tmp_path / "home", "ours", ORT_DISABLE_TELEMETRY="0")
    assert seen["setting"] == "0"
