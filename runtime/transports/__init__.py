"""dualpath.runtime.transports: moving bytes between engines, and the control channel.

One `Transport` interface with TCP and verbs (pyverbs, RDMA) backends, NIC rate limiters, the cluster-secret
handshake and authenticated control messages. Imports the core only.
"""
