"""Webhooks out: signed notifications of request events to the product's own systems.

- signing: Standard Webhooks signatures (``whsec_`` secrets, ``v1,<base64 HMAC-SHA256>``);
- addresses: the server-side request forgery rules, applied when a URL is saved and again at connect time;
- transport: one HTTP POST to a checked address, short timeout, no redirects, one error type;
- services: endpoints (add, disable, rotate secret), the outbox (one delivery row per endpoint and event),
  attempts with backoff, the sweeps; hooks: the request services' hooks (connected in apps.py);
- tasks: the Celery tasks (pinned names); admin: endpoints, deliveries and their attempts, "send again".
"""
