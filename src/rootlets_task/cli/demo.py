"""``rootlets demo``: the whole job, offline, on a phantom with the bundled release — to see what the tool does.

Writes a phantom subject, installs the bundled ``phantom`` release (no network), runs the chain (rootlets ->
spinal and vertebral levels, cord, discs and PMJ from the phantom's files) with a QC report, and compares the
segmentation with the phantom's truth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from rootlets_task.io.metrics import dice_per_level
from rootlets_task.io.phantom import SPINAL_LEVELS, write_phantom

DEMO_SUBJECT = "sub-phantom_T2w"


def run_demo(out_dir: str | os.PathLike = "demo_output", seed: int = 7, orient: str = "AIL",
             verbose: int = 1) -> dict[str, Path]:
    """Run the demo into ``out_dir``; returns {name: path} of everything a user would open."""
    from rootlets_task.core.options import ChainOptions, ModelOptions
    from rootlets_task.models.install import install_release
    from rootlets_task.pipeline.chain import ChainInputs, run_chain

    out_dir = Path(out_dir)
    data = write_phantom(out_dir / "data", orient=orient, spacing=(1.0, 1.0, 1.0), seed=seed, prefix=DEMO_SUBJECT)
    installed = install_release("phantom", progress=verbose > 0, make_active=False)  # the demo never changes it
    if verbose:
        print(installed.message())
    result = run_chain(data["image"], out_dir=out_dir / "derivatives",
                       inputs=ChainInputs(cord=data["cord"], discs=data["discs"], pmj=data["pmj"]),
                       options=ChainOptions(cord_from="file", discs_from="file", pmj_from="file"),
                       model=ModelOptions(release="phantom"), qc_dir=out_dir / "qc")
    prediction = result.arrays["rootlets"]
    truth = np.asarray(cast(nib.Nifti1Image, nib.load(data["rootlets"])).dataobj)
    scores = dice_per_level(prediction, truth, SPINAL_LEVELS)  # NaN: a level in neither map
    if verbose:
        print(result.table())
        print("Dice of the segmented rootlets against the phantom truth: "
              + ", ".join(f"{k}: {v:.2f}" for k, v in scores.items()) + f" (mean {np.nanmean(list(scores.values())):.2f})")
        print(f"Open the image with its rootlets and levels coloured: {result.view}")
    outputs = {"phantom": data["image"], "truth": data["truth"], **result.outputs}
    if result.qc_page is not None:
        outputs["qc"] = result.qc_page
    return outputs
