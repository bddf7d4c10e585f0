import json


def application(environ, start_response):
    body = json.dumps({"message": "Hello, World!", "id": 42, "tags": ["a", "b", "c"], "ok": True}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
