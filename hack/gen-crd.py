#!/usr/bin/env python3
"""Write crds/ from the pydantic models: `python hack/gen-crd.py` (or `--check` to fail when stale)."""

import sys
from pathlib import Path

from specdeploy.api.crd import crd_yaml

OUT = Path(__file__).resolve().parent.parent / "crds" / "specdeploy.io_speculativedeployments.yaml"

if __name__ == "__main__":
    text = crd_yaml()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT} is stale: run python hack/gen-crd.py")
    else:
        OUT.write_text(text)
        print(f"wrote {OUT}")
