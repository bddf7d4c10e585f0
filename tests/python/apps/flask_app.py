"""A Flask app covering what Flask users do."""

import hashlib

from flask import Flask, Response, abort, jsonify, redirect, request, stream_with_context, url_for

app = Flask(__name__)


@app.get("/json")
def json_view():
    return jsonify(message="hello", items=[1, 2, 3])


@app.post("/form")
def form():
    return jsonify(name=request.form["name"], tags=request.form.getlist("tag"))


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(filename=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   note=request.form.get("note"))


@app.get("/stream")
def stream():
    def gen():
        for i in range(5):
            yield f"part {i}\n"

    return Response(stream_with_context(gen()), mimetype="text/plain")


@app.get("/old")
def old():
    return redirect(url_for("json_view"))


@app.get("/where")
def where():
    # What a mount under a URL prefix must get right: links the app makes.
    return jsonify(json_url=url_for("json_view"), external=url_for("json_view", _external=True),
                   script_root=request.script_root, path=request.path)


@app.get("/boom")
def boom():
    raise RuntimeError("flask view failed")


@app.get("/teapot")
def teapot():
    abort(418)
