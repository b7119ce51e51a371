"""dualpath.solver: scheduling policies, the plan optimizer and its lower bounds."""
