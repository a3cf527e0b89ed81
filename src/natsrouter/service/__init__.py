"""The Router service: decide intake, assignments, consumers of acks and results."""
