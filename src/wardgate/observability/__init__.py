"""What wardgate tells its operators about itself: Prometheus metrics (`metrics`) and, as an
optional install, OpenTelemetry traces (`tracing`).

Imports nothing of wardgate but `wardgate.errors`, so that every layer may report to it;
`opentelemetry` is imported only when traces are switched on.
"""
