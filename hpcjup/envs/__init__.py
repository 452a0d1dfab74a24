"""Users' environments from their own Binder-style spec files, built once per host and reused.

`spec` reads a directory or file into an `EnvSpec` (repo2docker's rules for which file wins),
`identity` names what it builds, `script` is the POSIX sh that runs on the login node, `build`
drives it through one `Transport`, `uvbin` brings uv where the host has none, `catalog` lists and
removes built environments, and `server` is the built-in spec JupyterLab runs from.
"""
