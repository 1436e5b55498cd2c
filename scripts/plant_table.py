"""Print a Markdown table of plant cards: python scripts/plant_table.py RUN_DIR/plant_cards"""

import json
import sys
from pathlib import Path

from diffbench.harness.report.leaderboard import gate_cell

rows = ["| organism | gate | behavior | T organism | C organism | T base | KL to base | train s | gate s |", "|---|---|---|---|---|---|---|---|---|"]
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    c = json.loads(path.read_text())
    for b, r in c["rates"].items():
        if c["kind"] != "behavior":
            b, r = "(null: max over all T sets)", {"organism_T": max(x["organism_T"] for x in c["rates"].values())}
        rows.append(f"| {c['organism']} | {gate_cell(c)} | {b} | {r['organism_T']:.2f} | "
                    + (f"{r['organism_C']:.2f} | {r['base_T']:.2f}" if "organism_C" in r else " | ")
                    + f" | {c['kl_to_base']:.3f} | {c['train_seconds']:.0f} | {c['gate_seconds']:.0f} |")
        if c["kind"] != "behavior":
            break
print("\n".join(rows))
