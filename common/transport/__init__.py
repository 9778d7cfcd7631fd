"""How a batch travels between the daemons: the Bearer interface and its implementations."""
