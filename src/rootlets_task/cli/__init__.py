"""The ``rootlets`` command: argument parsing only (:mod:`.rootlets`), its generated reference, the demo, clean-up
and SCT's profiling flags.

May import every other layer; nothing imports it.
"""
