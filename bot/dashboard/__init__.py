"""The operator dashboard: server-rendered pages of every rollout and recent deployment.

It is not part of the webhook edge (bot/web.py): the composition root (bot/wsgi.py) registers
its blueprint beside the edge, so the edge's import contract stays as strict as it was.

- `views`: pure, what a page shows of a rollout or a deployment (no Flask, no Redis);
- `svg`: pure, the geometry of the weight and metric charts drawn as inline SVG;
- `session`: the login token and the signed session cookie (no Flask);
- `reader`: reads the rollout records and deployment records from Redis (read only);
- `pages`: the Flask blueprint, its templates and static files, the security headers.
"""
