import bottle

app = bottle.Bottle()


@app.get("/hello/<name>")
def hello(name):
    return {"hello": name}


@app.post("/echo")
def echo():
    return bottle.request.body.read()


@app.get("/missing")
def missing():
    bottle.abort(404, "nothing here")
