import json
import os

from django.db import connection
from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_exempt


def json_view(request):
    return JsonResponse({"path": request.path, "method": request.method, "q": request.GET.get("q")})


@csrf_exempt
def post_view(request):
    with connection.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)")
        cur.execute("INSERT INTO notes (text) VALUES (%s)", [request.POST["text"]])
        cur.execute("SELECT COUNT(*) FROM notes WHERE text = %s", [request.POST["text"]])
        count = cur.fetchone()[0]
    return JsonResponse({"stored": request.POST["text"], "count": count}, status=201)


def stream_view(request):
    return StreamingHttpResponse((f"row {i}\n".encode() for i in range(10)), content_type="text/plain")


def file_view(request):
    return FileResponse(open(os.environ["DJSITE_FILE"], "rb"), content_type="application/octet-stream")


def body_view(request):
    return HttpResponse(json.dumps({"len": len(request.body)}), content_type="application/json")


def secure_view(request):
    return JsonResponse({"secure": request.is_secure(), "url": request.build_absolute_uri("/x/")})


def where_view(request):
    # What a mount under a URL prefix must get right: links the app makes.
    return JsonResponse({"json_url": reverse("json"), "external": request.build_absolute_uri(reverse("json")),
                         "script_name": request.META["SCRIPT_NAME"], "path_info": request.path_info,
                         "path": request.path})


urlpatterns = [
    path("where/", where_view),
    path("secure/", secure_view),
    path("json/", json_view, name="json"),
    path("post/", post_view),
    path("stream/", stream_view),
    path("file/", file_view),
    path("body/", csrf_exempt(body_view)),
]
