"""dualpath.solver: scheduling policies, the plan optimizer and its lower bounds."""

from dualpath.compiled import use_compiled

use_compiled(__name__, __path__)
