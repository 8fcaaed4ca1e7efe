"""Print constraints.txt: the installed version of every distribution that ``coronet[dev]`` pulls in.

Run it in the virtual environment ``make setup`` made (``make constraints`` does): it walks the
requirements of the installed ``coronet`` distribution with all the extras ``dev`` names, follows
each dependency's own requirements (their markers evaluated for this machine), and pins what is
installed. Nothing else in the environment is listed, and coronet itself is not.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# Exact versions coronet is tested with (Python {python}, {platform}); `make` installs with
# `pip install -c constraints.txt`. pyproject.toml declares ranges, so coronet can also install
# beside another torch. Regenerate in a `make setup` environment with `make constraints`.
"""


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """``{distribution name: installed version}`` for everything ``root[extras]`` requires, recursively."""
    found: dict[str, str] = {}
    queue: list[tuple[str, set[str]]] = [(root, extras)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, wanted = queue.pop()
        key = (canonicalize_name(name), frozenset(wanted))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # a requirement for another platform or Python
        found[dist.metadata["Name"]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                queue.append((req.name, set(req.extras)))
    return found


def main() -> None:
    pins = closure("coronet", {"dev"})
    pins = {name: v for name, v in pins.items() if canonicalize_name(name) != "coronet"}
    print(HEADER.format(python=".".join(map(str, sys.version_info[:2])), platform=sys.platform), end="")
    for name in sorted(pins, key=canonicalize_name):
        print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    main()
