"""dualpath.proofs: Z3 checks of QoS lane invariants and of buffer-deadlock freedom."""
