"""Run the PAM50 step (`-template`) with a real SCT on SCT's t2 test image (outside CI).

    python benchmarks/pam50_real_sct.py [-data SCT_TESTING_DATA/t2] [-o OUT]

Needs SCT >= 7.0 installed with its registration binaries (isct_antsRegistration, isct_ComposeMultiTransform) and
the PAM50 data (``$SCT_DIR/data/PAM50``). It runs the chain from SCT's manual cord and rootlets of t2 (no model, no
disc or PMJ tool) with ``-template -measure`` and prints the PAM50 levels beside the rootlets' levels. Where the
binaries are missing it says which and exits with status 2 without running anything.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

BINARIES = ("sct_register_to_template", "isct_antsRegistration", "isct_ComposeMultiTransform")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-data", default="/work/shared/data/sct_testing_data/t2", help="folder of SCT's t2 test files")
    parser.add_argument("-o", default="pam50_real_sct", help="output folder")
    args = parser.parse_args()
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        print(f"not run: {', '.join(missing)} not found on PATH (SCT's registration needs its binaries; install SCT "
              "with them: https://spinalcordtoolbox.com)", file=sys.stderr)
        return 2
    from rootlets_task.core.options import ChainOptions
    from rootlets_task.pipeline.chain import ChainInputs, run_chain

    data = Path(args.data)
    inputs = ChainInputs(cord=data / "t2_seg-manual.nii.gz", rootlets=data / "t2_seg-deepseg_rootlets-manual.nii.gz")
    result = run_chain(data / "t2.nii.gz", args.o, inputs,
                       ChainOptions(discs_from="none", pmj_from="none", template=True, measure=()))
    print("template step:", result.steps.get("template"))
    for text in result.notes:
        print("note:", text)
    if "levels_pam50" in result.outputs:
        import pandas as pd

        print(pd.read_csv(result.outputs["levels_pam50"]).to_string(index=False))
    return 0 if result.steps.get("template") in ("computed", "up to date") else 1


if __name__ == "__main__":
    sys.exit(main())
