"""TEST-ONLY stand-in for the ``sc-crop`` package (a MOCK): the real detector needs ultralytics (torchvision) and
weights downloaded on first use, neither possible here. ``detect`` returns the box the test wrote into
``$FAKE_SC_CROP_BOX`` (JSON with xmin..zmax, inclusive voxel indices in the image's array order, as sc-crop returns)
and records the paddings it was given in ``$FAKE_SC_CROP_LOG``."""

import json
import os


def detect(img, **pads):
    with open(os.environ["FAKE_SC_CROP_LOG"], "a") as log:
        log.write(json.dumps({"shape": list(img.shape), **pads}) + "\n")
    with open(os.environ["FAKE_SC_CROP_BOX"]) as fh:
        return json.load(fh)
