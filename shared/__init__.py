"""What crosses service boundaries: contracts, taxonomy and routing data, settings, logging."""
