"""Reads pytest's JUnit XML for the bench's `suite` section.

usage: junit.py FILE LABEL SECONDS EXTRA   prints one table row
       junit.py --diff DIRECT PROXIED      lists the tests that passed direct and not proxied
"""
import sys
import xml.etree.ElementTree as ET


def outcomes(path):
    result = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
        result[name] = kinds[0] if kinds else "passed"
    return result


if sys.argv[1] == "--diff":
    direct, proxied = outcomes(sys.argv[2]), outcomes(sys.argv[3])
    worse = sorted(t for t, o in direct.items() if o == "passed" and proxied.get(t, "missing") != "passed")
    better = sorted(t for t, o in proxied.items() if o == "passed" and direct.get(t, "missing") != "passed")
    print(f"passed direct, not through the proxy: {len(worse)}" + "".join(f"\n  {t} ({proxied.get(t, 'missing')})" for t in worse))
    print(f"passed through the proxy, not direct: {len(better)}" + "".join(f"\n  {t} ({direct.get(t, 'missing')})" for t in better))
else:
    path, label, seconds, extra = sys.argv[1:5]
    o = list(outcomes(path).values())
    c = {k: o.count(k) for k in ("passed", "failure", "error", "skipped")}
    print(f"| {label:<28} | {len(o):5d} | {c['passed']:6d} | {c['failure']:6d} | {c['error']:6d} | {c['skipped']:7d} | {int(seconds):7d} | {extra:<31} |")
