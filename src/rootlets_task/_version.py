__version__ = "0.1.0"
# The package's home page (its public source): setup.py's url and the CodeURL of every sidecar (provenance.code_url).
__url__ = "https://github.com/ivadomed/rootlets_task"
