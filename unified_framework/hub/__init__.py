"""JupyterHub integration: SLURM spawner, its options form, the single-user launcher
and the jupyter-server-proxy entries of the dashboard apps.

The hub itself is configured by ``hub_config/jupyterhub_config.py`` and started by
``scripts/hub``; see ``docs/hub.md``.
"""
