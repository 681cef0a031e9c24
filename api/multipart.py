"""A multipart/form-data body read as it arrives: the file part goes straight to disk.

Starlette's own form parsing spools a file before the handler sees it, so
a size limit could only be checked after the whole upload had been taken in;
here MURMUR_MAX_BYTES stops the upload at the first byte over it (413).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from murmur.api.errors import ApiError, bad_request

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 64
MAX_FORM_OVERHEAD = 1024 * 1024  # what a form may hold beside its file (fields, boundaries, headers)


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    file: Path | None = None  # where the `file` part was written
    filename: str | None = None
    size: int = 0

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None


async def read_form(content_type: str, body: AsyncIterator[bytes], open_file: Callable[[str | None], Path],
                    max_bytes: int) -> Form:
    """Parse the body; the part named `file` is written to the path `open_file(its filename)` returns.

    On any error the partial file is removed before the error is raised.
    """
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "send the audio as multipart/form-data with a `file` part", code="unsupported_media_type")
    reader = _Reader(open_file, max_bytes)
    parser = MultipartParser(params[b"boundary"], reader.callbacks())
    try:
        async for chunk in body:
            parser.write(chunk)
            if reader.error:
                raise reader.error
        parser.finalize()
        if reader.error:
            raise reader.error
    except ApiError:
        reader.discard()
        raise
    except Exception as exc:  # python-multipart's parse errors, a client that went away
        reader.discard()
        raise bad_request(f"malformed multipart body: {exc}", "malformed_body") from None
    finally:
        reader.close()
    return reader.form


class _Reader:
    def __init__(self, open_file: Callable[[str | None], Path], max_bytes: int) -> None:
        self.form = Form()
        self.error: ApiError | None = None
        self._open_file = open_file
        self._max_bytes = max_bytes
        self._header = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._data = bytearray()
        self._out: BinaryIO | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._field, "on_header_value": self._header_value,
                "on_header_end": self._header_end, "on_headers_finished": self._headers_done,
                "on_part_data": self._part_data, "on_part_end": self._part_end}

    def _begin(self) -> None:
        self._headers, self._name, self._data = {}, None, bytearray()

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header.strip().lower()] = self._value.strip()
        self._header, self._value = b"", b""

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file" and not self.error:
            if self.form.file is not None:
                self.error = bad_request("send one `file` part", "duplicate_file")
                return
            filename = params.get(b"filename")
            self.form.filename = filename.decode("utf-8", "replace") if filename is not None else None
            self.form.file = self._open_file(self.form.filename)
            # readable by this server's user alone: the audio is its tenant's
            self._out = os.fdopen(os.open(self.form.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        elif sum(len(v) for v in self.form.fields.values()) >= MAX_FIELDS:
            self.error = bad_request(f"more than {MAX_FIELDS} form fields", "too_many_fields")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error:
            return
        if self._out is not None:
            self.form.size += end - start
            if self.form.size > self._max_bytes:
                self.error = ApiError(413, f"the upload is larger than MURMUR_MAX_BYTES ({self._max_bytes} bytes)",
                                      code="file_too_large")
                return
            self._out.write(memoryview(data)[start:end])
        else:
            self._data += data[start:end]
            if len(self._data) > MAX_FIELD_BYTES:
                self.error = bad_request(f"the form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes", "field_too_long")

    def _part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        elif self._name and not self.error:
            try:
                self.form.fields.setdefault(self._name, []).append(bytes(self._data).decode("utf-8"))
            except UnicodeDecodeError:
                self.error = bad_request(f"the form field {self._name!r} is not UTF-8 text", "invalid_value")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def discard(self) -> None:
        self.close()
        if self.form.file is not None:
            self.form.file.unlink(missing_ok=True)
