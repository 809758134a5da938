"""rootlets_task: RootletSeg spinal nerve rootlets segmentation, spinal levels, QC and batch runs (SCT-compatible)."""

from pathlib import Path

from setuptools import find_packages, setup

about = {}
exec(Path("src/rootlets_task/_version.py").read_text(), about)

setup(
    name="rootlets_task",
    version=about["__version__"],
    description="Segment spinal nerve rootlets (RootletSeg nnU-Net) and derive spinal and vertebral levels, "
    "SCT-compatible.",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    url=about["__url__"],
    project_urls={"Source": about["__url__"], "Issues": f"{about['__url__']}/issues"},
    license="MIT",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src", include=["rootlets_task", "rootlets_task.*"]),
    package_data={"rootlets_task": ["data/*"]},
    install_requires=[
        "nnunetv2>=2.6,<3",
        "torch>=2.1.2,!=2.9.*",
        "nibabel>=5.0",
        "numpy>=1.24",
        "scipy>=1.10",
        # measures.morphometry: SCT's angle correction (transform.warp) and shape (measure.regionprops), as SCT calls them
        "scikit-image>=0.19",
        "requests>=2.28",
        "tqdm>=4.60",
        "platformdirs>=3.0",
        "filelock>=3.10",
        "psutil>=5.9",
        "pandas>=2.0",
        "matplotlib>=3.7",
        "jinja2>=3.0",
        "dask[distributed]>=2024.1",
        # SCT's QC lock (a portalocker BoundedSemaphore): our entries in an SCT QC folder take the same one
        "portalocker>=2.0",
    ],
    extras_require={
        "slurm": ["dask-jobqueue>=0.8"],
        # CPU inference backend, about 2x faster per tile; used automatically when installed (rootlets_task.inference.backends)
        "openvino": ["openvino>=2024.0"],
        # opt-in int8 network (NNCF post-training quantisation of the OpenVINO model): Segmenter(precision="int8")
        "int8": ["openvino>=2026.4,<2026.5", "nncf>=3.4,<3.5"],
        # external disc-label tools of `rootlets -levels` (they download their own weights on first use)
        "totalspineseg": ["totalspineseg[nnunetv2]>=20250224"],
        "spineps": ["spineps>=1.3"],
        # the documentation site (`make docs`; mkdocs.yml)
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10"],
        # openvino: CI exercises the default CPU backend; nncf: the int8 path;
        # dask-jobqueue: the SLURM job script of `rootlets batch -slurm`; mkdocs: tests/test_docs.py builds the site;
        # import-linter and mypy: the layer contract (.importlinter) and the type check (mypy.ini) of `make test`
        "test": ["pytest>=7", "pytest-xdist>=3.5", "ruff>=0.5", "openvino>=2024.0", "nncf>=3.4,<3.5", "dask-jobqueue>=0.8",
                 "mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "import-linter>=2.17,<3", "mypy>=2.4,<3"],
    },
    entry_points={"console_scripts": ["rootlets=rootlets_task.cli.rootlets:main",
                                     "rootlets-bids=rootlets_task.cli.bids_app:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
