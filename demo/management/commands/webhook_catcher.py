import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "A local stand-in for a chat webhook (the demo's alert receiver): prints the text of each"
        " JSON message POSTed to it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8002, help="port on 127.0.0.1")

    def handle(self, *args, port: int, **options) -> None:
        out = self.stdout

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 1_000_000)
                try:
                    text = json.loads(self.rfile.read(length)).get("text", "")
                except (ValueError, AttributeError):
                    text = "(not a JSON object)"
                out.write(f"webhook {self.path}: {text}")
                out.flush()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.stdout.write(f"Webhook catcher on http://127.0.0.1:{port}/")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
