"""tools/bench_gpu.py, the prepared GPU benchmark, runs end to end on the CPU with tiny configs and writes its
documented JSON + markdown (README, "GPU benchmark"). ~15 s on an idle 2-core CPU: two tiny joint pipelines (fp32,
bf16), a synthetic-predictor row, a 2-panorama batch and a 256x128 "large" run; it is the only check of the script."""

import json

import pytest

from tools.bench_gpu import STAGES, main

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_bench_gpu_tiny_writes_its_json_and_table(tmp_path):
    assert main(["--tiny", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert result["setup"]["tiny"] is True
    assert [r["name"] for r in result["runs"]] == ["fp32", "bf16"]
    for run in result["runs"]:
        for part in ("cold", "warm"):
            assert set(STAGES) <= set(run[part]) and run[part]["network"] > 0
            assert run[part]["total"] >= run[part]["non_network"] >= 0
        assert run["attention"]["midas"]["backbone"] == "sdpa"
    assert result["batch"]["panoramas"] == 2 and result["batch"]["panoramas_per_s"] > 0
    assert result["large"]["output"] == [128, 256]
    assert result["fusion_synthetic"]["warm"]["network"] > 0
    assert any("compile" in s for s in result["skipped"])
    table = (tmp_path / "bench_gpu.md").read_text()
    assert "| config | projection | network |" in table and "| bf16 |" in table and "panoramas/s" in table
