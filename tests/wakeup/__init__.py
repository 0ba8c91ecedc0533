"""How idle workers and waiting clients learn of new work and final statuses."""
