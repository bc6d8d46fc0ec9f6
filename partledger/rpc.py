"""HTTP sessions for JSON-RPC to the node, shared by every stage (light: requests only, no web3)."""

from __future__ import annotations

import requests
import requests.adapters
import requests.utils

RPC_POOL = 32  # connections a JSON-RPC session keeps to its node: the API's threads share one


def rpc_session(rpc_url: str) -> requests.Session:
    """An HTTP session for JSON-RPC to `rpc_url` that reads the environment's settings for it (proxies, CA bundle,
    .netrc) once, here. requests otherwise reads them for every request: it scans os.environ for proxy variables each
    time, 0.2-0.4 ms of CPU a JSON-RPC call on these machines (with 35 variables), more than Anvil takes to answer a
    small call, in every process that talks to the node. Safe to share between threads."""
    session = requests.Session()
    settings = session.merge_environment_settings(rpc_url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.auth = requests.utils.get_netrc_auth(rpc_url)
    session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=RPC_POOL)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
