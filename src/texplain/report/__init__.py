"""Human-facing outputs of an explanation: word clouds and reports."""
