"""An upstream that answers with exact bytes, for what well-behaved servers never send: answers
split byte by byte, chunk extensions and trailers, interim answers, broken framing, connections
dropped while kept alive."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Script:
    pieces: list[bytes]  # written one by one, with `pause` seconds between them
    pause: float = 0.0
    close_after: bool = False  # close the connection once answered
    close_after_seconds: float | None = None  # or close it after this long, kept alive till then


class ScriptedUpstream:
    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.connections = 0
        self.requests: list[bytes] = []  # each request's head
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopped = False

    def forget(self) -> None:
        """Forgets the requests and connections so far (the proxy's start-up questions, say)."""
        self.requests.clear()
        self.connections = 0

    def start(self) -> ScriptedUpstream:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        data = connection.recv(65536)
                    except ConnectionResetError:  # the proxy dropped a connection it could not trust
                        return
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(buffer) < length:
                    buffer += connection.recv(65536)
                buffer = buffer[length:]
                self.requests.append(head)
                path = head.split(b" ")[1].decode()
                script = self.scripts.get(path, Script([b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]))
                for index, piece in enumerate(script.pieces):
                    if index and script.pause:
                        time.sleep(script.pause)
                    connection.sendall(piece)
                if script.close_after:
                    return
                if script.close_after_seconds is not None:
                    connection.settimeout(script.close_after_seconds)
                    try:
                        buffer += connection.recv(65536)
                    except TimeoutError:
                        return
