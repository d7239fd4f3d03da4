"""Identity resolution: find a request's subject in Mixpanel by email (docs/identity.md).

- services: queue lookups, a project's Query API access, staff's accept/reject, the approval blocker;
- resolution: coalesce waiting emails into profile queries under the shared query limiter, record candidates;
- query_limiter: 60 queries per rolling hour and 5 at once per project, across workers and hosts;
- hooks (connected in apps.py), tasks (pinned names), alerts, admin (the request page's candidates).

The HTTP client is gdpr_requests/mixpanel/query_client.py (transport only).
"""
