"""Print the localize overrides that ``choose.py`` chose for a classifier.

    python experiments/recipe/settings.py CHOICE.json LEVEL ROW [FORMULA] [--prefix localize.]

FORMULA defaults to the one chosen for ROW at LEVEL. Prints
``localize.formula=... localize.fg_threshold=... localize.saliency_threshold=...``
(``bg_threshold`` at a level without saliency) with each key behind ``--prefix``
(``localize.`` for ``ficklenet-localize``, ``localize.localize.`` for the pipeline).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ficklenet.localization.tuning import overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("choice", type=Path)
    parser.add_argument("level")
    parser.add_argument("row")
    parser.add_argument("formula", nargs="?")
    parser.add_argument("--prefix", default="localize.")
    args = parser.parse_args()
    try:
        chosen = overrides(json.loads(args.choice.read_text()), args.level, args.row, args.formula)
    except KeyError as err:
        raise SystemExit(f"{args.choice}: {err.args[0]}") from None
    print(" ".join(f"{args.prefix}{k}={v}" for k, v in chosen.items()))


if __name__ == "__main__":
    main()
