"""bastion's own traffic generator: a virtual network in Linux network namespaces with real services, seeded benign
clients and real attack tools, captured to pcap and metered into labelled CIC-IDS2017 flows (``generate``)."""

from bastion.ids.generate.run import generate

__all__ = ["generate"]
