"""The REST API for the product's own systems (Django REST framework), mounted at /api/.

- keys: API key services (create shows the key once, only its SHA-256 is kept; revoke; authenticate);
- authentication, permissions, throttling: Bearer keys, scopes per view, a rate limit per key;
- errors: every error as RFC 9457 problem details naming the field;
- idempotency: Idempotency-Key replays; serializers, views, urls: the endpoints; admin: keys in the admin.

The API is a face: every write goes through gdpr_requests.requests.services, audited as the key.
"""
