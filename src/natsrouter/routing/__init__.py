"""Routing decisions: policies per tenant and the per-provider circuit breaker."""
