"""Shared fixtures. The README's sample is the canonical spec; cluster fixtures live in tests/integration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PATH = ROOT / "manifests" / "samples" / "llama-8b.yaml"
SAMPLE: dict[str, Any] = yaml.safe_load(SAMPLE_PATH.read_text())
# Every shipped sample (manifests/samples is also a kustomization of them).
SAMPLES = sorted(p for p in (ROOT / "manifests" / "samples").glob("*.yaml") if p.name != "kustomization.yaml")
