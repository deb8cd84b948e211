"""examples/quickstart.ipynb executes headless, top to bottom, so it cannot rot: a real smoke run through
testbed.api on an embedded Ray, two strategies, the breakdown plotted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.timeout(500)]


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SPLITBED_NOTEBOOK_OUT", str(tmp_path / "run"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(ROOT / "examples/quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=400, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "examples")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "'complete'" in text
    assert "cloud_max_batch_size" not in text and "cloud.max_batch_size" in text  # the ConfigError, printed
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the breakdown plot and the CDF drew
    assert (tmp_path / "run" / "summary.json").exists()
