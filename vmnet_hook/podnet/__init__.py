"""The pod side of ``network="masquerade"``: the guest's own link into the pod, its /30,
a DHCP server and NAT in the pod's namespace. ``plan`` is pure; ``kernel`` makes and
removes what a plan describes, from the record in state."""
