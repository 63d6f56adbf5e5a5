"""Physical export: the surgery that removes what the gates closed, its result and its report."""
