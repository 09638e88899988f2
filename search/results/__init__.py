"""What users do with a finished study: export models, compare runtimes, write reports."""
