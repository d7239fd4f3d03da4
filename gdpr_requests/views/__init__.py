"""Views, one module per face: portal (the public), reports (auditors), ops (health, metrics)."""
