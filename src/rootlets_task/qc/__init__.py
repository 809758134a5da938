"""Quality control: display geometry, figures, the QC pages and index, and entries in SCT's shared QC report.

May import :mod:`rootlets_task.levels` and every layer below it.
"""
