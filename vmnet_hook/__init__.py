"""vmnet-hook: connect a libvirt domain's macvtap to the NIC of its Kubernetes pod."""

__version__ = "0.1.0"

NAMESPACE_URI = "urn:vmnet-hook:1"
