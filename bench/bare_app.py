"""The webhook benchmark's reference: a Flask app that only reads the body and answers 202.

Served by gunicorn with exactly Coalmine's settings, it is the ceiling for any Flask webhook
receiver on this machine: what is left is HTTP, WSGI and Flask themselves.
"""

from __future__ import annotations

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask("bare")

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok"), 200

    @app.post("/webhooks/github")
    def github():
        request.get_data(cache=False)
        return jsonify(status="accepted"), 202

    return app
