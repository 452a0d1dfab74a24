"""Run code in a Jupyter kernel through the tunnel: REST to start it, the websocket to execute."""

from __future__ import annotations

import json
import urllib.request
import uuid

import websocket


def run_in_kernel(base: str, token: str, code: str, timeout: float = 60, name: str | None = None) -> str:
    """Start a kernel (the default, or kernel `name`), execute `code`, return what it printed on stdout; the kernel
    is shut down after."""
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    body = json.dumps({"name": name} if name else {}).encode()
    request = urllib.request.Request(f"{base}/api/kernels", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        kernel_id = json.loads(response.read())["id"]
    try:
        ws_url = base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
        ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=timeout)
        try:
            msg_id = uuid.uuid4().hex
            ws.send(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "username": "test",
                            "session": uuid.uuid4().hex,
                            "msg_type": "execute_request",
                            "version": "5.3",
                        },
                        "parent_header": {},
                        "metadata": {},
                        "channel": "shell",
                        "content": {
                            "code": code,
                            "silent": False,
                            "store_history": False,
                            "user_expressions": {},
                            "allow_stdin": False,
                        },
                    }
                )
            )
            out = []
            while True:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream" and msg["content"]["name"] == "stdout":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    raise AssertionError("kernel error: " + "\n".join(msg["content"]["traceback"]))
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
        finally:
            ws.close()
    finally:
        delete = urllib.request.Request(f"{base}/api/kernels/{kernel_id}", headers=headers, method="DELETE")
        urllib.request.urlopen(delete, timeout=timeout).close()
