"""The GPU check's report (harness.gpu_check): what it says with and without a GPU, and when it fails."""
import json
import unittest.mock as mock
from pathlib import Path

import torch

from harness import gpu_check
from harness.suites import load_suite
from harness.runner import plan

NO_GPU = {"available": False, "reason": "torch X is a build without CUDA", "torch": "X", "cuda_build": None,
          "cudnn": None, "gpu": None, "capability": None, "memory_bytes": None, "gpu_count": 0}
H200 = {**NO_GPU, "available": True, "reason": None, "cuda_build": "12.8", "gpu": "NVIDIA H200",
        "capability": "9.0", "memory_bytes": 141 * 2**30, "gpu_count": 1}
JUNIT = """<?xml version="1.0"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_cuda" name="test_a[flash]"/>
<testcase classname="tests.test_cuda" name="test_b"><skipped message="fla not installed">x</skipped></testcase>
<testcase classname="tests.test_cuda" name="test_c"><failure message="assert 0.3 &lt;= 0.04">tb</failure></testcase>
</testsuite></testsuites>"""


def test_without_a_gpu_every_cell_is_skipped_with_the_reason():
    rows = gpu_check.cell_rows(Path("suites/gpu_check.yaml"), None, NO_GPU["reason"], None)
    suite, _ = load_suite("suites/gpu_check.yaml")
    assert len(rows) == len(plan(suite, torch.device("cuda"))) > 0
    assert {r["status"] for r in rows} == {"skipped"}
    assert all(r["reason"] == "no CUDA: torch X is a build without CUDA" for r in rows)
    assert {r["impl"] for r in rows} == {"sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "fla", "mamba_ssm"}
    text, passed = gpu_check.render(NO_GPU, [], [], {"gpu_check": rows})
    assert passed and "no GPU" in text and "skipped 33" in text


def test_smoke_cells_on_cuda_are_bf16_with_decode():
    rows = gpu_check.cell_rows(Path("suites/smoke.yaml"), None, "none", None)
    assert {r["dtype"] for r in rows} == {"bfloat16"}
    assert {"forward", "train", "decode"} <= {r["mode"] for r in rows}


def test_a_gpu_run_reports_each_cell_and_fails_on_errors_and_missing_cells(tmp_path):
    suite, _ = load_suite("suites/gpu_check.yaml")
    cells = plan(suite, torch.device("cuda"))
    run = tmp_path / "run"
    run.mkdir()
    lines = [
        {"cell_id": cells[0].cell_id, "status": "ok", "metric": "time_s", "value": 0.002,
         "sdpa_backend": "FLASH_ATTENTION"},
        {"cell_id": cells[1].cell_id, "status": "skipped", "metric": None, "value": None,
         "error": "SDPA backend EFFICIENT_ATTENTION unavailable"},
        {"cell_id": cells[2].cell_id, "status": "error", "metric": None, "value": None, "error": "RuntimeError: boom"},
    ]
    (run / "results.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (tmp_path / "steps.tsv").write_text("tests\t1\t30\t1 failed\ngpu_check\t124\t120\ttimed out after 120s\n")
    (tmp_path / "cuda-tests.xml").write_text(JUNIT)
    out = tmp_path / "reports"
    with mock.patch.object(gpu_check, "cuda_status", return_value=H200):
        status = gpu_check.main([str(tmp_path), str(out), "--suite", f"suites/gpu_check.yaml={run}"])
    assert status == 1
    text = (out / "gpu-check-nvidia-h200.md").read_text()
    assert "**FAIL**" in text and "NVIDIA H200" in text and "capability 9.0" in text
    assert "| test_cuda::test_c | failed | assert 0.3 <= 0.04 |" in text
    assert "| test_cuda::test_b | skipped | fla not installed |" in text
    assert "FLASH_ATTENTION | 2.000 |" in text
    assert "RuntimeError: boom" in text and "SDPA backend EFFICIENT_ATTENTION unavailable" in text
    assert "the `gpu_check` step stopped (exit 124): timed out after 120s" in text  # the cells it never reached
    assert "ok 1" in text and "error 1" in text and f"missing {len(cells) - 3}" in text


def test_report_path():
    assert gpu_check.report_path(Path("r/x.md"), H200) == Path("r/x.md")
    assert gpu_check.report_path(Path("reports"), H200) == Path("reports/gpu-check-nvidia-h200.md")
    assert gpu_check.report_path(Path("reports"), NO_GPU) == Path("reports/gpu-check-no-gpu.md")
