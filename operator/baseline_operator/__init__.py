"""baseline-operator: keeps every selected Kubernetes namespace at its declared SecurityBaseline."""

__version__ = "0.1.0"
