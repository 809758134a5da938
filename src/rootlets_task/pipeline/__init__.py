"""Whole jobs on one image, files in and files out: segmentation with SCT's outputs (:mod:`.segment`), image to
levels (:mod:`.chain`) and the check of the speed levers (:mod:`.speedcheck`).

May import :mod:`rootlets_task.qc` and every layer below it.
"""
