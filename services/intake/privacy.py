"""Recognising personal data: NHS numbers, e-mail addresses, phone numbers, postcodes, dates."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

_NHS_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)


def nhs_number_valid(text: str) -> bool:
    """True for ten digits (spaces or hyphens allowed) whose modulus-11 check digit holds."""
    digits = re.sub(r"[ -]", "", text)
    if not re.fullmatch(r"\d{10}", digits):
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], _NHS_WEIGHTS, strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def _real_date(year: int, month: int, day: int) -> bool:
    if not 1900 <= year <= 2100:
        return False
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


_DATE_FORMS = (
    # year first: 2009-04-13, 2009/04/13, 2009.04.13, 20090413
    (re.compile(r"(\d{4})[-/.]?(\d{1,2})[-/.]?(\d{1,2})"), (0, 1, 2)),
    # day first: 13-04-2009, 13/04/2009, 13.04.2009, 13042009
    (re.compile(r"(\d{1,2})[-/.]?(\d{1,2})[-/.]?(\d{4})"), (2, 1, 0)),
)


def reads_as_date(text: str) -> bool:
    """True when the whole text is a calendar date in a common numeric form."""
    for pattern, (y, m, d) in _DATE_FORMS:
        match = pattern.fullmatch(text.strip())
        if match:
            parts = [int(p) for p in match.groups()]
            # Undelimited forms must be exactly eight digits, or "C07"-like refs would match.
            if text.isdigit() and len(text) != 8:
                continue
            if _real_date(parts[y], parts[m], parts[d]):
                return True
    return False


def identifier_problem(ref: str) -> str | None:
    """Why a case reference looks like personal data, or None when it does not."""
    if "@" in ref:
        return "case.ref contains '@' and reads as an e-mail address"
    if nhs_number_valid(ref):
        return "case.ref is a valid NHS number"
    if reads_as_date(ref):
        return "case.ref reads as a date (a date of birth must never be a case reference)"
    return None


_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NHS_CANDIDATE = re.compile(r"(?<![\d])(\d{3}[ -]?\d{3}[ -]?\d{4})(?![\d])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+44\s?\(?0?\)?\s?|\(?0)\d{2,4}\)?[\s-]?\d{3,4}[\s-]?\d{3,4}(?!\d)"
)
_POSTCODE = re.compile(
    r"\b(?:GIR ?0AA|[A-PR-UWYZ](?:\d[A-HJKPSTUW\d]?|[A-HK-Y]\d[ABEHMNPRV-Y\d]?)"
    r" ?\d[ABD-HJLNP-UW-Z]{2})\b",
    re.IGNORECASE,
)
_NUMERIC_DATE = re.compile(
    r"(?<![\d])(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?![\d])"
)
_WORDED_DATE = re.compile(
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTHS}\.?,?\s+\d{{4}}|{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})\b",
    re.IGNORECASE,
)


def redact(note: str) -> tuple[str, tuple[str, ...]]:
    """The note with personal data replaced by `[redacted:<kind>]`, and the kinds found."""
    kinds: list[str] = []

    def sub(
        pattern: re.Pattern[str], kind: str, text: str, only: Callable[[str], bool] | None = None
    ) -> str:
        def replace(match: re.Match[str]) -> str:
            if only is not None and not only(match.group(0)):
                return match.group(0)
            kinds.append(kind)
            return f"[redacted:{kind}]"

        return pattern.sub(replace, text)

    text = sub(_EMAIL, "email", note)
    text = sub(_NHS_CANDIDATE, "nhs_number", text, only=nhs_number_valid)
    text = sub(_WORDED_DATE, "date", text)
    text = sub(_NUMERIC_DATE, "date", text)
    text = sub(_PHONE, "phone", text)
    text = sub(_POSTCODE, "postcode", text)
    return text, tuple(dict.fromkeys(kinds))
