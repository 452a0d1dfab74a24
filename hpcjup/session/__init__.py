"""Sessions: a job running JupyterLab, its directory on the cluster, and the laptop's view of it."""
