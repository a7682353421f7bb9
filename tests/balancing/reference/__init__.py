"""The gradient methods' solvers before issue 15 (test-only references)."""
