"""Client errors: each names the problem, carries its HTTP status and a metric `reason`."""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar

from bentoml.exceptions import InvalidArgument
from starlette.responses import JSONResponse


class InputRejected(InvalidArgument):
    """A request the service refuses; BentoML itself maps it to `error_code` (never a 5xx)."""

    reason: ClassVar[str] = "invalid_input"
    headers: ClassVar[dict[str, str]] = {}

    def to_response(self) -> JSONResponse:
        body = {"error": str(self), "reason": self.reason}
        return JSONResponse(body, status_code=self.error_code, headers=self.headers)


class EmptyImage(InputRejected):
    reason = "empty_file"


class NotAnImage(InputRejected):
    reason = "not_an_image"


class CorruptImage(InputRejected):
    reason = "corrupt_image"


class UnsupportedImageMode(InputRejected):
    reason = "unsupported_mode"


class TooManyPixels(InputRejected):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    reason = "too_many_pixels"


class NoImages(InputRejected):
    reason = "no_images"


class TooManyImages(InputRejected):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    reason = "too_many_images"


class InvalidBase64(InputRejected):
    reason = "invalid_base64"


class NotAFile(InputRejected):
    """A plain string where a file upload was expected (BentoML would fetch it as a URL)."""

    reason = "not_a_file"


class UnexpectedField(InputRejected):
    reason = "unexpected_field"


class MalformedRequest(InputRejected):
    reason = "malformed_request"


class BodyTooLarge(InputRejected):
    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    reason = "body_too_large"


class UnsupportedMediaType(InputRejected):
    error_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    reason = "unsupported_media_type"


class ModelNotLoaded(InputRejected):
    """Answered as a 503 by our own handler: BentoML hides the message of any 5xx it raises."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE
    reason = "model_not_loaded"


class Overloaded(InputRejected):
    """An image waited in the queue longer than the model's max latency."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE
    reason = "overloaded"
    headers = {"Retry-After": "1"}


class TooBusy(InputRejected):
    """The model's queue already holds its bound of images: refused at once, before any work."""

    error_code = HTTPStatus.TOO_MANY_REQUESTS
    reason = "too_busy"
    headers = {"Retry-After": "1"}


class ShuttingDown(InputRejected):
    """The worker received SIGTERM: it answers the requests it already has, and no new ones."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE
    reason = "shutting_down"
    headers = {"Retry-After": "1", "Connection": "close"}


class UnknownModel(InputRejected):
    error_code = HTTPStatus.NOT_FOUND
    reason = "unknown_model"


class InvalidTensor(InputRejected):
    """An Open Inference Protocol tensor with the wrong name, datatype, shape or data."""

    reason = "invalid_tensor"


class UnknownRoute(InputRejected):
    error_code = HTTPStatus.NOT_FOUND
    reason = "unknown_route"


class MethodNotAllowed(InputRejected):
    error_code = HTTPStatus.METHOD_NOT_ALLOWED
    reason = "method_not_allowed"


class Unauthorized(InputRejected):
    """No valid bearer token (auth.py): the answer tells no more than that."""

    error_code = HTTPStatus.UNAUTHORIZED
    reason = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class MoreThanOneImage(InputRejected):
    """An explanation takes exactly one image."""

    reason = "more_than_one_image"


class UnknownTarget(InputRejected):
    error_code = HTTPStatus.UNPROCESSABLE_ENTITY
    reason = "unknown_target"


class UnknownLayer(InputRejected):
    error_code = HTTPStatus.UNPROCESSABLE_ENTITY
    reason = "unknown_layer"


class NotExplainable(InputRejected):
    """A model without a convolutional feature map for Grad-CAM (a vision transformer)."""

    error_code = HTTPStatus.UNPROCESSABLE_ENTITY
    reason = "not_explainable"
