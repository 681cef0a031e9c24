"""Every error the API answers, in OpenAI's shape: {"error": {"message", "type", "code"}}."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorBody(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """An answer other than success; `type` is OpenAI's error type, `code` a stable machine name."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code}}


def bad_request(message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what}", code="not_found")


# the documented answers of each kind, for the OpenAPI document
def documented(*statuses: int) -> dict:
    reasons = {400: "invalid request", 401: "missing or unknown API key", 404: "no such job (or not this key's)",
               409: "the job is not in a state that allows this", 413: "upload over MURMUR_MAX_BYTES",
               415: "not multipart/form-data or JSON", 429: "too many of this key's jobs queued or running",
               500: "the job failed inside murmur", 503: "the database or broker is unreachable"}
    return {status: {"model": ErrorResponse, "description": reasons[status]} for status in statuses}
