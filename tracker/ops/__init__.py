"""Operations: alerts, health checks, metrics, structured logs and data retention."""
