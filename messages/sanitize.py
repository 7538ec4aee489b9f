"""Mail HTML made safe to show: nh3 (ammonia) plus mail-specific URL and CSS rules.

What a message may not do once sanitized: run script (script tags, event handlers,
javascript: URLs, SVG, CSS expressions), navigate or submit (meta refresh, forms, iframes),
or tell its sender that it was opened (remote images, unless the reader allows them; CSS
url() never). Inline images (`cid:`) point at the API's attachment download.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from urllib.parse import unquote

import nh3

_TAGS = set(nh3.ALLOWED_TAGS) | {"font", "tfoot", "caption", "center"}
_GENERIC_ATTRIBUTES = {
    "style",
    "title",
    "dir",
    "lang",
    "align",
    "valign",
    "width",
    "height",
    "bgcolor",
    "color",
    "border",
    "cellpadding",
    "cellspacing",
}
_ATTRIBUTES: dict[str, set[str]] = deepcopy(nh3.ALLOWED_ATTRIBUTES)
_ATTRIBUTES["*"] = _GENERIC_ATTRIBUTES
_ATTRIBUTES["font"] = {"face", "size"}
_ATTRIBUTES["td"] = _ATTRIBUTES.get("td", set()) | {"nowrap"}
# nh3 checks the scheme of every URL attribute; the filter below then narrows per attribute.
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid", "data"}
_LINK_SCHEMES = ("http:", "https:", "mailto:", "tel:")
_SAFE_DATA_IMAGE = re.compile(
    r"data:image/(?:png|gif|jpeg|jpg|webp|bmp);base64,[a-z0-9+/=\s]*", re.IGNORECASE
)

_CSS_COMMENT = re.compile(r"/\*.*?(?:\*/|$)", re.DOTALL)
_CSS_PROPERTY = re.compile(r"-?[a-z][a-z-]*")
_CSS_COLOR_FUNCTION = re.compile(r"\b(?:rgba?|hsla?)\(\s*[\d.%\s,/]*\)", re.IGNORECASE)
# No parentheses (url(), expression(), var()...), no escapes, no @, no colons, no angle brackets.
_CSS_SAFE_VALUE = re.compile(r"[#%\w\s.,'\"!/+-]*")
# Properties that let a message cover the reader's interface or bind behaviour.
_CSS_BLOCKED = {"position", "behavior", "-moz-binding", "z-index", "content"}


@dataclass
class SanitizedHtml:
    html: str
    remote_images_blocked: int = 0


def sanitize_mail_html(
    html: str, *, cid_urls: Mapping[str, str] | None = None, allow_remote_images: bool = False
) -> SanitizedHtml:
    """Sanitize a message's HTML.

    `cid_urls` maps Content-IDs (without <>) to the URL an inline image is served at; an
    image whose Content-ID is unknown loses its src. Remote (http/https) images lose theirs
    unless `allow_remote_images`; the result counts how many did.
    """
    if not html:
        return SanitizedHtml(html="")
    cids = {_normal_cid(key): url for key, url in (cid_urls or {}).items()}
    blocked = 0

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if attribute == "style":
            return clean_style(value)
        lowered = value.strip().lower()
        if tag == "img" and attribute == "src":
            if lowered.startswith("cid:"):
                return cids.get(_normal_cid(value.strip()[4:]))
            if lowered.startswith("data:"):
                return value if _SAFE_DATA_IMAGE.fullmatch(value.strip()) else None
            if lowered.startswith(("http:", "https:")):
                if allow_remote_images:
                    return value
                blocked += 1
                return None
            return None
        if attribute == "href":
            return value if lowered.startswith(_LINK_SCHEMES) else None
        if lowered.startswith(("cid:", "data:")):
            return None
        return value

    cleaned = nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags={"script", "style", "title", "noscript", "template"},
        attributes=_ATTRIBUTES,
        attribute_filter=attribute_filter,
        url_schemes=_URL_SCHEMES,
        # Relative URLs mean nothing in mail, and "//host/pixel.gif" is a remote image.
        url_relative="deny",
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return SanitizedHtml(html=cleaned, remote_images_blocked=blocked)


def clean_style(value: str) -> str | None:
    """Keep only declarations whose value is plain (lengths, colours, names, keywords)."""
    value = _CSS_COMMENT.sub("", value)
    if "\\" in value:  # CSS escapes can spell anything, e.g. expr\65ssion
        return None
    kept = []
    for declaration in value.split(";"):
        name, colon, raw_value = declaration.partition(":")
        name = name.strip().lower()
        raw_value = raw_value.strip()
        if not colon or not raw_value or not _CSS_PROPERTY.fullmatch(name):
            continue
        if name in _CSS_BLOCKED:
            continue
        if not _CSS_SAFE_VALUE.fullmatch(_CSS_COLOR_FUNCTION.sub("0", raw_value)):
            continue
        kept.append(f"{name}: {raw_value}")
    return "; ".join(kept) or None


def _normal_cid(value: str) -> str:
    return unquote(value).strip().strip("<>").lower()
