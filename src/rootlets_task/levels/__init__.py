"""From label images to levels: the cord centerline, spinal and vertebral levels and their shift, the numbering
check, the lab's group statistics and the external tools that make cord, disc and PMJ labels.

May import :mod:`rootlets_task.inference` and every layer below it.
"""
