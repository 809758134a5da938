"""Model releases: the registry, bounded downloads and safe archives, the checkpoint scan, our install store and
the bridge into SCT's model folder.

May import :mod:`rootlets_task.io` and :mod:`rootlets_task.core`.
"""
