"""What an operator watches: the Prometheus exporter (``exporter.py``, `soniquebay exporter`)."""
