"""What an operator runs beside the fleet to watch it: the Prometheus exporter and the health probe."""
