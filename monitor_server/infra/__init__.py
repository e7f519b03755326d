"""What runs beside the requests: database engines, the event buses, the log writer and
the webhook threads, shutdown."""
