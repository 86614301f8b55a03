"""Measure the toy's saliency levels against the object pixels: max F-β and MAE.

    python experiments/saliency/measure.py --out experiments/saliency [--root-prefix data/toy-sal]

Writes one toy dataset per level of :data:`ficklenet.data.toy_saliency.SALIENCY_LEVELS`
(``ficklenet-make-toy toy.saliency=<level>``: the images are the same at every
level), reads its ``Saliency/`` maps back through the VOC reader, and scores them
with :class:`ficklenet.metrics.SaliencyScore` on each split. ``results.md`` and
``results.json`` go to ``--out``; ``docs/method.md`` reads them. Other generator
settings (``--size``, ``--seed``) check that the levels do not depend on the 96-pixel
toy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ficklenet.data.toy import write_toy_voc
from ficklenet.data.toy_saliency import SALIENCY_LEVELS
from ficklenet.data.voc import VOCReader
from ficklenet.metrics import SALIENCY_BETA2, SaliencyScore


def measure(root: Path, split: str) -> dict[str, float]:
    reader = VOCReader(root, split, saliency_dir="Saliency")
    score = SaliencyScore()
    for image_id in reader.ids:
        score.update(reader.saliency(image_id), reader.mask(image_id))
    return score.result()._asdict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results.md / results.json here")
    parser.add_argument("--root-prefix", default="data/toy-sal", help="toy roots: <prefix>-<level>")
    parser.add_argument("--seed", type=int, default=0, help="toy generator seed")
    parser.add_argument("--size", type=int, default=96, help="toy image side")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    args = parser.parse_args()
    rows = []
    for level in SALIENCY_LEVELS.values():
        if not level.writes_maps:
            continue
        root = Path(f"{args.root_prefix}-{level.name}")
        write_toy_voc(root, seed=args.seed, size=args.size, saliency=level.name)
        for split in args.splits:
            rows.append({"level": level.name.value, "split": split, **measure(root, split)})
            r = rows[-1]
            print(f"{r['level']:>10} {split:>6}: max F-beta {r['max_f_beta']:.3f}", end="")
            print(f", MAE {r['mae']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {"seed": args.seed, "size": args.size, "beta2": SALIENCY_BETA2}
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        f"# The toy's saliency levels (generator seed {args.seed}, {args.size} px)",
        "",
        "Against the object pixels (void left out); β² = 0.3. Command: "
        f"`python experiments/saliency/measure.py --out {args.out} --seed {args.seed} "
        f"--size {args.size}`.",
        "",
        "| level | split | images | max F-β | at threshold | MAE |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['level']} | {r['split']} | {r['images']} | {r['max_f_beta']:.3f} | "
            f"{r['threshold']:.2f} | {r['mae']:.3f} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
