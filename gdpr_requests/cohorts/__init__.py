"""Requests from inside the product: Mixpanel cohort syncs taken in as deletion or access requests (issue 16).

messages (the body's shape), services (intakes, credentials, receiving), views/urls (the webhook), tasks
(auto-approval), admin (the intake pages). docs/cohorts.md holds Mixpanel's side.
"""
