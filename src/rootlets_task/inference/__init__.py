"""The network: the nnU-Net stages (:mod:`.segmenter`), the PyTorch/OpenVINO backends and precisions, crop boxes,
SCT's post-processing flags and the per-level confidence.

May import :mod:`rootlets_task.models`, :mod:`rootlets_task.io`, :mod:`rootlets_task.core`.
"""
