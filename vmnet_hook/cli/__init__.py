"""The `vmnet-hook` command."""
