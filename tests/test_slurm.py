"""The test cluster itself (tests/support/slurm.py): real sbatch jobs and a job array run to completion."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slurm


def test_sbatch_wrap_and_array_finish(slurm, tmp_path):
    job = slurm.sbatch(f"--output={tmp_path}/wrap-%j.out", "--wrap", "echo ran on $(hostname -s) in $SLURM_JOB_ID")
    array = slurm.sbatch("--array=0-2", f"--output={tmp_path}/array-%A_%a.out", "--wrap",
                         "echo task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT")
    assert slurm.wait_final(job, 60) == {job: "COMPLETED"}
    assert slurm.wait_final(array, 60) == {f"{array}_{i}": "COMPLETED" for i in range(3)}
    assert (tmp_path / f"wrap-{job}.out").read_text() == f"ran on {slurm.node} in {job}\n"
    for i in range(3):
        assert (tmp_path / f"array-{array}_{i}.out").read_text() == f"task {i} of 3\n"
