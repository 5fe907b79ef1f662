"""Tooling, not the hook: throwaway pods for the demo, the tests and the benches."""
