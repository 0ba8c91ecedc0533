"""The orchestrator's guarantees: registration, claims, transitions, outcomes, reroutes, the
atomic-service gate, statement budgets; real processes racing on the real database."""
