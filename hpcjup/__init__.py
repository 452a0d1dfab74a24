"""hpcjup: Jupyter and Dask on an HPC cluster from your laptop."""

__version__ = "0.1.0"
