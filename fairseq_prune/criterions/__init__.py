"""fairseq criteria: CTC with the hard-concrete budget (Lagrangian), budgets as objects, and distillation."""
