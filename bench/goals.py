"""Every goal of the last `make bench`, met or missed, gathered from bench/results/*.json.

Run: python -m bench.goals
"""
from __future__ import annotations

import json

from bench.common import RESULTS

ORDER = ("dispatch", "scale_out", "import", "scale", "makespan", "idle", "download")


def main() -> None:
    print("\n### Goals\n")
    for name in ORDER:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            print(f"- {name}: not run")
            continue
        result = json.loads(path.read_text())
        for note in result.get("notes", []):
            for line in note.splitlines():
                if line.startswith(("Goal", "Scale-out")):
                    print(f"- {name} ({result['when']}): {line}")


if __name__ == "__main__":
    main()
