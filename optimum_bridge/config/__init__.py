"""Configuration: the accounts file, the Optimum environments, and the checks made at start."""
