"""The ground floor: errors, atomic files, logging set-up, the option objects, level names and colours, URLs.

Imports nothing from the package but :mod:`rootlets_task._version`.
"""
