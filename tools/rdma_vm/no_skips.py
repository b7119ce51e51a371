"""Fail when a JUnit XML report holds a skipped test, or no test at all (`python no_skips.py REPORT`).

Inside the guest the RDMA devices exist, so a verbs test that skipped did not test what it claims to:
`make test-rdma` treats any skip there as a failure, and says which tests skipped and why.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def main(path: str) -> int:
    cases = list(ET.parse(path).getroot().iter("testcase"))
    skipped = [(f"{case.get('classname')}::{case.get('name')}", skip.get("message", ""))
               for case in cases for skip in case.findall("skipped")]
    for name, why in skipped:
        print(f"rdma-vm: skipped inside the guest (a failure here): {name}: {why}")
    if not cases:
        print(f"rdma-vm: {path} lists no test")
    return 1 if skipped or not cases else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
