"""Auth request and response bodies."""

from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, EmailStr, Field, StringConstraints

from app.domain.auth import normalise_email
from app.schemas.common import StrictModel


def _valid_once_normalised(address: str) -> str:
    """The address as email-validator returned it, if its stored form (normalise_email, which
    the domain applies) is valid too: NFKC can turn look-alike characters into ones that break
    an address (a full-width at sign becomes "@")."""
    try:
        validate_email(normalise_email(address), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"The email address is not valid once normalised: {exc}") from None
    return address


# An e-mail address checked by email-validator, as typed and in its stored form.
Email = Annotated[EmailStr, AfterValidator(_valid_once_normalised)]
# Passwords are taken exactly as typed: StrictModel strips strings, never these. The policy
# (length, e-mail, common passwords; 422 weak_password) applies to new passwords only, in the
# domain; the bound keeps a body from making the server hash megabytes.
NewPassword = Annotated[str, StringConstraints(strip_whitespace=False, max_length=1024)]
# Login takes any stored password, never checked against the policy.
Password = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1, max_length=1024)]


class RegisterIn(StrictModel):
    email: Email
    password: NewPassword
    full_name: str = Field(min_length=1, max_length=200)


class LoginIn(StrictModel):
    email: Email
    password: Password


class ForgotPasswordIn(StrictModel):
    email: Email


class UserOut(BaseModel):
    id: int
    email: str
    full_name: str
    role: Literal["candidate", "admin"]


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    user: UserOut


class ResetPasswordIn(StrictModel):
    token: str = Field(min_length=10, max_length=2048)
    new_password: NewPassword
