"""Readers of the IDS data formats bastion loads (``bastion.ids.loaders.load_flows`` picks one)."""
