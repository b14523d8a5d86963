"""A stand-in OpenAI server for the command engine's tests (stdlib only): it takes its port from
the ECHO_PORT environment variable, has no /health (only /v1/models), serves one model name, and
answers a chat completion with the request body it received, as JSON, for the test to read."""

from __future__ import annotations

import http.server
import json
import os
import sys


def main() -> None:
    host, served = sys.argv[1], sys.argv[2]
    port = int(os.environ["ECHO_PORT"])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": served, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": f"no {self.path}"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body.get("model") != served:  # as vLLM and SGLang do
                self._json(
                    404, {"error": {"message": f"The model {body.get('model')} does not exist."}}
                )
                return
            self._json(
                200,
                {
                    "id": "chatcmpl-echo",
                    "object": "chat.completion",
                    "created": 0,
                    "model": served,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": json.dumps(body)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                },
            )

        def _json(self, status: int, value: object) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            print(format % args, flush=True)

    http.server.ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
