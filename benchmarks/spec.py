"""The suite's experiment spec: properties/experiment/ml1m_clean_suite.yaml, each section's
own yaml, and the trims of --quick."""

from __future__ import annotations

from typing import Any, Dict, Mapping

import yaml

from .runner import ROOT

SPEC = ROOT / "properties" / "experiment" / "ml1m_clean_suite.yaml"


def load_spec(quick: bool, sections: Mapping[str, Any]) -> Dict[str, Any]:
    """The spec with every section's ``spec_file`` under its name; with ``quick``, two
    seeds and each section's ``quick`` trim."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["quick"] = quick
    for name, section in sections.items():
        if section.spec_file is not None:
            spec[name] = yaml.safe_load(section.spec_file.read_text())
    if quick:
        spec["seeds"] = spec["seeds"][:2]
        for section in sections.values():
            if section.quick is not None:
                section.quick(spec)
    return spec
