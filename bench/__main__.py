"""``python -m bench [NAME ...]``: run the benchmark module ``bench/NAME.py`` (each has ``main(argv)``).

With no name, every benchmark module runs in turn.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nbenchmarks: " + ", ".join(names))
        return 0
    if argv and argv[0] not in names:
        print(f"unknown benchmark {argv[0]!r}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    if argv:
        return int(importlib.import_module(f"bench.{argv[0]}").main(argv[1:]) or 0)
    rc = 0
    for name in names:
        print(f"== {name}")
        rc |= int(importlib.import_module(f"bench.{name}").main([]) or 0)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
