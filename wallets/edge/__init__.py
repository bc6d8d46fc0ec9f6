"""The edge agent: a site that keeps its own key, at the site, working with or without the network.

`partledger edge run` wires the pieces: queue (the local SQLite queue of signed ForwardRequests and the site's own
view of its parts), agent (signing with the site key, the view and nonce syncs, the relay loop towards the cloud's
POST /v1/relay) and local_api (the HTTP API the site's scanners and pages call). The package talks to the cloud only
over HTTP and to the chain only over JSON-RPC reads: it imports no stage downstream of wallets.
"""
