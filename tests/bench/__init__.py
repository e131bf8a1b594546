"""The benchmark: the services end to end against a raw-Kafka baseline (`python -m tests.bench`)."""
