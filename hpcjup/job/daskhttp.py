"""Loaded into every Dask process of a session as a preload: its HTTP server listens on no TCP port.

Shipped beside launcher.py, but unlike the other job files it runs only inside Dask's own processes
(scheduler and workers, through `distributed.scheduler.preload` / `distributed.worker.preload` in the
session's Dask config), which have `distributed` and tornado; it is imported before they start
their HTTP servers.

Why: Dask's HTTP server (the dashboard, /json/identity.json, /info pages with worker logs and call
stacks, /metrics) answers anyone who can open its TCP port, without authentication; a loopback bind
still lets every user of a shared node in, and workers listen on all interfaces by default. Here:
- the session's scheduler (the one process started with HPCJUP_DASK_HTTP_SOCKET in its environment)
  serves it on that Unix socket (0600, in the session's private 0700 directory), which Jupyter's
  authenticated proxy reaches (jupyter-server-proxy, `{base_url}dask-dashboard/`);
- every other Dask process of the session (workers, schedulers a notebook starts itself) serves
  nothing: the server object exists for Dask's bookkeeping but listens nowhere.
"""

from __future__ import annotations

import os

from distributed import node
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_unix_socket

ENV_SOCKET = "HPCJUP_DASK_HTTP_SOCKET"  # the launcher sets it for the session's scheduler only


def start_http_server(self, routes, dashboard_address, default_port=0, ssl_options=None):
    """distributed.node.ServerNode.start_http_server, listening on the session's socket or nowhere."""
    self.http_application = node.RoutingApplication(routes)
    self.http_server = HTTPServer(self.http_application)
    path = os.environ.pop(ENV_SOCKET, "")  # popped: no process this one starts takes the socket over
    if path:
        self.http_server.add_socket(bind_unix_socket(path, mode=0o600))
    # Dask reads these (links, the port it reports): no TCP port is open.
    self.http_server.address, self.http_server.port = "127.0.0.1", 0
    self.services["dashboard"] = self.http_server


node.ServerNode.start_http_server = start_http_server
