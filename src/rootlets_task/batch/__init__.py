"""A BIDS dataset: discovery, one image as a unit of work, the engines (local, Dask, SLURM, job arrays), the speed
levers of a batch and its tables.

May import :mod:`rootlets_task.pipeline` and every layer below it.
"""
