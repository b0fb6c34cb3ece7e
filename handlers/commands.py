"""PR comment commands (filled in with the rollout work)."""
