"""Start an embedded Ray for a local run, or join an existing cluster.

Embedded (no address): Ray is told to stay on loopback. It picks the host's
non-loopback address by default; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set
before Ray starts, is its local-only switch and binds every listener to
127.0.0.1 (checked with `ss -ltnp`, and by a test). The CPU count given to the
embedded Ray is at least what the topology's actors ask for, so a 2-core
machine can host a pool and a replica side by side.

An embedded Ray gets a guard process (testbed/run/ray_guard.py) that ends Ray's processes if the driver
is killed with SIGKILL; a normal exit, Ctrl-C or SIGTERM shut Ray down here as before.

With an address (`auto` or HOST:PORT), the run joins that cluster and Ray's
own scheduling places the actors; nothing distributed is hand-made here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def ray_session(address: str | None, num_cpus: float, num_gpus: float,
                resources: dict[str, float] | None = None) -> Iterator[dict[str, Any]]:
    """Embedded Ray sized for the topology (custom resources included, so a topology written for
    a cluster runs locally unchanged), or a connection to an existing cluster."""
    if address is None:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Ray starts its workers at nice 15 (worker_niceness), below every ordinary process on the host; the
        # pools' timers and the replicas' ingress are the emulation's clock, so they run at the normal priority.
        os.environ.setdefault("RAY_worker_niceness", "0")
    import ray  # ray: only the driver and the actors start it

    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING",
                              "log_to_driver": True, "configure_logging": True}
    if address is None:
        kwargs.update(num_cpus=max(int(-(-num_cpus // 1)), os.cpu_count() or 1),
                      num_gpus=int(-(-num_gpus // 1)) or None)
        # "local": always a new instance; with no address, ray.init would join a `ray start` cluster that
        # happens to run on this host (seen on a shared machine: the run then reported that cluster's node IP)
        kwargs.update(address="local", _node_ip_address="127.0.0.1", resources=dict(resources or {}))
    else:
        kwargs["address"] = address
    started_here = not ray.is_initialized()
    previous = signal.getsignal(signal.SIGTERM)
    ctx = _init(ray, kwargs, address) if started_here else None
    guard = _start_guard() if started_here and address is None else None
    if threading.current_thread() is threading.main_thread() and previous is not None:
        # ray.init installs its own SIGTERM handler (exit 1, nothing flushed); keep the caller's,
        # which turns SIGTERM into KeyboardInterrupt so the run ends as an interrupted one.
        signal.signal(signal.SIGTERM, previous)
    try:
        yield {"mode": "embedded" if address is None else "cluster",
               "address": getattr(ctx, "address_info", {}).get("gcs_address") if ctx is not None else None,
               "node_ip": ray.util.get_node_ip_address(),
               "ray_version": ray.__version__,
               "auth_mode": auth_mode(),
               "cluster_resources": ray.cluster_resources(),
               "nodes": {n["NodeID"]: {"ip": n["NodeManagerAddress"], "resources": n["Resources"]}
                         for n in ray.nodes() if n.get("Alive")}}
    finally:
        if started_here:
            ray.shutdown()
        if guard is not None:
            guard.terminate()
            guard.wait()


def _start_guard() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("ray_guard.py")), str(os.getpid())],
                            stdin=subprocess.DEVNULL, start_new_session=True)


TOKEN_HINT = ("token authentication: give this driver the cluster's token, as every node has it: "
              "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=FILE (or RAY_AUTH_TOKEN=..., or the file ~/.ray/auth_token; "
              "`ray get-auth-token` on the head prints it); a cluster started with RAY_AUTH_MODE=disabled needs "
              "RAY_AUTH_MODE=disabled here too (README, 'Running on a cluster')")


AUTH_WORDS = ("InvalidAuthToken", "Unauthenticated")  # in the GCS error text of a refused token


class ClusterAuthError(Exception):
    """The cluster at the address refused this driver's credentials; the message says how to provide them."""


def _init(ray: Any, kwargs: dict[str, Any], address: str | None) -> Any:
    try:
        return ray.init(**kwargs)
    except Exception as e:
        if address is not None and _refused_for_auth(e):
            raise ClusterAuthError(f"the Ray cluster at {address} refused the connection "
                                   f"(Authentication token is missing or incorrect). It uses {TOKEN_HINT}") from None
        raise


def _refused_for_auth(error: BaseException) -> bool:
    """ray.init wraps the refusal (AuthenticationError, or a GCS error saying InvalidAuthToken) in a
    ConnectionError; look through the chain."""
    from ray.exceptions import AuthenticationError  # ray: only the driver and the actors start it

    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, AuthenticationError) or any(w in str(seen) for w in AUTH_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def auth_mode() -> str | None:
    """This process's Ray authentication mode ("token" or "disabled"), the cluster's when it joined one."""
    try:
        from ray._private.authentication.authentication_utils import (  # ray: only the driver and actors start it
            get_authentication_mode_name,
        )
        from ray._raylet import get_authentication_mode  # type: ignore[attr-defined]

        return str(get_authentication_mode_name(get_authentication_mode()))
    except ImportError:  # a Ray without token authentication
        return None
