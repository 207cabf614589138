"""What a use case refuses, as the HTTP edge answers it: one class per answer (status and code)."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"

    def __init__(self, message: str, current_status: str | None = None):
        super().__init__(message)
        self.current_status = current_status


class Unprocessable(ServiceError):
    """The request is well-formed but its content cannot be accepted (422); `details` go into the answer."""

    status = 422
    code = "validation_error"

    def __init__(self, message: str, field: str | None = None, code: str | None = None,
                 details: dict | None = None):
        super().__init__(message, field)
        if code:
            self.code = code
        self.details = details or {}


class ImportInProgress(ServiceError):
    status = 409
    code = "import_in_progress"


class TooManyRows(ServiceError):
    """More rows than one request may take (a clone picking too many recipients)."""

    status = 413
    code = "too_many_rows"
