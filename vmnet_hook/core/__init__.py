"""The pure core: the annotation, the rewrite, the binding plan, the policy. No system access;
seams are passed in."""
