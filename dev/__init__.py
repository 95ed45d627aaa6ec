"""What only a developer's laptop runs: the mail and webhook catcher, and `make run`."""
