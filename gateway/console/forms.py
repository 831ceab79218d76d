"""Reading the console's forms: urlencoded only, bounded in fields and size."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

from regate.errors import BadRequest, UnsupportedMediaType

MAX_FIELDS = 200
MAX_FIELD_BYTES = 64 * 1024  # the dry-run input is the largest field
MAX_REASON_CHARS = 1000


async def read_form(request: Request) -> FormData:
    """The posted form (cached on the request, so the CSRF guard and the handler share it)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("the console's forms are sent urlencoded; reload the page")
    try:
        return await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except HTTPException as exc:  # starlette's own refusal of a too-large form
        raise BadRequest(f"the form was refused: {exc.detail}") from exc


def text_field(form: FormData, name: str, *, max_chars: int = MAX_REASON_CHARS) -> str:
    """One text field, stripped; absent counts as empty."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be text")
    value = value.strip()
    if len(value) > max_chars:
        raise BadRequest(f"{name!r} is over {max_chars} characters; shorten it")
    return value
