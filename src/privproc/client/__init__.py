"""The device side: clients for the parties' services."""
