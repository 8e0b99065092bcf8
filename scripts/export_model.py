"""Export a run's EMA generator as the model bundled in the package.

    python scripts/export_model.py RUN --data "UTKFace aligned, 23,707 faces" \
        --command "facegan demo --data ../shared/data/utkface-200 --minutes 30"

writes src/facegan/pretrained/faces64.safetensors (half precision) and faces64.json
(the model card: data, command, steps, images seen, training time, configuration).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from facegan.pretrained import DEFAULT_MODEL, export_generator

PRETRAINED = Path(__file__).resolve().parents[1] / "src" / "facegan" / "pretrained"


def main() -> None:
    parser = argparse.ArgumentParser(description="Export a run's EMA generator into the package.")
    parser.add_argument("run", type=Path, help="run folder with checkpoint.pt")
    parser.add_argument("--name", default=DEFAULT_MODEL, help="model name (default faces64)")
    parser.add_argument("--data", required=True, help="what the model was trained on")
    parser.add_argument("--command", required=True, help="the command that trained it")
    parser.add_argument("--machine", default="", help="where it was trained")
    parser.add_argument("--metrics", default="{}", help="JSON object of evaluation results")
    args = parser.parse_args()
    card = {
        "data": args.data,
        "command": args.command,
        "machine": args.machine,
        "exported": datetime.date.today().isoformat(),
        "metrics": json.loads(args.metrics),
        "licence_note": "trained on data released for non-commercial research use only",
    }
    path = export_generator(args.run, PRETRAINED, args.name, card)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
