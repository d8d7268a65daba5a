"""Network intrusion detection: bastion's own traffic generator and flow features, loaders for the public IDS data
sets, detectors, constraint-respecting attacks and their evaluation (see docs/IDS.md)."""
