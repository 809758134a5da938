"""Images and files on disk: validated NIfTI loading and saving, label kinds, tables, resume records, sidecars
(provenance), viewer lookup tables, the synthetic phantom and its scores.

May import :mod:`rootlets_task.core`.
"""
